package keystore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// ledgerFixture builds two accounts with usage over three days:
//
//	day 0 (2030-01-02): acme/k1 gpt-a x3 (0.10 each, one estimated), acme/k2 gpt-b x1 (0.50)
//	day 1 (2030-01-03): acme/k1 gpt-b x2 (0.20 each), beta/k3 gpt-a x1 (1.00)
//	day 2 (2030-01-04): beta/k3 gpt-a x1 (2.00), plus a top-up of beta
type ledgerFixture struct {
	s      *Store
	clk    *fakeClock
	k1, k2 string
	k3     string
	day0   time.Time
}

func newLedgerFixture(t *testing.T) *ledgerFixture {
	t.Helper()
	clk := newFakeClock()
	s := openTemp(t, Options{Now: clk.Now})
	mustAccount(t, s, "acme", "100")
	mustAccount(t, s, "beta", "100")
	k1, _ := mustKey(t, s, "acme", "one")
	k2, _ := mustKey(t, s, "acme", "two")
	k3, _ := mustKey(t, s, "beta", "three")
	f := &ledgerFixture{s: s, clk: clk, k1: k1.ID, k2: k2.ID, k3: k3.ID, day0: clk.Now()}
	use := func(acct, key, model, cost string, estimated bool) {
		settleOne(t, s, acct, Charge{
			KeyID: key, Model: model, Cost: nano(t, cost), RequestID: fmt.Sprintf("req-%d", clk.Now().UnixMilli()),
			PromptTokens: 100, CompletionTokens: 10, CachedTokens: 5, ReasoningTokens: 1,
			Status: 200, Duration: 1500 * time.Millisecond, Estimated: estimated, Note: "n",
		})
		clk.Advance(time.Second)
	}
	use("acme", f.k1, "gpt-a", "0.10", false)
	use("acme", f.k1, "gpt-a", "0.10", true)
	use("acme", f.k1, "gpt-a", "0.10", false)
	use("acme", f.k2, "gpt-b", "0.50", false)
	clk.Advance(24 * time.Hour)
	use("acme", f.k1, "gpt-b", "0.20", false)
	use("acme", f.k1, "gpt-b", "0.20", false)
	use("beta", f.k3, "gpt-a", "1.00", false)
	clk.Advance(24 * time.Hour)
	use("beta", f.k3, "gpt-a", "2.00", false)
	if _, _, err := s.AdjustBalance(context.Background(), "beta", nano(t, "5"), "top-up"); err != nil {
		t.Fatal(err)
	}
	return f
}

