package dashboard_test

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/metask/caddy-ai-gateway/management"
)

// eval runs a script in the page and returns its value.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	return get(b, chromedp.Evaluate[T](js))
}

// waitFor polls a script until it is true.
func (b *browser) waitFor(js string) {
	b.t.Helper()
	b.run(chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(15*time.Second)))
}

// waitAfterFocus tells the page it got the focus back (as a user switching
// back to its tab does) every 300 ms until the script is true.
func (b *browser) waitAfterFocus(js string) {
	b.t.Helper()
	b.run(chromedp.Poll[chromedp.Void](`(window.dispatchEvent(new Event('focus')), `+js+`)`,
		chromedp.WithPollingTimeout(15*time.Second), chromedp.WithPollingInterval(300*time.Millisecond)))
}

// cancelLoginPrompts answers the browser's login prompt (shown on a 401
// with WWW-Authenticate) with Cancel, as a user who closes it would; the
// page then gets the 401.
func (b *browser) cancelLoginPrompts() {
	b.t.Helper()
	b.answerLoginPrompts(&fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseCancelAuth})
}

// rememberLogin answers the browser's login prompt with the user's
// credentials, as a browser that remembers a basic_auth login does for
// requests the page's headers do not reach (downloads).
func (b *browser) rememberLogin(user string) {
	b.t.Helper()
	b.answerLoginPrompts(&fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseProvideCredentials,
		Username: user, Password: password(user)})
}

func (b *browser) answerLoginPrompts(answer *fetch.AuthChallengeResponse) {
	b.t.Helper()
	ctx := b.ctx
	chromedp.Listen(ctx, func(ev any) {
		switch e := ev.(type) {
		case *fetch.EventRequestPaused:
			go chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: e.RequestID})
		case *fetch.EventAuthRequired:
			go chromedp.Call(ctx, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: e.RequestID,
				AuthChallengeResponse: answer})
		}
	})
	on := true
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{HandleAuthRequests: &on}); err != nil {
		b.t.Fatalf("enabling Fetch: %v", err)
	}
}

// block makes the tab's requests to URLs matching the patterns fail.
func (b *browser) block(patterns ...string) {
	b.t.Helper()
	p := network.SetBlockedURLsParams{}
	for _, u := range patterns {
		p.URLPatterns = append(p.URLPatterns, &network.BlockPattern{URLPattern: u, Block: true})
	}
	if _, err := chromedp.Call(b.ctx, network.SetBlockedURLs, p); err != nil {
		b.t.Fatalf("blocking %v: %v", patterns, err)
	}
}

// viewAndTab is the id of the view on screen and the tab marked current,
// as "view|tab" (they must agree).
func (b *browser) viewAndTab() (view, tab string) {
	b.t.Helper()
	v := eval[[]string](b, `[
		(Array.from(document.querySelectorAll('main > section')).find(s => !s.hidden) || {id: ''}).id.replace('view-', ''),
		(document.querySelector('.tabs a[aria-current="page"]') || {dataset: {view: ''}}).dataset.view]`)
	return v[0], v[1]
}

// outsideBoxes lists the visible buttons of sel (and the rows' cards)
// that are not wholly inside the viewport and inside their card.
const outsideBoxes = `(() => {
	const out = [];
	const vw = document.documentElement.clientWidth;
	for (const b of document.querySelectorAll(%q)) {
		const r = b.getBoundingClientRect();
		const card = b.closest('.card, dialog').getBoundingClientRect();
		if (r.width === 0 || r.height === 0) { out.push(b.textContent + ': not shown'); continue; }
		if (r.left < 0 || r.right > vw || r.left < card.left - 0.5 || r.right > card.right + 0.5) {
			out.push(b.textContent + ' at ' + Math.round(r.left) + '..' + Math.round(r.right) + ' (viewport ' + vw + ', card ' + Math.round(card.left) + '..' + Math.round(card.right) + ')');
		}
	}
	return out;
})()`

