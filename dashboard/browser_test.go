package dashboard_test

import (
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath finds a Chromium ($CHROMIUM, else chromium on the PATH).
// Without one the browser tests skip on a developer machine but fail under
// CI=true or AI_GATEWAY_REQUIRE_BROWSER=1 (which ./test.sh sets, after
// installing chromium when it is missing).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" || os.Getenv("AI_GATEWAY_REQUIRE_BROWSER") == "1" {
		t.Fatal("chromium is not installed, and CI=true or AI_GATEWAY_REQUIRE_BROWSER=1: the browser tests must run (./test.sh installs it with apt-get)")
	}
	t.Skip("chromium is not installed; ./test.sh installs it (apt-get install chromium)")
	return ""
}

// browser is one headless Chromium tab signed in to the dashboard as a user
// (an Authorization: Basic header on every request, which is what the
// browser sends after a basic_auth login).
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string // script exceptions and CSP violations
}

// theBrowser is the one Chromium of the test binary: each test opens its
// own tabs in it (starting Chromium takes longer than most tests).
var theBrowser struct {
	once   sync.Once
	ctx    context.Context
	cancel func()
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if theBrowser.cancel != nil {
		theBrowser.cancel()
	}
	os.Exit(code)
}

// sharedBrowser starts Chromium on first use and returns its context.
func sharedBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath(t)
	theBrowser.once.Do(func() {
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(path),
			chromedp.NoSandbox,
			chromedp.Headless,
			chromedp.DisableGPU,
			chromedp.Flag("disable-dev-shm-usage", true),
			chromedp.WindowSize(1280, 900),
		)
		actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancelCtx := chromedp.NewContext(actx)
		theBrowser.ctx = ctx
		theBrowser.cancel = func() { cancelCtx(); cancelAlloc() }
		// start the browser now, with a context that does not end
		theBrowser.err = chromedp.Do(ctx)
	})
	if theBrowser.err != nil {
		t.Fatalf("starting chromium: %v", theBrowser.err)
	}
	return theBrowser.ctx
}

// newBrowser opens a tab of the shared Chromium with a window of width x
// height, signed in as user.
func newBrowser(t *testing.T, user string, width, height int) *browser {
	t.Helper()
	tab, cancelTab := chromedp.NewContext(sharedBrowser(t))
	// this bounds the whole browser part of the test
	ctx, cancelTimeout := context.WithTimeout(tab, 120*time.Second)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
	})
	b := &browser{t: t, ctx: ctx}
	err := chromedp.Listen(ctx, func(ev any) {
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg := e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
			b.problem("exception: " + msg)
		case *cdplog.EventEntryAdded:
			if e.Entry.Source == cdplog.EntrySourceSecurity || strings.Contains(e.Entry.Text, "Content Security Policy") {
				b.problem("security: " + e.Entry.Text)
			}
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				b.problem("console.error")
			}
		}
	})
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	b.signIn(user, password(user))
	b.run(chromedp.EmulateViewport(int64(width), int64(height)))
	return b
}

// signIn makes the tab send Basic credentials with every request.
func (b *browser) signIn(user, pw string) {
	b.t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pw))
	if _, err := chromedp.Call(b.ctx, network.SetExtraHTTPHeaders,
		network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": "Basic " + auth}}); err != nil {
		b.t.Fatalf("setting the Authorization header: %v", err)
	}
}

func (b *browser) problem(s string) {
	b.mu.Lock()
	b.problems = append(b.problems, s)
	b.mu.Unlock()
}

// checkClean fails the test on any script exception or CSP violation seen.
func (b *browser) checkClean() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) > 0 {
		b.t.Fatalf("the page had problems: %s", strings.Join(b.problems, "; "))
	}
}

func (b *browser) run(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v (problems so far: %v)", err, b.problems)
	}
}

// stepTimeout bounds one step of a browser test.
const stepTimeout = 20 * time.Second

