package dashboard_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// seedHistory fills the database with a month of usage for the account
// carol, written through the key store with a clock set back day by day, so
// the usage page has something to show. Caddy must not run yet.
func seedHistory(t *testing.T, dbPath string) {
	t.Helper()
	now := time.Now().UTC()
	clock := now.AddDate(0, 0, -29)
	st, err := keystore.Open(context.Background(), keystore.Options{Path: dbPath, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if _, err := st.CreateAccount(ctx, "carol", "Carol's Studio"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.AdjustBalance(ctx, "carol", 50_000_000_000, "invoice 2026-031"); err != nil {
		t.Fatal(err)
	}
	var keyIDs []string
	policies := map[string]keystore.KeyPolicy{
		"production-app": {SpendLimit: &keystore.SpendLimit{Amount: 20_000_000_000, Period: keystore.PeriodMonth}},
		"staging":        {AllowedModels: []string{"gpt-4o-mini", "deepseek-*"}},
	}
	for _, name := range []string{"production-app", "staging", "ci-runner"} {
		k, _, err := st.CreateKey(ctx, "carol", name, policies[name])
		if err != nil {
			t.Fatal(err)
		}
		keyIDs = append(keyIDs, k.ID)
	}
	models := []string{"gpt-4o-mini", "gpt-4o", "deepseek-chat"}
	for day := 0; day < 30; day++ {
		n := 3 + (day*7)%11
		if day%7 == 5 || day%7 == 6 {
			n /= 3 // quieter weekends
		}
		for i := 0; i < n; i++ {
			clock = now.AddDate(0, 0, day-29).Add(-time.Duration(i*37) * time.Minute)
			if clock.After(now) {
				clock = now
			}
			h, err := st.ReserveFor(keystore.Identity{AccountID: "carol"}, 1)
			if err != nil {
				t.Fatal(err)
			}
			m := models[(day+i)%len(models)]
			prompt, completion := int64(800+(i*131)%2400), int64(120+(day*53+i*17)%900)
			cost := (prompt*150 + completion*600) * int64(1+(i%len(models))*8) // nano-units
			if _, err := h.Settle(keystore.Charge{KeyID: keyIDs[(i+day/10)%len(keyIDs)], Model: m,
				RequestID: fmt.Sprintf("seed-%d-%d", day, i), Cost: cost, PromptTokens: prompt,
				CompletionTokens: completion, Status: 200, Duration: 800 * time.Millisecond}); err != nil {
				t.Fatal(err)
			}
		}
	}
	clock = now.Add(-2 * time.Hour)
	if _, _, err := st.AdjustBalance(ctx, "carol", 25_000_000_000, "invoice 2026-047"); err != nil {
		t.Fatal(err)
	}
}

// newSeededEnv is newEnv with a month of history for carol (seedHistory)
// and the account team-b.
func newSeededEnv(t *testing.T) *env {
	t.Helper()
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	seedHistory(t, g.DBPath)
	e := &env{t: t, g: g, mock: mock, AccessLog: filepath.Join(g.Dir, "access.log")}
	g.LoadSite(dashboardSite(t, g, mock.URL, e.AccessLog))
	g.NewAccount("team-b", "12.5")
	return e
}

// shot captures the tab without a passing toast.
func shot(b *browser) []byte {
	b.t.Helper()
	eval[bool](b, `(t => { t.classList.remove('show'); t.style.transition = 'none'; return true })(document.querySelector('#toast'))`)
	return get(b, chromedp.CaptureScreenshot())
}

// TestScreenshots writes the README's screenshots (PNG) into the directory
// named by DASHBOARD_SCREENSHOTS; without it the test skips.
//
//	DASHBOARD_SCREENSHOTS=$PWD/docs/screenshots go test ./dashboard -run TestScreenshots
func TestScreenshots(t *testing.T) {
	dir := os.Getenv("DASHBOARD_SCREENSHOTS")
	if dir == "" {
		t.Skip("set DASHBOARD_SCREENSHOTS=dir to write the README's screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := newSeededEnv(t)

	save := func(name string, png []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d KB)", name, len(png)/1024)
	}

	// carol: keys, the new-key dialog, the delete confirmation, usage
	b := newBrowser(t, "carol", 1200, 760)
	b.open(e.dashURL())
	b.run(chromedp.WaitVisible(chromedp.CSS(`#keys-table`)))
	save("keys.png", shot(b))

	b.run(
		chromedp.Click(chromedp.CSS(`#create-key`)),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-create[open] #create-name`)),
		chromedp.SendKeys(chromedp.CSS(`#create-name`), "mobile-app"),
		chromedp.Click(chromedp.CSS(`#create-submit`)),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-secret[open] #secret-value`)),
		chromedp.Sleep(300*time.Millisecond),
	)
	save("new-key.png", shot(b))
	b.run(chromedp.Click(chromedp.CSS(`#secret-done`)), chromedp.WaitNotVisible(chromedp.CSS(`#dlg-secret`)))

	k := e.keyByName("carol", "staging")
	b.run(
		chromedp.Click(chromedp.CSS(`tr[data-key="`+k.ID+`"] button[data-action="delete"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-delete[open]`)),
		chromedp.Sleep(300*time.Millisecond),
	)
	save("delete-key.png", shot(b))
	b.run(chromedp.Click(chromedp.CSS(`#dlg-delete [data-close]`)))

	b.run(
		chromedp.Navigate(e.dashURL()+"#usage"),
		chromedp.WaitReady(chromedp.CSS(`#chart svg .bar`)),
		chromedp.WaitVisible(chromedp.CSS(`#recent-table`)),
	)
	b.run(chromedp.EmulateViewport(1200, 1180))
	save("usage.png", shot(b))

	// the usage log, filtered to one model
	b.run(
		chromedp.EmulateViewport(1200, 900),
		chromedp.Navigate(e.dashURL()+"#log"),
		chromedp.WaitVisible(chromedp.CSS(`#log-table`)),
		chromedp.SetValue(chromedp.CSS(`#log-model`), "gpt-4o"),
		chromedp.Click(chromedp.CSS(`#log-apply`)),
	)
	b.waitFor(`document.querySelector('#log-totals').textContent.includes('Selection')`)
	b.run(chromedp.Sleep(300 * time.Millisecond))
	save("usage-log.png", shot(b))

	// phone (a fresh load: the chart is drawn at the phone's width)
	b.run(
		chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(1)),
		chromedp.Navigate(e.dashURL()+"#usage"),
		chromedp.Reload(),
		chromedp.WaitReady(chromedp.CSS(`#chart svg .bar`)),
	)
	save("phone.png", shot(b))

	// alice, an admin: the account switcher and the balance dialog
	a := newBrowser(t, "alice", 1200, 760)
	a.open(e.dashURL() + "#usage?account=carol")
	a.run(
		chromedp.WaitReady(chromedp.CSS(`#chart svg .bar`)),
		chromedp.Click(chromedp.CSS(`#adjust-balance`)),
		chromedp.WaitVisible(chromedp.CSS(`#dlg-balance[open]`)),
		chromedp.SendKeys(chromedp.CSS(`#balance-amount`), "100.00"),
		chromedp.SendKeys(chromedp.CSS(`#balance-note`), "invoice 2026-052"),
		chromedp.Sleep(300*time.Millisecond),
	)
	save("admin-balance.png", shot(a))
	a.run(chromedp.Click(chromedp.CSS(`#balance-submit`)), chromedp.WaitNotVisible(chromedp.CSS(`#dlg-balance`)))

	// the accounts table and the audit trail
	a.run(
		chromedp.Navigate(e.dashURL()+"#accounts"),
		chromedp.WaitVisible(chromedp.CSS(`#accounts-table`)),
		chromedp.Sleep(300*time.Millisecond),
	)
	save("accounts.png", shot(a))
	a.run(
		chromedp.Navigate(e.dashURL()+"#audit"),
		chromedp.WaitVisible(chromedp.CSS(`#audit-table`)),
		chromedp.Sleep(300*time.Millisecond),
	)
	save("audit.png", shot(a))
	b.checkClean()
	a.checkClean()
}
