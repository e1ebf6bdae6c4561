package management

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// TestFailedLedgerWritesFailClosedAndRecover: while the database refuses
// every commit (an injected fault standing in for a full disk), each failed
// batch is logged at error level with the rows waiting, the backlog shows in
// the metrics, and past the bound billed requests get 503 store_unavailable
// instead of queueing without end. When the fault clears the backlog drains
// by itself, requests are served again, and nothing settled meanwhile is
// lost: every served request has its ledger row and balance == sum(ledger).
func TestFailedLedgerWritesFailClosedAndRecover(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	diskFull := errors.New("injected fault: database or disk is full")
	// The app shares a store the pool already holds for its path, so the
	// test opens it first, with the fault hook and a small bound.
	failing := faultyStore(t, g, diskFull, keystore.Options{
		MaxPendingWrites: 5,
		CommitInterval:   time.Millisecond,
		OnWriteError:     writeErrorReporter(g.DBPath, nil),
	})
	// Without durable billing, so that requests complete while their rows
	// queue (TestDurableBillingWithholdsUntilCommitted covers the other).
	cfg, _ := json.Marshal(reloadJSON(t, g.Caddyfile(gwtest.Site(mock.URL), ""), func(cfg map[string]any) {
		cfg["apps"].(map[string]any)["ai_gateway"].(map[string]any)["durable_billing"] = false
	}))
	g.LoadJSON(cfg)
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "app")

	failing.Store(true)
	served, refused := 0, 0
	for i := 0; i < 12; i++ {
		resp, body := gwtest.RawPost(t, g, []string{"Bearer " + secret})
		switch resp.StatusCode {
		case http.StatusOK:
			served++
		case http.StatusServiceUnavailable:
			gwtest.CheckOpenAIError(t, resp, body, http.StatusServiceUnavailable, "server_error", "store_unavailable", "not sent")
			refused++
		default:
			t.Fatalf("request %d during the fault: %d %s", i, resp.StatusCode, body)
		}
	}
	if served < 5 || refused == 0 {
		t.Fatalf("during the fault: %d served, %d refused; want the first 5 served, then refusals", served, refused)
	}
	upstream := mock.Count()
	if upstream != served {
		t.Fatalf("refused requests reached the provider: %d upstream for %d served", upstream, served)
	}
	series, _ := gwtest.Scrape(t, g)
	if v := metricValue(series, "caddy_ai_gateway_ledger_backlogged", g.DBPath); v != 1 {
		t.Fatalf("ledger_backlogged = %v during the fault, want 1", v)
	}
	if v := metricValue(series, "caddy_ai_gateway_ledger_pending_writes", g.DBPath); v < float64(served) {
		t.Fatalf("ledger_pending_writes = %v, want >= %d", v, served)
	}
	if v := metricValue(series, "caddy_ai_gateway_ledger_oldest_pending_seconds", g.DBPath); v <= 0 {
		t.Fatalf("ledger_oldest_pending_seconds = %v, want > 0", v)
	}
	// The writer logs each failed attempt; on a busy machine the first may
	// come a little after the requests.
	gwtest.Eventually(t, 10*time.Second, func() string {
		log, _ := os.ReadFile(filepath.Join(g.Dir, "caddy.log"))
		if !strings.Contains(string(log), `"msg":"ledger write failed; retrying"`) ||
			!strings.Contains(string(log), `"rows_waiting":`) || !strings.Contains(string(log), diskFull.Error()) {
			return "no error log of the failed commits with the rows waiting:\n" + string(log)
		}
		return ""
	})

	failing.Store(false)
	gwtest.Eventually(t, 10*time.Second, func() string {
		resp, body := gwtest.RawPost(t, g, []string{"Bearer " + secret})
		if resp.StatusCode != http.StatusOK {
			return fmt.Sprintf("after the fault: %d %s", resp.StatusCode, body)
		}
		served++
		return ""
	})
	store := storeOf(t, g.DBPath)
	if err := store.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rows := gwtest.UsageRows(t, g)
	if len(rows) != served {
		t.Fatalf("%d usage rows for %d served requests", len(rows), served)
	}
	sum, err := store.LedgerSum(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := store.StoredBalance(context.Background(), "acme")
	if bal := gwtest.Balance(t, g, "acme"); bal != sum || stored != sum {
		t.Fatalf("balance %d, stored %d, sum(ledger) %d", bal, stored, sum)
	}
}

// storeOf returns the pooled store of path.
func storeOf(t *testing.T, path string) *keystore.Store {
	t.Helper()
	var s *keystore.Store
	storePool.Range(func(k, v any) bool {
		if k == path {
			s = v.(pooledStore).Store
		}
		return true
	})
	if s == nil {
		t.Fatalf("no open store for %s", path)
	}
	return s
}

// metricValue is the value of the series name{database=db}, or -1.
func metricValue(series []gwtest.Series, name, db string) float64 {
	for _, s := range series {
		if s.Name == name && s.Labels["database"] == db {
			return s.Value
		}
	}
	return -1
}
