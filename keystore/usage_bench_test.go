package keystore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// usageBenchShape is one usage report of the issue "Usage at scale".
type usageBenchShape struct {
	name    string
	filter  func(end time.Time) LedgerFilter
	groupBy string
}

var usageBenchShapes = []usageBenchShape{
	{"account_since24h_by_model", func(end time.Time) LedgerFilter {
		return LedgerFilter{AccountID: "acct07", Since: end.Add(-24 * time.Hour)}
	}, "model"},
	{"all_since720h_by_model", func(end time.Time) LedgerFilter {
		return LedgerFilter{Since: end.Add(-720 * time.Hour)}
	}, "model"},
	{"account_since720h_by_day", func(end time.Time) LedgerFilter {
		return LedgerFilter{AccountID: "acct07", Since: end.Add(-720 * time.Hour)}
	}, "day"},
	{"account_alltime_total", func(time.Time) LedgerFilter {
		return LedgerFilter{AccountID: "acct07"}
	}, ""},
	{"all_alltime_total", func(time.Time) LedgerFilter { return LedgerFilter{} }, ""},
}

// genUsageLedger fills a new database at path with rows usage rows through
// the store's own write path (Reserve and Settle, group-committed by the
// writer): 20 accounts with 3 keys each, 4 models, spread evenly over 30
// days that start off an hour boundary. It returns the time of the last row.
func genUsageLedger(tb testing.TB, path string, rows int) time.Time {
	ctx := context.Background()
	start := genUsageStart
	var clock atomic.Int64
	clock.Store(start.UnixNano())
	s, err := Open(ctx, Options{Path: path, Now: func() time.Time { return time.Unix(0, clock.Load()) },
		CommitInterval: time.Second, MaxPendingWrites: -1, MaxPendingAge: -1})
	if err != nil {
		tb.Fatal(err)
	}
	const accounts, keysPer = 20, 3
	models := []string{"gpt-4o", "gpt-4o-mini", "o3", "claude-sonnet"}
	var keys [accounts][keysPer]string
	for a := range accounts {
		id := fmt.Sprintf("acct%02d", a)
		if _, err := s.CreateAccount(ctx, id, id); err != nil {
			tb.Fatal(err)
		}
		if _, _, err := s.AdjustBalance(ctx, id, maxAmountUnits*NanoPerUnit, "bench"); err != nil {
			tb.Fatal(err)
		}
		for k := range keysPer {
			key, _, err := s.CreateKey(ctx, id, fmt.Sprintf("k%d", k), KeyPolicy{})
			if err != nil {
				tb.Fatal(err)
			}
			keys[a][k] = key.ID
		}
	}
	step := genUsageStep(rows)
	for i := range rows {
		clock.Store(start.UnixNano() + int64(i)*step)
		a := i % accounts
		h, err := s.ReserveFor(Identity{AccountID: fmt.Sprintf("acct%02d", a)}, 1000)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := h.Settle(Charge{KeyID: keys[a][(i/accounts)%keysPer], Model: models[(i/7)%len(models)],
			Cost: int64(500 + i%1000), PromptTokens: int64(100 + i%300), CompletionTokens: int64(i % 200),
			CachedTokens: int64(i % 50), ReasoningTokens: int64(i % 30), Status: 200, Estimated: i%97 == 0,
			RequestID: "req"}); err != nil {
			tb.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		tb.Fatal(err)
	}
	return time.Unix(0, clock.Load()).UTC()
}

// genUsageStart is the time of the first generated row.
var genUsageStart = time.Date(2025, 3, 1, 0, 17, 23, 0, time.UTC)

func genUsageStep(rows int) int64 { return int64(30*24*time.Hour) / int64(rows) }

// genUsageEnd is the time of the last of rows generated rows.
func genUsageEnd(rows int) time.Time {
	return time.Unix(0, genUsageStart.UnixNano()+int64(rows-1)*genUsageStep(rows)).UTC()
}

// BenchmarkUsageTotals times UsageTotals for the report shapes of the issue
// on a ledger of 1M usage rows generated through Settle (20 accounts, 3 keys
// each, 30 days). KEYSTORE_BENCH_ROWS changes the size (e.g. 10000000; the
// generation then takes minutes):
//
//	go test -run='^$' -bench=UsageTotals -benchtime=20x ./keystore/
func BenchmarkUsageTotals(b *testing.B) {
	rows := 1_000_000
	if v := os.Getenv("KEYSTORE_BENCH_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("KEYSTORE_BENCH_ROWS=%q: want a positive integer", v)
		}
		rows = n
	}
	// KEYSTORE_BENCH_DB keeps the generated database at that path and
	// reuses it when it exists (delete it after changing the generator).
	path, end := os.Getenv("KEYSTORE_BENCH_DB"), genUsageEnd(rows)
	if _, err := os.Stat(path); path == "" || err != nil {
		if path == "" {
			path = filepath.Join(b.TempDir(), "usage.db")
		}
		t0 := time.Now()
		end = genUsageLedger(b, path, rows)
		b.Logf("generated %d rows in %s", rows, time.Since(t0).Round(time.Millisecond))
	}
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	// the dashboard's usage page: 30 days from midnight by day, model and
	// key, the total, and the 25 newest rows
	b.Run(fmt.Sprintf("rows=%d/dashboard_page", rows), func(b *testing.B) {
		since := end.Truncate(24*time.Hour).AddDate(0, 0, -29)
		f := LedgerFilter{AccountID: "acct07", Since: since}
		for b.Loop() {
			for _, by := range []string{"day", "model", "key", ""} {
				if _, err := s.UsageTotals(ctx, f, by); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := s.Ledger(ctx, LedgerFilter{AccountID: "acct07", Limit: 25}); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, sh := range usageBenchShapes {
		b.Run(fmt.Sprintf("rows=%d/%s", rows, sh.name), func(b *testing.B) {
			f := sh.filter(end)
			for b.Loop() {
				if _, err := s.UsageTotals(ctx, f, sh.groupBy); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
