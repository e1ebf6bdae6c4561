package dashboard_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserRateLimitsByAnAdmin: alice (admin) sets 1 request per minute
// on a key of team-b in the key's edit dialog; the list shows it, and the
// OpenAI SDK (no retries) gets 200 and then 429 rate_limit_exceeded. In
// the accounts table she sets carol's tokens per minute and requests at
// once, and the row shows them. An account holder's edit dialog has no
// rate limit inputs (TestBrowserOperatorPolicy checks that too).
func TestBrowserRateLimitsByAnAdmin(t *testing.T) {
	e := newEnv(t)
	id, secret := e.g.NewKey("team-b", "limited")
	b := newBrowser(t, "alice", 1280, 900)
	b.open(e.dashURL() + "#keys?account=team-b")
	row := `tr[data-key="` + id + `"]`
	b.run(
		chromedp.Click(chromedp.CSS(row+` button[data-action="edit"]`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-edit[open] #edit-rate-rpm`)),
	)
	b.setValue(`#edit-rate-rpm`, "1")
	b.run(
		chromedp.Click(chromedp.CSS(`#edit-submit`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#dlg-edit`)),
	)
	b.waitFor(`!!document.querySelector('` + row + ` [data-policy="rate"][data-kind="rpm"]')`)
	if s := b.text(row + ` [data-policy="rate"][data-kind="rpm"]`); !strings.Contains(s, "1 requests per minute") {
		t.Fatalf("the rpm limit shows as %q", s)
	}
	if st, code := e.chat(secret, "10,5"); st != http.StatusOK {
		t.Fatalf("first request under rpm 1: %d %s", st, code)
	}
	if st, code := e.chat(secret, "10,5"); st != http.StatusTooManyRequests || code != "rate_limit_exceeded" {
		t.Fatalf("second request under rpm 1: %d %s, want 429 rate_limit_exceeded", st, code)
	}

	// the account's limits, from the accounts table
	b.run(
		chromedp.Click(chromedp.CSS(`#tab-accounts`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#accounts-table`)),
	)
	arow := `tr[data-account="carol"]`
	if s := b.text(arow + ` .rates-cell`); !strings.Contains(s, "Rate limits: none") {
		t.Fatalf("carol's rate limits before: %q", s)
	}
	b.run(
		chromedp.Click(chromedp.CSS(arow+` button[data-action="rates"]`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-rates[open] #rates-tpm`)),
	)
	b.setValue(`#rates-tpm`, "50000")
	b.setValue(`#rates-concurrency`, "3")
	b.run(
		chromedp.Click(chromedp.CSS(`#rates-submit`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#dlg-rates`)),
	)
	b.waitFor(`!!document.querySelector('` + arow + ` [data-policy="rate"][data-kind="tpm"]')`)
	if s := b.text(arow + ` [data-policy="rate"][data-kind="tpm"]`); !strings.Contains(s, "tokens per minute") || !strings.Contains(strings.NewReplacer(",", "", ".", "", " ", "", "\u00a0", "").Replace(s), "50000") {
		t.Fatalf("carol's tpm limit shows as %q", s)
	}
	if s := b.text(arow + ` [data-policy="rate"][data-kind="concurrency"]`); !strings.Contains(s, "3 requests at once") {
		t.Fatalf("carol's concurrency limit shows as %q", s)
	}
	var acct struct {
		RateLimits []rateLimit `json:"rate_limits"`
	}
	e.g.MustAdmin("GET", "/ai-gateway/accounts/carol", nil, http.StatusOK, &acct)
	if got := ownLimits(acct.RateLimits, "account"); got != "tpm=50000 concurrency=3" {
		t.Fatalf("carol's limits in the store: %q", got)
	}
	// the dialog opens again with what is set
	b.run(
		chromedp.Click(chromedp.CSS(arow+` button[data-action="rates"]`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-rates[open] #rates-tpm`)),
	)
	if v := b.value(`#rates-tpm`); v != "50000" {
		t.Fatalf("the dialog shows tpm %q", v)
	}
	b.checkClean()
}