// TestBrowserLongKeyName: a key name of 128 characters (the most the
// server takes, and the most the field lets you type) wraps: at 1280 px and
// at 390 px every button of every row stays inside the card and the
// viewport, and the page never scrolls sideways, nor does the new-key
// dialog.
func TestBrowserLongKeyName(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("verylongname-", 10)[:128]
	e.g.NewKey("carol", "short")
	b := newBrowser(t, "carol", 1280, 900)
	b.open(e.dashURL())
	if got := eval[string](b, `document.querySelector('#create-name').getAttribute('maxlength')`); got != "128" {
		t.Fatalf("the name field allows %s characters, the server 128", got)
	}
	if got := eval[string](b, `document.querySelector('#edit-name').getAttribute('maxlength')`); got != "128" {
		t.Fatalf("the edit field allows %s characters, the server 128", got)
	}
	// typing more than 128 characters keeps 128
	b.run(
		chromedp.Click(chromedp.CSS(`#create-key`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-create[open] #create-name`)),
		chromedp.SendKeys(chromedp.CSS(`#create-name`), long+"XYZ"),
		chromedp.Click(chromedp.CSS(`#create-submit`)),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-secret[open] #secret-value`)),
	)
	if over := eval[bool](b, `(d => d.scrollWidth > d.clientWidth + 1)(document.querySelector('#dlg-secret'))`); over {
		t.Fatal("the new-key dialog scrolls sideways with a long name")
	}
	if bad := eval[[]string](b, fmt.Sprintf(outsideBoxes, `#dlg-secret button:not([hidden])`)); len(bad) > 0 {
		// the hidden confirmation's buttons are not shown: only check the visible row
		for _, s := range bad {
			if !strings.Contains(s, "not shown") {
				t.Fatalf("the new-key dialog's buttons are outside: %v", bad)
			}
		}
	}
	b.run(chromedp.Click(chromedp.CSS(`#secret-done`)), chromedp.WaitNotVisible(chromedp.CSS(`#dlg-secret`)))
	k := e.keyByName("carol", long)
	if k.Name != long {
		t.Fatalf("stored name %q", k.Name)
	}
	for _, size := range [][2]int64{{1280, 900}, {390, 844}} {
		b.run(chromedp.EmulateViewport(size[0], size[1]))
		b.run(chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`tr[data-key="`+k.ID+`"]`)))
		if bad := eval[[]string](b, fmt.Sprintf(outsideBoxes, `#keys-body button`)); len(bad) > 0 {
			t.Fatalf("at %d px, buttons outside the card or the viewport: %v", size[0], bad)
		}
		if n := eval[int](b, `document.querySelectorAll('#keys-body button').length`); n < 8 {
			t.Fatalf("at %d px only %d row buttons", size[0], n)
		}
		if over := eval[bool](b, `document.documentElement.scrollWidth > document.documentElement.clientWidth`); over {
			t.Fatalf("at %d px the page scrolls sideways", size[0])
		}
		// the whole name is there (wrapped, not clipped)
		if w := eval[bool](b, `(n => n.scrollWidth <= n.getBoundingClientRect().width + 1)(document.querySelector('tr[data-key="`+k.ID+`"] .key-name'))`); !w {
			t.Fatalf("at %d px the name is clipped", size[0])
		}
	}
	b.checkClean()
}

