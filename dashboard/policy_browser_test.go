package dashboard_test

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// chat sends one chat completion with the key through the OpenAI SDK, the
// mock provider reporting usage ("prompt,completion"), and returns the
// status and the error code of a refusal.
// setValue sets the value of a form field (empty too, which
// chromedp.SetValue refuses).
func (b *browser) setValue(sel, v string) {
	b.t.Helper()
	eval[bool](b, `(f => { f.value = `+strconv.Quote(v)+`; f.dispatchEvent(new Event('input', {bubbles: true})); return true })(document.querySelector(`+strconv.Quote(sel)+`))`)
}

func (e *env) chat(key, usage string) (int, string) {
	e.t.Helper()
	c := e.openAIClient(key)
	_, err := c.Chat.Completions.New(e.t.Context(), openai.ChatCompletionNewParams{
		Model:    "mock-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
	}, option.WithHeader(gwtest.HeaderUsage, usage))
	if err == nil {
		return http.StatusOK, ""
	}
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		e.t.Fatalf("calling the gateway: %v", err)
	}
	return apiErr.StatusCode, apiErr.Code
}

// TestBrowserSpendLimitAtCreation: bob creates a key with a daily spend
// limit and a model list in the dialog; the list shows both; the SDK's
// first request is served, the next one refused (403 key_limit_exceeded);
// the list then shows what was spent, equal to the ledger.
func TestBrowserSpendLimitAtCreation(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t, "bob", 1280, 900)
	b.open(e.dashURL())
	b.run(
		chromedp.Click(chromedp.CSS(`#create-key`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-create[open] #create-name`)),
		chromedp.SendKeys(chromedp.CSS(`#create-name`), "capped"),
		chromedp.Click(chromedp.CSS(`#dlg-create details.limits summary`)),
		chromedp.SendKeys(chromedp.CSS(`#create-models`), "mock-*"),
		chromedp.SendKeys(chromedp.CSS(`#create-limit`), "0.02"),
		chromedp.SetValue(chromedp.CSS(`#create-period`), "day"),
		chromedp.Click(chromedp.CSS(`#create-submit`)),
	)
	secret := b.readSecret()
	k := e.keyByName("team-b", "capped")
	row := `tr[data-key="` + k.ID + `"]`
	if s := b.text(row + ` [data-policy="spend"]`); !strings.Contains(s, "0.02 USD per day") {
		t.Fatalf("the spend limit shows as %q", s)
	}
	if s := b.text(row + ` [data-policy="models"]`); !strings.Contains(s, "mock-*") {
		t.Fatalf("the models show as %q", s)
	}
	// 100,000 prompt and 10,000 completion tokens at 0.15 / 0.60 per
	// million: 0.021 a request, over the limit after the first
	if st, code := e.chat(secret, "100000,10000"); st != 200 {
		t.Fatalf("first request: %d %s", st, code)
	}
	if st, code := e.chat(secret, "100000,10000"); st != 403 || code != "key_limit_exceeded" {
		t.Fatalf("request over the limit: %d %s, want 403 key_limit_exceeded", st, code)
	}
	rows := gwtest.Ledger(t, e.g, map[string][]string{"key": {k.ID}, "kind": {"usage"}}).Rows
	if len(rows) != 1 || rows[0].Amount != -21_000_000 {
		t.Fatalf("ledger rows of the key: %+v", rows)
	}
	b.waitAfterFocus(`document.querySelector('` + row + ` [data-policy="spend"]').textContent.includes('0.021 spent')`)
	if s := b.text(row + ` [data-policy="spend"]`); !strings.Contains(s, "resets") {
		t.Fatalf("the spend limit shows as %q, without its reset", s)
	}
	b.checkClean()
}

// TestBrowserDisableKey: Disable (after a confirmation) makes the SDK get
// 401 at once; Enable makes it work again; the list shows the state.
func TestBrowserDisableKey(t *testing.T) {
	e := newEnv(t)
	id, secret := e.g.NewKey("carol", "pausable")
	b := newBrowser(t, "carol", 1280, 900)
	b.open(e.dashURL())
	row := `tr[data-key="` + id + `"]`
	b.run(
		chromedp.Click(chromedp.CSS(row+` button[data-action="disable"]`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-confirm[open]`)),
		chromedp.Click(chromedp.CSS(`#confirm-submit`)),
		chromedp.WaitVisible(chromedp.CSS(row+` .badge[data-status="disabled"]`)),
	)
	if st, code := e.chat(secret, "10,5"); st != 401 {
		t.Fatalf("disabled key: %d %s, want 401", st, code)
	}
	b.run(
		chromedp.Click(chromedp.CSS(row+` button[data-action="enable"]`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(row+` .badge[data-status="active"]`)),
	)
	if st, code := e.chat(secret, "10,5"); st != 200 {
		t.Fatalf("enabled again: %d %s", st, code)
	}
	b.checkClean()
}

// TestBrowserEditKeyPolicy: the edit dialog changes the models and the
// spend limit and clears the limit; what an account holder may not do is
// explained by the server's sentence in the dialog.
func TestBrowserEditKeyPolicy(t *testing.T) {
	e := newEnv(t)
	id, secret := e.g.NewKey("carol", "editable")
	b := newBrowser(t, "carol", 1280, 900)
	b.open(e.dashURL())
	row := `tr[data-key="` + id + `"]`
	edit := func(models, limit string) {
		b.run(
			chromedp.Click(chromedp.CSS(row+` button[data-action="edit"]`), chromedp.NodeVisible),
			chromedp.WaitVisible(chromedp.CSS(`#dlg-edit[open]`)),
		)
		b.setValue(`#edit-models`, models)
		b.setValue(`#edit-limit`, limit)
		b.run(
			chromedp.Click(chromedp.CSS(`#edit-submit`)),
			chromedp.WaitNotVisible(chromedp.CSS(`#dlg-edit`)),
		)
	}
	edit("other-model", "1.50")
	b.waitFor(`document.querySelector('` + row + ` [data-policy="models"]').textContent.includes('other-model')`)
	if s := b.text(row + ` [data-policy="spend"]`); !strings.Contains(s, "1.50 USD per month") {
		t.Fatalf("spend limit shows %q", s)
	}
	if st, code := e.chat(secret, "10,5"); st != 403 {
		t.Fatalf("a model outside the list: %d %s, want 403", st, code)
	}
	edit("", "")
	b.waitFor(`document.querySelector('` + row + ` [data-policy="spend"]').textContent.includes('none')`)
	if s := b.text(row + ` [data-policy="models"]`); !strings.Contains(s, "all") {
		t.Fatalf("models show %q", s)
	}
	if st, code := e.chat(secret, "10,5"); st != 200 {
		t.Fatalf("after clearing: %d %s", st, code)
	}
	b.checkClean()
}

// TestBrowserDeletedKeysKeepNames: usage by key and recent activity show
// the real names of a deleted and a rotated key, marked so, never two
// identical "Deleted key" rows.
func TestBrowserDeletedKeysKeepNames(t *testing.T) {
	e := newEnv(t)
	alphaID, alpha := e.g.NewKey("carol", "alpha")
	betaID, beta := e.g.NewKey("carol", "beta")
	for _, k := range []string{alpha, beta} {
		if st, code := e.chat(k, "10,5"); st != 200 {
			t.Fatalf("request: %d %s", st, code)
		}
	}
	e.g.MustAdmin("DELETE", "/ai-gateway/keys/"+alphaID, nil, http.StatusOK, nil)
	e.g.MustAdmin("POST", "/ai-gateway/keys/"+betaID+"/rotate", map[string]string{}, http.StatusOK, nil)
	b := newBrowser(t, "carol", 1280, 900)
	b.open(e.dashURL() + "#usage")
	b.run(chromedp.WaitVisible(chromedp.CSS(`#bykey-table`)))
	names := eval[[]string](b, `Array.from(document.querySelectorAll('#bykey-body tr td:first-child')).map(td => td.textContent)`)
	if len(names) != 2 {
		t.Fatalf("by key: %q", names)
	}
	joined := strings.Join(names, "|")
	if !strings.Contains(joined, "alpha deleted") || !strings.Contains(joined, "beta deleted") && !strings.Contains(joined, "beta rotated") {
		t.Fatalf("by key shows %q", names)
	}
	recent := b.text(`#recent-body`)
	if strings.Contains(recent, "Deleted key") || !strings.Contains(recent, "alpha") || !strings.Contains(recent, "beta") {
		t.Fatalf("recent activity: %q", recent)
	}
	b.checkClean()
}

// TestBrowserOperatorPolicy: a limit the operator set shows in the list,
// and an account holder who tries to raise it gets the server's reason as a
// sentence in the dialog, with what they typed kept; rate limits the
// operator set show with their use.
func TestBrowserOperatorPolicy(t *testing.T) {
	e := newEnv(t)
	id, secret := e.g.NewKey("carol", "governed")
	e.g.MustAdmin("PATCH", "/ai-gateway/keys/"+id, map[string]any{
		"spend_limit": map[string]string{"amount": "1", "period": "day"},
		"rate_limits": map[string]int{"rpm": 60, "concurrency": 4},
	}, http.StatusOK, nil)
	if st, code := e.chat(secret, "10,5"); st != 200 {
		t.Fatalf("request: %d %s", st, code)
	}
	b := newBrowser(t, "carol", 1280, 900)
	b.open(e.dashURL())
	row := `tr[data-key="` + id + `"]`
	if s := b.text(row + ` [data-policy="operator"]`); !strings.Contains(s, "1.00 USD per day") {
		t.Fatalf("the operator's limit shows as %q", s)
	}
	rpm := b.text(row + ` [data-policy="rate"][data-kind="rpm"]`)
	if !strings.Contains(rpm, "60 requests per minute") || !strings.Contains(rpm, "1 used") {
		t.Fatalf("the rpm limit shows as %q", rpm)
	}
	if s := b.text(row + ` [data-policy="rate"][data-kind="concurrency"]`); !strings.Contains(s, "4 requests at once") {
		t.Fatalf("the concurrency limit shows as %q", s)
	}
	b.run(
		chromedp.Click(chromedp.CSS(row+` button[data-action="edit"]`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-edit[open]`)),
	)
	if eval[bool](b, `document.querySelector('#edit-rates').getClientRects().length > 0`) {
		t.Fatal("an account holder sees the rate limit inputs")
	}
	b.setValue(`#edit-limit`, "5.00")
	b.run(chromedp.Click(chromedp.CSS(`#edit-submit`)), chromedp.WaitVisible(chromedp.CSS(`#dlg-edit .form-error`)))
	msg := b.text(`#dlg-edit .form-error`)
	if !strings.Contains(msg, "operator") || strings.ToUpper(msg[:1]) != msg[:1] || !strings.HasSuffix(msg, ".") {
		t.Fatalf("the refusal reads %q", msg)
	}
	if b.value(`#edit-limit`) != "5.00" {
		t.Fatal("the typed limit was lost")
	}
	b.checkClean()
}