func ids(es []LedgerEntry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func TestLedgerFiltersAndPaging(t *testing.T) {
	ctx := context.Background()
	f := newLedgerFixture(t)
	s := f.s

	all, err := s.Ledger(ctx, LedgerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 11 { // 2 seed top-ups, 8 usage, 1 top-up
		t.Fatalf("%d rows, want 11", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID >= all[i-1].ID {
			t.Fatalf("not newest first: %v", ids(all))
		}
	}
	if all[0].Kind != KindAdjustment || all[0].Note != "top-up" || all[0].AccountID != "beta" || all[0].Model != "" {
		t.Fatalf("newest row %+v", all[0])
	}
	u := all[1]
	want := LedgerEntry{
		ID: u.ID, CreatedAt: f.day0.Add(48*time.Hour + 7*time.Second), AccountID: "beta", KeyID: f.k3, Kind: KindUsage,
		Amount: -nano(t, "2"), BalanceAfter: nano(t, "97"), Note: "n", Model: "gpt-a",
		PromptTokens: 100, CompletionTokens: 10, CachedTokens: 5, ReasoningTokens: 1,
		Status: 200, DurationMS: 1500, RequestID: fmt.Sprintf("req-%d", f.day0.Add(48*time.Hour+7*time.Second).UnixMilli()),
	}
	if !reflect.DeepEqual(u, want) {
		t.Fatalf("usage row\n got %+v\nwant %+v", u, want)
	}

	count := func(fl LedgerFilter) int {
		t.Helper()
		es, err := s.Ledger(ctx, fl)
		if err != nil {
			t.Fatalf("Ledger(%+v): %v", fl, err)
		}
		return len(es)
	}
	day1 := f.day0.Add(24 * time.Hour).Truncate(24 * time.Hour)
	for _, c := range []struct {
		f    LedgerFilter
		want int
	}{
		{LedgerFilter{AccountID: "acme"}, 7},
		{LedgerFilter{AccountID: "beta", Kind: KindUsage}, 2},
		{LedgerFilter{Kind: KindAdjustment}, 3},
		{LedgerFilter{KeyID: f.k1}, 5},
		{LedgerFilter{Model: "gpt-a"}, 5},
		{LedgerFilter{Model: "gpt-b", KeyID: f.k1}, 2},
		{LedgerFilter{AccountID: "nobody"}, 0},
		{LedgerFilter{Since: day1}, 5},                                                        // days 1 and 2
		{LedgerFilter{Since: day1, Until: day1.Add(24 * time.Hour)}, 3},                       // day 1 only
		{LedgerFilter{Until: day1}, 6},                                                        // seeds and day 0
		{LedgerFilter{Since: f.day0, Until: f.day0.Add(time.Second)}, 3},                      // two seeds and the first use at day0
		{LedgerFilter{Since: f.day0.Add(time.Second), Until: f.day0.Add(2 * time.Second)}, 1}, // inclusive since, exclusive until
		{LedgerFilter{Limit: 4}, 4},
		{LedgerFilter{BeforeID: all[9].ID}, 1},
	} {
		if got := count(c.f); got != c.want {
			t.Errorf("Ledger(%+v): %d rows, want %d", c.f, got, c.want)
		}
	}

	// paging with BeforeID walks every row exactly once
	var paged []int64
	fl := LedgerFilter{Limit: 3}
	for {
		page, err := s.Ledger(ctx, fl)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, ids(page)...)
		fl.BeforeID = page[len(page)-1].ID
	}
	if !reflect.DeepEqual(paged, ids(all)) {
		t.Fatalf("paged %v, want %v", paged, ids(all))
	}

	for _, bad := range []LedgerFilter{
		{Kind: "refund"}, {Limit: -1}, {BeforeID: -5},
		{Since: day1, Until: day1.Add(-time.Millisecond)},
	} {
		if _, err := s.Ledger(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Ledger(%+v): %v, want ErrInvalid", bad, err)
		}
	}
}

func TestLedgerLimitDefaultAndMax(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "100")
	for i := 0; i < 130; i++ {
		settleOne(t, s, "acme", Charge{Cost: 1})
	}
	// Ledger includes rows settled just before the call without an
	// explicit Flush
	if es, err := s.Ledger(ctx, LedgerFilter{}); err != nil || len(es) != defaultLedgerLimit {
		t.Fatalf("default limit: %d rows, %v", len(es), err)
	}
	if es, err := s.Ledger(ctx, LedgerFilter{Limit: 1_000_000}); err != nil || len(es) != 131 {
		t.Fatalf("huge limit: %d rows, %v", len(es), err)
	}
	// the cap itself
	s.writeMu.Lock()
	for i := 0; i < maxLedgerLimit+5; i++ {
		settleOne(t, s, "acme", Charge{Cost: 1})
	}
	s.writeMu.Unlock()
	if es, err := s.Ledger(ctx, LedgerFilter{Limit: 1_000_000}); err != nil || len(es) != maxLedgerLimit {
		t.Fatalf("limit above the max: %d rows, %v", len(es), err)
	}
}

func TestUsageTotals(t *testing.T) {
	ctx := context.Background()
	f := newLedgerFixture(t)
	s := f.s

	tot := func(fl LedgerFilter, groupBy string) []UsageTotal {
		t.Helper()
		out, err := s.UsageTotals(ctx, fl, groupBy)
		if err != nil {
			t.Fatalf("UsageTotals(%+v, %q): %v", fl, groupBy, err)
		}
		return out
	}
	ut := func(group string, requests int64, cost string, estimated int64) UsageTotal {
		return UsageTotal{Group: group, Requests: requests, PromptTokens: 100 * requests, CompletionTokens: 10 * requests,
			CachedTokens: 5 * requests, ReasoningTokens: requests, Cost: nano(t, cost), Estimated: estimated}
	}
	for _, c := range []struct {
		f       LedgerFilter
		groupBy string
		want    []UsageTotal
	}{
		{LedgerFilter{}, "", []UsageTotal{ut("", 8, "4.20", 1)}},
		{LedgerFilter{}, "model", []UsageTotal{ut("gpt-a", 5, "3.30", 1), ut("gpt-b", 3, "0.90", 0)}},
		{LedgerFilter{}, "day", []UsageTotal{ut("2030-01-02", 4, "0.80", 1), ut("2030-01-03", 3, "1.40", 0), ut("2030-01-04", 1, "2.00", 0)}},
		{LedgerFilter{}, "account", []UsageTotal{ut("acme", 6, "1.20", 1), ut("beta", 2, "3.00", 0)}},
		{LedgerFilter{AccountID: "acme"}, "model", []UsageTotal{ut("gpt-a", 3, "0.30", 1), ut("gpt-b", 3, "0.90", 0)}},
		{LedgerFilter{Model: "gpt-a", Since: f.day0.Add(24 * time.Hour)}, "day", []UsageTotal{ut("2030-01-03", 1, "1.00", 0), ut("2030-01-04", 1, "2.00", 0)}},
		{LedgerFilter{Kind: KindUsage, AccountID: "nobody"}, "", []UsageTotal{{}}},
		{LedgerFilter{AccountID: "nobody"}, "model", []UsageTotal{}},
	} {
		if got := tot(c.f, c.groupBy); !reflect.DeepEqual(got, c.want) {
			t.Errorf("UsageTotals(%+v, %q)\n got %+v\nwant %+v", c.f, c.groupBy, got, c.want)
		}
	}
	byKey := tot(LedgerFilter{}, "key")
	wantKey := map[string]UsageTotal{f.k1: ut(f.k1, 5, "0.70", 1), f.k2: ut(f.k2, 1, "0.50", 0), f.k3: ut(f.k3, 2, "3.00", 0)}
	if len(byKey) != 3 {
		t.Fatalf("by key: %+v", byKey)
	}
	for _, g := range byKey {
		if g != wantKey[g.Group] {
			t.Errorf("key %s: %+v, want %+v", g.Group, g, wantKey[g.Group])
		}
	}
	for _, bad := range []string{"hour", "Model", "models"} {
		if _, err := s.UsageTotals(ctx, LedgerFilter{}, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("groupBy %q: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := s.UsageTotals(ctx, LedgerFilter{Kind: KindAdjustment}, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("kind adjustment: %v, want ErrInvalid", err)
	}
}

func TestLedgerEntryJSON(t *testing.T) {
	f := newLedgerFixture(t)
	es, err := f.s.Ledger(context.Background(), LedgerFilter{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	keys := func(e LedgerEntry) map[string]any {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	adj, use := keys(es[0]), keys(es[1])
	for _, k := range []string{"id", "created_at", "account_id", "kind", "amount_nano", "balance_after_nano", "note"} {
		if _, ok := adj[k]; !ok {
			t.Errorf("adjustment JSON lacks %q: %v", k, adj)
		}
	}
	for _, k := range []string{"model", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "status", "duration_ms", "request_id"} {
		if _, ok := adj[k]; ok {
			t.Errorf("adjustment JSON has usage field %q", k)
		}
		if _, ok := use[k]; !ok {
			t.Errorf("usage JSON lacks %q: %v", k, use)
		}
	}
	if use["key_id"] != f.k3 || use["amount_nano"] != float64(-2*NanoPerUnit) {
		t.Errorf("usage JSON %v", use)
	}
}

// TestMigrationFromVersion1 opens a database written by the first schema
// version: the new indexes are added and the data is kept.
func TestMigrationFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := newPlaintextKey()
	if err != nil {
		t.Fatal(err)
	}
	h := HashKey(pt)
	for _, q := range []string{
		migrations[0],
		`PRAGMA user_version = 1`,
		`INSERT INTO accounts (id, name, balance, disabled, created_at) VALUES ('acme', 'Acme', 4000000000, 0, 1000)`,
		`INSERT INTO ledger (created_at, account_id, kind, amount, balance_after, note) VALUES (1000, 'acme', 'adjustment', 5000000000, 5000000000, 'seed')`,
		`INSERT INTO ledger (created_at, account_id, key_id, kind, amount, balance_after, model, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, status, duration_ms, request_id, estimated)
			VALUES (2000, 'acme', 'key_old', 'usage', -1000000000, 4000000000, 'gpt-old', 7, 3, 0, 0, 200, 12, 'r1', 1)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if _, err := db.Exec(`INSERT INTO api_keys (id, account_id, name, hash, hint, created_at) VALUES ('key_old', 'acme', 'old', ?, 'sk-…old', 1000)`, h[:]); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := openAt(t, path, Options{})
	if v := queryInt(t, s.r, `PRAGMA user_version`); v != 4 || SchemaVersion() != 4 {
		t.Fatalf("user_version %d, SchemaVersion %d, want 4", v, SchemaVersion())
	}
	// a key of version 1 is its own lineage, with no policy, and can get one
	id, err := s.Authenticate(ctx, pt)
	if err != nil || id.lineage != "key_old" || id.AllowedModels != nil {
		t.Fatalf("old key after migration: %+v, %v", id, err)
	}
	if _, err := s.UpdateKey(ctx, "key_old", KeyUpdate{SetSpendLimit: true, SpendLimit: &SpendLimit{Amount: 5 * NanoPerUnit, Period: PeriodTotal}}); err != nil {
		t.Fatal(err)
	}
	// the usage row of version 1 counts against the new limit
	if spent, _, _, ok := s.KeySpend(ctx, "key_old"); !ok || spent != NanoPerUnit {
		t.Fatalf("spend of the migrated key: %d, %v", spent, ok)
	}
	if n := queryInt(t, s.r, `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'ledger_time'`); n != 1 {
		t.Fatalf("index ledger_time: %d found, want 1", n)
	}
	if b, _, _ := s.Balance("acme"); b != 4*NanoPerUnit {
		t.Fatalf("balance after migration %d", b)
	}
	es, err := s.Ledger(ctx, LedgerFilter{AccountID: "acme"})
	if err != nil || len(es) != 2 || es[0].Model != "gpt-old" || !es[0].Estimated || es[0].PromptTokens != 7 || es[1].Note != "seed" {
		t.Fatalf("ledger after migration: %+v, %v", es, err)
	}
	// the old rows and new ones chain
	settleOne(t, s, "acme", Charge{Cost: NanoPerUnit, Model: "gpt-new"})
	checkStore(t, s)
	tot, err := s.UsageTotals(ctx, LedgerFilter{}, "model")
	if err != nil || len(tot) != 2 || tot[0].Group != "gpt-new" || tot[1].Estimated != 1 {
		t.Fatalf("totals after migration: %+v, %v", tot, err)
	}
	var plan string
	rows, err := s.r.Query(`EXPLAIN QUERY PLAN SELECT id FROM ledger WHERE model = 'x' AND created_at >= 0`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan += detail
	}
	rows.Close()
	if !strings.Contains(plan, "ledger_time") {
		t.Fatalf("query by model and time does not use ledger_time: %s", plan)
	}
}