// TestBrowserRestartUnderOpenPage: a page opened before Caddy restarted
// makes its first change without an error and without losing what was
// typed.
func TestBrowserRestartUnderOpenPage(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t, "bob", 1280, 900)
	b.open(e.dashURL())
	b.run(
		chromedp.Click(chromedp.CSS(`#create-key`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-create[open] #create-name`)),
		chromedp.SendKeys(chromedp.CSS(`#create-name`), "typed-before-restart"),
	)
	e.restart()
	b.run(chromedp.Click(chromedp.CSS(`#create-submit`)))
	secret := b.readSecret()
	if got := e.chatStatus(secret); got != 200 {
		t.Fatalf("the key made after the restart: %d", got)
	}
	if s := eval[string](b, `document.querySelector('#error').hidden ? '' : document.querySelector('#error').textContent`); s != "" {
		t.Fatalf("error after the restart: %q", s)
	}
	e.keyByName("team-b", "typed-before-restart")
	b.checkClean()
}

// restart stops Caddy and starts it again with the same config, database
// and storage, as a restart of the process would.
func (e *env) restart() {
	e.t.Helper()
	if err := caddy.Stop(); err != nil {
		e.t.Fatal(err)
	}
	e.g.LoadSite(dashboardSite(e.t, e.g, e.mock.URL, e.AccessLog))
}

// TestCSRFTokenSurvivesRestart: the token of a page loaded before a
// restart is still valid after it (the secret is in Caddy's storage, not
// drawn per process), so even a page that cannot renew its token works.
func TestCSRFTokenSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	c := e.login("bob")
	e.restart()
	c.must("POST", "api/keys", map[string]string{"name": "after-restart"}, 201, nil)
	if c2 := e.login("bob"); c2.token != c.token {
		t.Fatal("the token changed across the restart")
	}
}

// TestBrowserDatabaseUnavailable: when the gateway's database is closed
// under an open page, the next view says the database is unavailable (never
// "no account"), and so does the page when loaded again.
func TestBrowserDatabaseUnavailable(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t, "bob", 1280, 900)
	b.open(e.dashURL())
	st, err := management.RunningStore()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	b.run(chromedp.Click(chromedp.CSS(`#tab-usage`)), chromedp.WaitVisible(chromedp.CSS(`#error`)))
	msg := b.text(`#error`)
	if !strings.Contains(msg, "database is unavailable") || strings.Contains(strings.ToLower(msg), "no account") {
		t.Fatalf("the page says %q", msg)
	}
	if v, tab := b.viewAndTab(); v != "" || tab != "" {
		t.Fatalf("with the database gone the page still shows %q (tab %q)", v, tab)
	}
	b.run(chromedp.Navigate(e.dashURL()), chromedp.WaitVisible(chromedp.CSS(`#notice`)))
	if s := b.text(`main`); !strings.Contains(s, "database is unavailable") || strings.Contains(s, "No account") {
		t.Fatalf("the reloaded page says %q", s)
	}
}

