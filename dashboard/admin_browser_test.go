package dashboard_test

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// download clicks sel and returns the file the browser saved.
func (b *browser) download(sel string) []byte {
	b.t.Helper()
	dir := b.t.TempDir()
	if _, err := chromedp.Call(b.ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
		Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir}); err != nil {
		b.t.Fatalf("allowing downloads: %v", err)
	}
	b.run(chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".crdownload") {
				body, err := os.ReadFile(filepath.Join(dir, e.Name()))
				if err != nil {
					b.t.Fatal(err)
				}
				return body
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	href := eval[string](b, `document.querySelector('`+sel+`').href`)
	st := get(b, chromedp.Evaluate[string](`fetch(document.querySelector('`+sel+`').href).then(r => r.status + ' ' + r.headers.get('content-disposition'))`, chromedp.EvalAwaitPromise))
	b.t.Fatalf("clicking %s (%s: %s) downloaded nothing", sel, href, st)
	return nil
}

// TestBrowserUsageLog: carol pages through every row of her usage log;
// filters by time range, key, model and status and sees the totals of the
// selection equal to the ledger's; downloads the selection as CSV and finds
// exactly the ledger's rows in it.
func TestBrowserUsageLog(t *testing.T) {
	e := newSeededEnv(t)
	all := gwtest.Ledger(t, e.g, url.Values{"account": {"carol"}}).Rows
	b := newBrowser(t, "carol", 1280, 900)
	b.rememberLogin("carol") // the download is the browser's request, without the page's headers
	b.open(e.dashURL() + "#log")
	b.run(chromedp.WaitVisible(chromedp.CSS(`#log-table`)))

	// every row, page by page
	seen := map[string]bool{}
	for page := 0; ; page++ {
		for _, id := range eval[[]string](b, `Array.from(document.querySelectorAll('#log-body tr')).map(r => r.dataset.row)`) {
			seen[id] = true
		}
		if eval[bool](b, `document.querySelector('#log-next').disabled`) {
			break
		}
		if page > 20 {
			t.Fatal("paging does not end")
		}
		first := eval[string](b, `document.querySelector('#log-body tr').dataset.row`)
		b.run(chromedp.Click(chromedp.CSS(`#log-next`)))
		// the next page, or the end (a last page can turn out empty)
		b.waitFor(`document.querySelector('#log-next').disabled || document.querySelector('#log-body tr').dataset.row !== '` + first + `'`)
	}
	if len(seen) != len(all) {
		t.Fatalf("paging showed %d rows, the ledger has %d", len(seen), len(all))
	}

	// a selection: one key, one model, succeeded, the last 10 days
	k := e.keyByName("carol", "production-app")
	from := time.Now().UTC().AddDate(0, 0, -9).Format("2006-01-02")
	to := time.Now().UTC().Format("2006-01-02")
	var want []gwtest.LedgerRow
	var wantCost int64
	for _, r := range all {
		if r.KeyID == k.ID && r.Model == "gpt-4o" && r.Status/100 == 2 && r.CreatedAt.UTC().Format("2006-01-02") >= from {
			want = append(want, r)
			wantCost -= r.Amount
		}
	}
	if len(want) < 2 {
		t.Fatalf("the seed has only %d rows to select", len(want))
	}
	b.run(
		chromedp.SetValue(chromedp.CSS(`#log-from`), from),
		chromedp.SetValue(chromedp.CSS(`#log-to`), to),
		chromedp.SetValue(chromedp.CSS(`#log-key`), k.ID),
		chromedp.SetValue(chromedp.CSS(`#log-model`), "gpt-4o"),
		chromedp.SetValue(chromedp.CSS(`#log-status`), "ok"),
		chromedp.Click(chromedp.CSS(`#log-apply`)),
	)
	wantTotals := fmt.Sprintf("%d requests", len(want))
	b.waitFor(`document.querySelector('#log-totals').textContent.includes(` + strconv.Quote(wantTotals) + `)`)
	totals := b.text(`#log-totals`)
	if !strings.Contains(totals, keystore.FormatAmount(wantCost)) {
		t.Fatalf("totals %q, want %s and %s", totals, wantTotals, keystore.FormatAmount(wantCost))
	}
	if n := eval[int](b, `document.querySelectorAll('#log-body tr').length`); n != len(want) {
		t.Fatalf("the page shows %d rows, want %d", n, len(want))
	}

	// the CSV is the selection
	body := b.download(`#log-csv`)
	recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil {
		t.Fatalf("the CSV does not parse: %v\n%s", err, body)
	}
	if len(recs) != len(want)+1 {
		t.Fatalf("the CSV has %d rows, want %d and a header:\n%s", len(recs)-1, len(want), body)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	idCol, ok := col["id"]
	if !ok {
		t.Fatalf("the CSV has no id column: %v", recs[0])
	}
	ids := map[string]bool{}
	for _, r := range want {
		ids[strconv.FormatInt(r.ID, 10)] = true
	}
	for _, rec := range recs[1:] {
		if !ids[rec[idCol]] {
			t.Fatalf("the CSV has row %s, not in the selection", rec[idCol])
		}
		if kc, ok := col["key_name"]; ok && rec[kc] != "production-app" {
			t.Fatalf("the CSV names the key %q", rec[kc])
		}
	}

	// only the balance changes: the seed's two top-ups
	var topups int
	for _, r := range all {
		if r.Kind != "usage" {
			topups++
		}
	}
	b.run(chromedp.Click(chromedp.CSS(`#log-reset`)))
	b.waitFor(`document.querySelector('#log-key').value === '' && document.querySelectorAll('#log-body tr').length === 50`)
	b.run(chromedp.SetValue(chromedp.CSS(`#log-kind`), "adjustment"), chromedp.Click(chromedp.CSS(`#log-apply`)))
	b.waitFor(fmt.Sprintf(`document.querySelectorAll('#log-body tr').length === %d`, topups))
	if s := b.text(`#log-body`); strings.Count(s, "Top-up") != topups || !strings.Contains(s, "+25.00") {
		t.Fatalf("the balance changes show as %q", s)
	}
	b.checkClean()
}

// TestBrowserAccountsAndAudit: alice (admin) finds team-b in the accounts
// table, tops it up with a note, disables it (its key gets 403), opens its
// keys and enables it again from the banner (200); the audit view lists
// these changes with alice as the actor. bob, holder of team-b, sees his
// account's entries and none of another account.
func TestBrowserAccountsAndAudit(t *testing.T) {
	e := newEnv(t)
	_, secret := e.g.NewKey("team-b", "worker")
	e.g.NewKey("carol", "carols-key")
	b := newBrowser(t, "alice", 1280, 900)
	b.open(e.dashURL() + "#accounts")
	b.run(chromedp.WaitVisible(chromedp.CSS(`#accounts-table`)))
	b.run(
		chromedp.SendKeys(chromedp.CSS(`#accounts-q`), "team"),
		chromedp.Click(chromedp.CSS(`#accounts-apply`)),
	)
	if bad := eval[[]string](b, fmt.Sprintf(outsideBoxes, `#accounts-body button`)); len(bad) > 0 {
		t.Fatalf("buttons outside the accounts table's card: %v", bad)
	}
	b.waitFor(`document.querySelectorAll('#accounts-body tr').length === 1`)
	row := `tr[data-account="team-b"]`
	if s := b.text(row); !strings.Contains(s, "10.00") || !strings.Contains(s, "Active") {
		t.Fatalf("team-b's row: %q", s)
	}
	// top up with a note
	b.run(
		chromedp.Click(chromedp.CSS(row+` button[data-action="balance"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-balance[open]`)),
		chromedp.SendKeys(chromedp.CSS(`#balance-amount`), "2.5"),
		chromedp.SendKeys(chromedp.CSS(`#balance-note`), "invoice 77"),
		chromedp.Click(chromedp.CSS(`#balance-submit`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#dlg-balance`)),
	)
	b.waitFor(`document.querySelector('` + row + `').textContent.includes('12.50')`)
	if gwtest.Balance(t, e.g, "team-b") != 12_500_000_000 {
		t.Fatal("the top-up did not reach the store")
	}
	// disable
	b.run(
		chromedp.Click(chromedp.CSS(row+` button[data-action="disable"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-confirm[open]`)),
		chromedp.Click(chromedp.CSS(`#confirm-submit`)),
	)
	b.waitFor(`document.querySelector('` + row + `').textContent.includes('Disabled')`)
	if st, code := e.chat(secret, "10,5"); st != 403 || code != "account_disabled" {
		t.Fatalf("key of the disabled account: %d %s", st, code)
	}
	// open its keys; the banner offers to enable it
	b.run(
		chromedp.Click(chromedp.CSS(row+` button[data-action="keys"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#view-keys`)),
		chromedp.WaitVisible(chromedp.CSS(`#banner-action`)),
	)
	if h := eval[string](b, `location.hash`); h != "#keys?account=team-b" {
		t.Fatalf("address %q", h)
	}
	b.run(chromedp.Click(chromedp.CSS(`#banner-action`)), chromedp.WaitNotVisible(chromedp.CSS(`#banner`)))
	if st, code := e.chat(secret, "10,5"); st != 200 {
		t.Fatalf("key after enabling: %d %s", st, code)
	}
	// the audit trail
	b.run(chromedp.Click(chromedp.CSS(`#tab-audit`)), chromedp.WaitVisible(chromedp.CSS(`#audit-table`)))
	audit := b.text(`#audit-body`)
	for _, want := range []string{"alice", "team-b", "invoice 77"} {
		if !strings.Contains(audit, want) {
			t.Fatalf("the audit view lacks %q:\n%s", want, audit)
		}
	}
	if n := eval[int](b, `Array.from(document.querySelectorAll('#audit-body tr')).filter(r => r.textContent.includes('alice')).length`); n < 3 {
		t.Fatalf("alice's changes in the audit view: %d rows, want top-up, disable and enable:\n%s", n, audit)
	}
	// filtered by account
	b.run(chromedp.SendKeys(chromedp.CSS(`#audit-account`), "carol"), chromedp.Click(chromedp.CSS(`#audit-apply`)))
	b.waitFor(`!document.querySelector('#audit-body').textContent.includes('invoice 77')`)
	b.checkClean()

	// bob sees team-b's entries only
	bob := newBrowser(t, "bob", 1280, 900)
	bob.open(e.dashURL() + "#audit")
	bob.run(chromedp.WaitVisible(chromedp.CSS(`#audit-table`)))
	if bob.eval(`document.querySelector('#audit-account-field').hidden`) != true {
		t.Fatal("a holder is offered the account filter")
	}
	got := bob.text(`#audit-body`)
	if !strings.Contains(got, "invoice 77") || strings.Contains(got, "carols-key") || strings.Contains(got, "carol ") {
		t.Fatalf("bob's audit view:\n%s", got)
	}
	// a holder cannot reach the accounts of others
	resp, _ := e.login("bob").do("GET", "api/audit?account=carol", nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bob asking for carol's audit: %d", resp.StatusCode)
	}
	bob.checkClean()
}

func (b *browser) eval(js string) any {
	b.t.Helper()
	return eval[any](b, js)
}