// get runs an action that returns a value.
func get[T any](b *browser, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("browser: %v (problems so far: %v)", err, b.problems)
	}
	return v
}

// open loads the dashboard and waits until the first view is drawn.
func (b *browser) open(url string) {
	b.t.Helper()
	b.run(chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`body[data-ready]`)))
}

// text waits until sel is shown and reads its text in one step in the page
// (the key list redraws itself while the page is looked at, so a node
// found first and read later may be gone).
func (b *browser) text(sel string) string {
	b.t.Helper()
	q := `document.querySelector(` + strconv.Quote(sel) + `)`
	b.run(chromedp.Poll[chromedp.Void](`(e => !!e && e.getClientRects().length > 0)(`+q+`)`, chromedp.WithPollingTimeout(stepTimeout)))
	return get(b, chromedp.Evaluate[string](`(e => e ? e.innerText : '')(`+q+`)`))
}

func (b *browser) value(sel string) string {
	b.t.Helper()
	return get(b, chromedp.Value(chromedp.CSS(sel)))
}

// createKey creates a key through the UI and returns the plaintext read
// from the dialog, after checking the dialog's warning and focus, and
// closes the dialog.
func (b *browser) createKey(name string) string {
	b.t.Helper()
	b.run(
		chromedp.Click(chromedp.CSS(`#create-key`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-create[open] #create-name`)),
	)
	focused := get(b, chromedp.Evaluate[string](`document.activeElement.id`))
	if focused != "create-name" {
		b.t.Fatalf("the create dialog put the focus on %q, want the name field", focused)
	}
	b.run(
		chromedp.SendKeys(chromedp.CSS(`#create-name`), name),
		chromedp.Click(chromedp.CSS(`#create-submit`)),
	)
	return b.readSecret()
}

// readSecret reads the key shown in the new-key dialog and closes it.
func (b *browser) readSecret() string {
	b.t.Helper()
	b.run(chromedp.WaitVisible(chromedp.CSS(`#dlg-secret[open] #secret-value`)))
	secret := b.value(`#secret-value`)
	if !strings.HasPrefix(secret, "sk-") || len(secret) < 46 {
		b.t.Fatalf("the dialog shows %q, not a key", secret)
	}
	if w := b.text(`#dlg-secret-warning`); !strings.Contains(w, "will not be shown again") {
		b.t.Fatalf("the new-key dialog does not warn that the key is shown once: %q", w)
	}
	focused := get(b, chromedp.Evaluate[string](`document.activeElement.id`))
	if focused != "secret-copy" && focused != "secret-value" {
		b.t.Fatalf("focus is on %q, not in the new-key dialog", focused)
	}
	b.run(
		chromedp.Click(chromedp.CSS(`#secret-done`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#dlg-secret`)),
	)
	if b.value(`#secret-value`) != "" {
		b.t.Fatal("the key stays in the page after the dialog was closed")
	}
	return secret
}

// TestBrowserCreateUseDeleteKey: bob logs in through basic_auth, creates a
// key in the UI, reads it from the dialog, calls the gateway with it (200),
// deletes it in the UI after a confirmation that warns running
// applications stop at once, and calls again (401). The key is never in
// the page after a reload, in a URL, in the logs or in the database files,
// and the page runs without a script error or CSP violation.
func TestBrowserCreateUseDeleteKey(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t, "bob", 1280, 900)
	b.open(e.dashURL())

	if s := b.text(`#keys-empty`); !strings.Contains(s, "No API keys yet") {
		t.Fatalf("empty state: %q", s)
	}
	secret := b.createKey("browser-key")
	if got := e.chatStatus(secret); got != 200 {
		t.Fatalf("the key from the dialog: %d, want 200", got)
	}
	k := e.keyByName("team-b", "browser-key")
	row := `tr[data-key="` + k.ID + `"]`
	if s := b.text(row); !strings.Contains(s, "browser-key") || !strings.Contains(s, k.Hint) {
		t.Fatalf("the key's row shows %q", s)
	}

	// a later page load never shows the key
	b.open(e.dashURL())
	b.run(chromedp.WaitVisible(chromedp.CSS(row)))
	html := get(b, chromedp.OuterHTML(chromedp.CSS(`html`)))
	if strings.Contains(html, secret) || strings.Contains(html, secret[3:]) {
		t.Fatal("the key is in the page after a reload")
	}
	hist, err := chromedp.Call(b.ctx, page.GetNavigationHistory, cdp.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	urls := get(b, chromedp.Evaluate[[]string](`performance.getEntriesByType('resource').map(e => e.name)`))
	for _, h := range hist.Entries {
		urls = append(urls, h.URL)
	}
	for _, u := range urls {
		if strings.Contains(u, secret[3:]) {
			t.Fatalf("the key is in a URL: %s", u)
		}
	}

	// delete, with the confirmation
	b.run(
		chromedp.Click(chromedp.CSS(row+` button[data-action="delete"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-delete[open]`)),
	)
	if s := b.text(`#dlg-delete-text`); !strings.Contains(s, "running applications using this key will stop working immediately") {
		t.Fatalf("the delete confirmation says %q", s)
	}
	b.run(
		chromedp.Click(chromedp.CSS(`#delete-submit`)),
		chromedp.WaitNotPresent(chromedp.CSS(row)),
		chromedp.WaitVisible(chromedp.CSS(`#keys-empty`)),
	)
	if got := e.chatStatus(secret); got != 401 {
		t.Fatalf("the deleted key: %d, want 401", got)
	}
	if len(e.adminKeys("team-b")) != 0 {
		t.Fatal("the key is still live in the store")
	}
	b.checkClean()

	// the plaintext is in no log and no database file
	// a clean stop flushes the store and merges the WAL
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	assertNoSecrets(t, []string{
		filepath.Join(e.g.Dir, "caddy.log"), e.AccessLog,
		e.g.DBPath, e.g.DBPath + "-wal", e.g.DBPath + "-shm",
	}, []string{secret})
	if fi, err := os.Stat(e.AccessLog); err != nil || fi.Size() == 0 {
		t.Fatalf("the access log is empty (%v): the scan looked at nothing", err)
	}
}

// TestBrowserRotateKey: rotating in the UI without grace gives a new key
// (200) and the old one is refused at once (401); with a grace period both
// work. The rename dialog renames.
func TestBrowserRotateKey(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t, "carol", 1280, 900)
	b.open(e.dashURL())

	old := b.createKey("rotate-me")
	k := e.keyByName("carol", "rotate-me")
	row := `tr[data-key="` + k.ID + `"]`
	b.run(
		chromedp.Click(chromedp.CSS(row+` button[data-action="rotate"]`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-rotate[open]`)),
		chromedp.Click(chromedp.CSS(`#rotate-submit`)),
	)
	fresh := b.readSecret()
	if fresh == old {
		t.Fatal("rotation showed the old key")
	}
	if got := e.chatStatus(old); got != 401 {
		t.Fatalf("old key after rotation without grace: %d, want 401", got)
	}
	if got := e.chatStatus(fresh); got != 200 {
		t.Fatalf("new key: %d, want 200", got)
	}
	nk := e.keyByName("carol", "rotate-me")
	b.run(chromedp.WaitNotPresent(chromedp.CSS(row)))
	row = `tr[data-key="` + nk.ID + `"]`

	// with a grace period the old key keeps working
	b.run(
		chromedp.Click(chromedp.CSS(row+` button[data-action="rotate"]`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-rotate[open]`)),
	)
	get(b, chromedp.Evaluate[string](`document.querySelector('#rotate-grace').value = '1h'`))
	b.run(chromedp.Click(chromedp.CSS(`#rotate-submit`)))
	third := b.readSecret()
	if e.chatStatus(fresh) != 200 || e.chatStatus(third) != 200 {
		t.Fatal("after rotation with grace both keys must work")
	}
	b.run(chromedp.WaitVisible(chromedp.CSS(row + ` .badge`)))
	rotated := b.text(row)
	if !strings.Contains(rotated, "Rotated") {
		t.Fatalf("the old key's row does not say it was rotated: %q", rotated)
	}

	// rename
	b.run(
		chromedp.Click(chromedp.CSS(row+` button[data-action="edit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-edit[open]`)),
	)
	get(b, chromedp.Evaluate[string](`document.querySelector('#edit-name').value = ''`))
	b.run(
		chromedp.SendKeys(chromedp.CSS(`#edit-name`), "renamed-key"),
		chromedp.Click(chromedp.CSS(`#edit-submit`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#dlg-edit`)),
	)
	if got := e.keyByName("carol", "renamed-key"); got.ID != nk.ID {
		t.Fatalf("renamed %s, want %s", got.ID, nk.ID)
	}
	b.checkClean()
}

// TestBrowserUsageAndAdmin: alice (admin) switches to an account, tops it
// up in the UI, sees the balance and, after a request, the spend chart and
// the breakdowns; the phone layout shows the same page without sideways
// scrolling.
func TestBrowserUsageAndAdmin(t *testing.T) {
	e := newEnv(t)
	_, secret := e.g.NewKey("team-b", "worker")
	if e.chatStatus(secret) != 200 {
		t.Fatal("seed request failed")
	}
	b := newBrowser(t, "alice", 1280, 900)
	b.open(e.dashURL() + "#usage?account=team-b")
	b.run(chromedp.WaitReady(chromedp.CSS(`#chart svg .bar`)))
	if s := b.text(`#stat-requests`); s != "1" {
		t.Fatalf("requests shown: %q", s)
	}
	if s := b.text(`#models-body`); !strings.Contains(s, "mock-model") {
		t.Fatalf("by model: %q", s)
	}
	if s := b.text(`#bykey-body`); !strings.Contains(s, "worker") {
		t.Fatalf("by key: %q", s)
	}
	if s := b.text(`#recent-body`); !strings.Contains(s, "Top-up") || !strings.Contains(s, "mock-model") {
		t.Fatalf("recent activity: %q", s)
	}

	// top up through the dialog
	b.run(
		chromedp.Click(chromedp.CSS(`#adjust-balance`)),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-balance[open]`)),
		chromedp.SendKeys(chromedp.CSS(`#balance-amount`), "5.5"),
		chromedp.SendKeys(chromedp.CSS(`#balance-note`), "invoice 9"),
		chromedp.Click(chromedp.CSS(`#balance-submit`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#dlg-balance`)),
		chromedp.Poll[chromedp.Void](`document.querySelector('#recent-body').textContent.includes('invoice 9')`, chromedp.WithPollingTimeout(10*time.Second)),
	)
	var acct struct {
		BalanceNano int64 `json:"balance_nano"`
	}
	e.g.MustAdmin("GET", "/ai-gateway/accounts/team-b", nil, 200, &acct)
	if acct.BalanceNano <= 15_000_000_000 || acct.BalanceNano >= 15_500_000_000 {
		t.Fatalf("balance after the UI top-up: %d nano", acct.BalanceNano)
	}

	// switch account with the selector
	b.run(
		chromedp.SetValue(chromedp.CSS(`#account-select`), "carol"),
	)
	get(b, chromedp.Evaluate[bool](`document.querySelector('#account-select').dispatchEvent(new Event('change'))`))
	b.run(
		chromedp.Poll[chromedp.Void](`location.hash === '#usage?account=carol'`, chromedp.WithPollingTimeout(10*time.Second)),
		chromedp.WaitVisible(chromedp.CSS(`#chart-empty`)),
	)

	// phone: no horizontal overflow
	b.run(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(e.dashURL()+"#usage?account=team-b"),
		chromedp.WaitReady(chromedp.CSS(`#chart svg .bar`)))
	if get(b, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`)) {
		t.Fatal("the phone layout scrolls sideways")
	}
	b.checkClean()
}