// TestBrowserEscKeepsNewKey: Esc in the new-key dialog asks before the key
// is lost; "Back to the key" keeps it; only "Close, I do not need it"
// closes the dialog and forgets it.
func TestBrowserEscKeepsNewKey(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t, "carol", 1280, 900)
	b.open(e.dashURL())
	b.run(
		chromedp.Click(chromedp.CSS(`#create-key`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-create[open] #create-name`)),
		chromedp.SendKeys(chromedp.CSS(`#create-name`), "esc-key"),
		chromedp.Click(chromedp.CSS(`#create-submit`)),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-secret[open] #secret-value`)),
	)
	secret := b.value(`#secret-value`)
	for i := 0; i < 2; i++ {
		b.run(chromedp.KeyEvent(kb.Escape), chromedp.Sleep(200*time.Millisecond))
		if !eval[bool](b, `document.querySelector('#dlg-secret').open`) {
			t.Fatalf("Esc #%d closed the new-key dialog without asking", i+1)
		}
		b.run(chromedp.WaitVisible(chromedp.CSS(`#secret-confirm`)))
		if b.value(`#secret-value`) != secret {
			t.Fatal("the key left the dialog")
		}
	}
	b.run(chromedp.Click(chromedp.CSS(`#secret-back`)), chromedp.WaitNotVisible(chromedp.CSS(`#secret-confirm`)))
	b.run(chromedp.KeyEvent(kb.Escape), chromedp.WaitVisible(chromedp.CSS(`#secret-confirm`)),
		chromedp.Click(chromedp.CSS(`#secret-discard`)), chromedp.WaitNotVisible(chromedp.CSS(`#dlg-secret`)))
	if b.value(`#secret-value`) != "" {
		t.Fatal("the key stays in the page")
	}
	b.checkClean()
}

// TestBrowserLastUsedRefreshes: the key list shows a use of the key made
// while the page was open, once the page is looked at again (focus), with
// no tab switch.
func TestBrowserLastUsedRefreshes(t *testing.T) {
	e := newEnv(t)
	id, secret := e.g.NewKey("carol", "used-later")
	b := newBrowser(t, "carol", 1280, 900)
	b.open(e.dashURL())
	cell := `tr[data-key="` + id + `"] .last-used`
	if s := b.text(cell); s != "Never" {
		t.Fatalf("last used before any use: %q", s)
	}
	if e.chatStatus(secret) != 200 {
		t.Fatal("the request failed")
	}
	b.waitAfterFocus(`document.querySelector('` + cell + `').textContent === 'Just now'`)
}

// TestBrowserFailedTabSwitch: a view that cannot load leaves the view on
// screen, its tab and the address as they were, with the error shown; the
// next action clears the error.
func TestBrowserFailedTabSwitch(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t, "carol", 1280, 900)
	b.open(e.dashURL())
	b.block(e.dashURL() + "api/usage*")
	b.run(chromedp.Click(chromedp.CSS(`#tab-usage`)), chromedp.WaitVisible(chromedp.CSS(`#error`)))
	if v, tab := b.viewAndTab(); v != "keys" || tab != "keys" {
		t.Fatalf("after the failed switch the page shows %q with tab %q", v, tab)
	}
	if h := eval[string](b, `location.hash`); h != "#keys" {
		t.Fatalf("address %q", h)
	}
	b.block()
	// a new action clears the old error
	b.run(chromedp.Click(chromedp.CSS(`#tab-usage`)), chromedp.WaitVisible(chromedp.CSS(`#view-usage`)))
	if v, tab := b.viewAndTab(); v != "usage" || tab != "usage" {
		t.Fatalf("the page shows %q with tab %q", v, tab)
	}
	if eval[bool](b, `!document.querySelector('#error').hidden`) {
		t.Fatal("the old error stays")
	}
	b.checkClean()
}

// TestBrowserSignedOut: after a password change the next request is
// answered 401, and the page says to sign in again.
func TestBrowserSignedOut(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t, "carol", 1280, 900)
	b.open(e.dashURL())
	b.signIn("carol", "the-old-password")
	b.cancelLoginPrompts()
	b.run(chromedp.Click(chromedp.CSS(`#tab-usage`)), chromedp.WaitVisible(chromedp.CSS(`#error`)))
	if s := b.text(`#error`); !strings.Contains(s, "Reload the page to sign in again") {
		t.Fatalf("the page says %q", s)
	}
}

// TestBrowserErrorsAreSentences: a server error reads as a sentence, an
// amount with a decimal comma is explained before it is sent, and opening
// the dialog again starts without the old error.
func TestBrowserErrorsAreSentences(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t, "alice", 1280, 900)
	b.open(e.dashURL() + "#usage?account=team-b")
	b.run(
		chromedp.Click(chromedp.CSS(`#adjust-balance`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-balance[open]`)),
		chromedp.SendKeys(chromedp.CSS(`#balance-amount`), "10,00"),
		chromedp.Click(chromedp.CSS(`#balance-submit`)),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-balance .form-error`)),
	)
	if s := b.text(`#dlg-balance .form-error`); !strings.Contains(s, "with a dot, for example 10.00") {
		t.Fatalf("decimal comma: %q", s)
	}
	if b.value(`#balance-amount`) != "10,00" {
		t.Fatal("the typed amount was lost")
	}
	b.run(chromedp.SetValue(chromedp.CSS(`#balance-amount`), "1.0000000001"), chromedp.Click(chromedp.CSS(`#balance-submit`)))
	b.waitFor(`!document.querySelector('#dlg-balance .form-error').textContent.includes('comma')`)
	s := b.text(`#dlg-balance .form-error`)
	if s == "" || strings.ToUpper(s[:1]) != s[:1] || !strings.HasSuffix(s, ".") {
		t.Fatalf("the server's error is not shown as a sentence: %q", s)
	}
	b.run(chromedp.Click(chromedp.CSS(`#dlg-balance [data-close]`)),
		chromedp.Click(chromedp.CSS(`#adjust-balance`)), chromedp.WaitVisible(chromedp.CSS(`#dlg-balance[open]`)))
	if eval[bool](b, `!document.querySelector('#dlg-balance .form-error').hidden`) {
		t.Fatal("the old error shows in the new dialog")
	}
	b.checkClean()
}

// contrastJS computes the contrast ratio of two CSS colours (rgb()).
const contrastJS = `function contrast(a, b) {
	const lum = (c) => {
		const v = c.match(/[\d.]+/g).slice(0, 3).map(Number).map((x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
		return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
	};
	const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
	return (x + 0.05) / (y + 0.05);
}`

// TestBrowserPhoneUsage: on a 390 px phone the chart's labels are at least
// 11 px high, the usage page of a month of traffic is short, the header is
// not sticky (or small), headings scrolled to are not under it, and the
// focus ring stands out (3:1) on desktop and phone.
func TestBrowserPhoneUsage(t *testing.T) {
	e := newSeededEnv(t)
	b := newBrowser(t, "carol", 390, 844)
	b.run(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	b.open(e.dashURL() + "#usage")
	b.run(chromedp.WaitReady(chromedp.CSS(`#chart svg .bar`)), chromedp.WaitVisible(chromedp.CSS(`#recent-table`)))
	if h := eval[float64](b, `Math.min(...Array.from(document.querySelectorAll('#chart .tick')).map(t => t.getBoundingClientRect().height))`); h < 11 {
		t.Fatalf("chart labels %.1f px high on a phone", h)
	}
	if h := eval[float64](b, `document.documentElement.scrollHeight`); h > 3000 {
		t.Fatalf("the usage page is %.0f px long on a phone", h)
	} else {
		t.Logf("usage page on a 390 px phone: %.0f px", h)
	}
	if over := eval[bool](b, `document.documentElement.scrollWidth > document.documentElement.clientWidth`); over {
		t.Fatal("the phone layout scrolls sideways")
	}
	pos := eval[string](b, `getComputedStyle(document.querySelector('.topbar')).position`)
	hh := eval[float64](b, `document.querySelector('.topbar').getBoundingClientRect().height`)
	if pos == "sticky" && hh > 64 {
		t.Fatalf("the sticky header takes %.0f px on a phone", hh)
	}
	// desktop: the sticky header does not hide a heading scrolled to
	b.run(chromedp.EmulateViewport(1280, 700))
	b.waitFor(`document.querySelector('#chart svg') && document.querySelector('#chart svg').getAttribute('width') > 600`)
	hidden := eval[float64](b, `(() => {
		const h = document.querySelector('#recent-table').closest('.card').querySelector('h2');
		h.scrollIntoView();
		return document.querySelector('.topbar').getBoundingClientRect().bottom - h.getBoundingClientRect().top;
	})()`)
	if hidden > 0 {
		t.Fatalf("a heading scrolled into view is %.0f px under the sticky header", hidden)
	}
	// the focus ring: Tab to the first tab of the navigation
	b.run(chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Tab))
	ratio := eval[float64](b, `(() => { `+contrastJS+`
		const a = document.activeElement, s = getComputedStyle(a);
		if (s.outlineStyle === 'none' || parseFloat(s.outlineWidth) < 2) return 0;
		return contrast(s.outlineColor, getComputedStyle(document.querySelector('.topbar')).backgroundColor);
	})()`)
	if ratio < 3 || math.IsNaN(ratio) {
		t.Fatalf("focus ring contrast %.2f:1, want at least 3:1", ratio)
	}
	b.checkClean()
}
