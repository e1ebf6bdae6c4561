package keystore

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// bruteUsageTotals is UsageTotals as a plain sum over the raw ledger rows
// (what UsageTotals computed before rollups): the reference the rollups must
// match.
func bruteUsageTotals(t testing.TB, s *Store, f LedgerFilter, groupBy string) []UsageTotal {
	t.Helper()
	group, _, _ := usageGroup(s.dialect, groupBy)
	f.Kind = KindUsage
	where, args, err := f.where()
	if err != nil {
		t.Fatal(err)
	}
	q := `SELECT ` + group + ` AS grp, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),
		COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(reasoning_tokens), 0), -COALESCE(SUM(amount), 0),
		COALESCE(SUM(estimated), 0) FROM ledger WHERE ` + where
	if groupBy != "" {
		order := `grp`
		if s.dialect == dialectPostgres {
			order = `(` + group + `) COLLATE "C"` // byte order, as SQLite's
		}
		q += ` GROUP BY grp ORDER BY ` + order
	}
	rows, err := s.r.Query(q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := []UsageTotal{}
	for rows.Next() {
		var u UsageTotal
		if err := rows.Scan(&u.Group, &u.Requests, &u.PromptTokens, &u.CompletionTokens, &u.CachedTokens,
			&u.ReasoningTokens, &u.Cost, &u.Estimated); err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// ledgerUniverse is what a random ledger was built from, to draw filters.
type ledgerUniverse struct {
	accounts, keys, models []string
	from, to               time.Time
	// sinceMin, if set, is the earliest Since of a filter (the ledger
	// before it is pruned).
	sinceMin time.Time
}

// randomTime returns a time in [from-2h, to+2h), usually off any hour
// boundary, sometimes on one.
func (u *ledgerUniverse) randomTime(r *rand.Rand) time.Time {
	span := u.to.Sub(u.from) + 4*time.Hour
	t := u.from.Add(-2*time.Hour + time.Duration(r.Int64N(int64(span))))
	switch r.IntN(6) {
	case 0:
		return t.Truncate(time.Hour)
	case 1:
		return t.Truncate(24 * time.Hour)
	}
	return t.Truncate(time.Millisecond)
}

// randomFilter draws a filter over u: each field set or not.
func (u *ledgerUniverse) randomFilter(r *rand.Rand, maxID int64) LedgerFilter {
	var f LedgerFilter
	pick := func(xs []string) string {
		if r.IntN(3) == 0 {
			return ""
		}
		if r.IntN(10) == 0 {
			return "nonexistent"
		}
		return xs[r.IntN(len(xs))]
	}
	f.AccountID, f.KeyID, f.Model = pick(u.accounts), pick(u.keys), pick(u.models)
	if r.IntN(4) == 0 {
		f.Kind = KindUsage
	}
	if r.IntN(4) != 0 {
		f.Since = u.randomTime(r)
	}
	if r.IntN(3) != 0 {
		f.Until = u.randomTime(r)
		if !f.Since.IsZero() && f.Until.Before(f.Since) {
			f.Since, f.Until = f.Until, f.Since
		}
	}
	if maxID > 0 && r.IntN(8) == 0 {
		f.BeforeID = 1 + r.Int64N(maxID+1)
	}
	return f
}

// checkTotalsAgainstRaw compares UsageTotals with bruteUsageTotals for n
// random filters and every groupBy.
func checkTotalsAgainstRaw(t *testing.T, s *Store, u *ledgerUniverse, r *rand.Rand, n int) {
	t.Helper()
	ctx := context.Background()
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	maxID := queryInt(t, s.r, `SELECT COALESCE(MAX(id), 0) FROM ledger`)
	filters := []LedgerFilter{{}, {Since: u.from}, {Until: u.to}}
	for range n {
		filters = append(filters, u.randomFilter(r, maxID))
	}
	for _, f := range filters {
		if !u.sinceMin.IsZero() && f.Since.Before(u.sinceMin) {
			f.Since = u.sinceMin.Add(time.Duration(r.Int64N(int64(2 * time.Hour))))
			if !f.Until.IsZero() && f.Until.Before(f.Since) {
				f.Until = f.Since.Add(time.Duration(r.Int64N(int64(3 * time.Hour))))
			}
		}
		for _, by := range []string{"", "model", "day", "key", "account"} {
			got, err := s.UsageTotals(ctx, f, by)
			if err != nil {
				t.Fatalf("UsageTotals(%+v, %q): %v", f, by, err)
			}
			if want := bruteUsageTotals(t, s, f, by); !reflect.DeepEqual(got, want) {
				t.Fatalf("UsageTotals(%+v, %q):\n got %+v\nwant %+v", f, by, got, want)
			}
		}
	}
}

// fillRandomLedger settles rows random usage rows (and some top-ups) on u's
// accounts through the store, advancing clk by random steps, flushing at
// random points so that hours collect rows from several batches.
func fillRandomLedger(t *testing.T, s *Store, clk *fakeClock, u *ledgerUniverse, r *rand.Rand, rows int) {
	t.Helper()
	ctx := context.Background()
	for i := range rows {
		clk.Advance(time.Duration(r.Int64N(int64(40 * time.Minute))))
		a := u.accounts[r.IntN(len(u.accounts))]
		if r.IntN(40) == 0 {
			if _, _, err := s.AdjustBalance(ctx, a, 1+r.Int64N(NanoPerUnit), "top-up"); err != nil {
				t.Fatal(err)
			}
			continue
		}
		c := Charge{Cost: r.Int64N(NanoPerUnit / 100), PromptTokens: r.Int64N(5000), CompletionTokens: r.Int64N(900),
			CachedTokens: r.Int64N(300), ReasoningTokens: r.Int64N(200), Estimated: r.IntN(9) == 0, Status: 200}
		if r.IntN(10) != 0 {
			c.KeyID = u.keys[r.IntN(len(u.keys))]
		}
		if r.IntN(12) != 0 {
			c.Model = u.models[r.IntN(len(u.models))]
		}
		settleOne(t, s, a, c)
		if r.IntN(50) == 0 || i == rows-1 {
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func newUniverse(clk *fakeClock) *ledgerUniverse {
	u := &ledgerUniverse{from: clk.Now()}
	for i := range 5 {
		u.accounts = append(u.accounts, fmt.Sprintf("acct%d", i))
	}
	for i := range 9 {
		u.keys = append(u.keys, fmt.Sprintf("key_%d", i))
	}
	u.models = []string{"gpt-4o", "gpt-4o-mini", "o3", "claude", "ünï"}
	return u
}

// TestUsageRollupsMatchRawLedger is the property test of the rollups: on
// random ledgers, for random filters (account, key, model, kind, since and
// until mostly off hour boundaries, before id) and every groupBy,
// UsageTotals equals a plain sum over the raw rows.
func TestUsageRollupsMatchRawLedger(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 99))
			clk := newFakeClock()
			clk.Advance(time.Duration(r.Int64N(int64(time.Hour))))
			s := openTemp(t, Options{Now: clk.Now, CommitInterval: -1})
			u := newUniverse(clk)
			for _, a := range u.accounts {
				mustAccount(t, s, a, "1000")
			}
			fillRandomLedger(t, s, clk, u, r, 700)
			u.to = clk.Now()
			checkTotalsAgainstRaw(t, s, u, r, 30)
			checkStore(t, s)
		})
	}
}

// TestMigrationBuildsRollups opens a version 3 database holding a ledger:
// the migration sums it into rollups that equal the raw totals, reports
// its phases, and leaves balances unchanged.
func TestMigrationBuildsRollups(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v3.db")
	db, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range migrations[:3] {
		if _, err := db.Exec(m); err != nil {
			t.Fatalf("migration %d: %v", i+1, err)
		}
	}
	if _, err := db.Exec(`PRAGMA user_version = 3`); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 7))
	clk := newFakeClock()
	u := newUniverse(clk)
	balances := map[string]int64{}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range u.accounts {
		if _, err := tx.Exec(`INSERT INTO accounts (id, name, balance, created_at) VALUES (?, ?, 0, 0)`, a, a); err != nil {
			t.Fatal(err)
		}
	}
	at := unixMS(clk.Now())
	for i := range 3000 {
		at += r.Int64N(int64(20 * time.Minute / time.Millisecond))
		a := u.accounts[r.IntN(len(u.accounts))]
		kind, amount := KindUsage, -r.Int64N(NanoPerUnit/100)
		if i%50 == 0 {
			kind, amount = KindAdjustment, NanoPerUnit
		}
		balances[a] += amount
		var key, model any
		if r.IntN(10) != 0 {
			key = u.keys[r.IntN(len(u.keys))]
		}
		if r.IntN(10) != 0 {
			model = u.models[r.IntN(len(u.models))]
		}
		var prompt any = r.Int64N(4000)
		if r.IntN(20) == 0 {
			prompt = nil // rows written by hand or by old releases
		}
		if _, err := tx.Exec(`INSERT INTO ledger (created_at, account_id, key_id, kind, amount, balance_after, model,
			prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, estimated)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			at, a, key, kind, amount, balances[a], model, prompt, r.Int64N(500), r.Int64N(50), r.Int64N(50), r.IntN(2)); err != nil {
			t.Fatal(err)
		}
	}
	for a, b := range balances {
		if _, err := tx.Exec(`UPDATE accounts SET balance = ? WHERE id = ?`, b, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	u.to = fromMS(at)

	var phases []MigrationProgress
	s := openAt(t, path, Options{Now: clk.Now, OnMigrationProgress: func(p MigrationProgress) { phases = append(phases, p) }})
	var v4 []MigrationProgress // later migrations report their own phases
	for _, p := range phases {
		if p.Version == 4 {
			v4 = append(v4, p)
		}
	}
	if len(v4) != 6 || v4[0].LedgerRows != 3000 ||
		v4[1].Phase != "building usage rollups from the ledger" || v4[5].Phase != "done" || v4[5].Step != 6 {
		t.Fatalf("migration progress: %+v", phases)
	}
	for a, want := range balances {
		if b, _, _ := s.Balance(a); b != want {
			t.Fatalf("balance of %s after migration: %d, want %d", a, b, want)
		}
		if sum, err := s.LedgerSum(ctx, a); err != nil || sum != want {
			t.Fatalf("ledger sum of %s after migration: %d, %v", a, sum, err)
		}
	}
	checkTotalsAgainstRaw(t, s, u, r, 30)
	// new rows land in the rollups built by the migration
	settleOne(t, s, u.accounts[0], Charge{Cost: 5, KeyID: u.keys[0], Model: u.models[0], PromptTokens: 3})
	checkTotalsAgainstRaw(t, s, u, r, 10)
	checkStore(t, s)
}

// TestMigrationPhases: a migration without phase lines is one phase.
func TestMigrationPhases(t *testing.T) {
	names, scripts := migrationPhases(migrations[1])
	if len(names) != 1 || names[0] != "migrating" || scripts[0] != "\n"+migrations[1] {
		t.Fatalf("%q %q", names, scripts)
	}
	names, _ = migrationPhases(migrations[3])
	if !reflect.DeepEqual(names, []string{"creating tables", "building usage rollups from the ledger",
		"summing the hourly rollups by day", "indexing usage rollups", "re-indexing the ledger"}) {
		t.Fatalf("%q", names)
	}
}

// queryPlan returns SQLite's plan of q, its steps joined by "; ".
func queryPlan(t *testing.T, db *sql.DB, q string, args ...any) string {
	t.Helper()
	rows, err := db.Query("EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	plan := ""
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan += detail + "; "
	}
	return plan
}

// TestLedgerQueryPlans pins the indexes each query relies on: listings by
// account or key walk their index in id order (no sort of all the rows),
// and usage totals read the ledger only through ledger_time (the partial
// hours at the edges), never by scanning it or an account's rows.
func TestLedgerQueryPlans(t *testing.T) {
	sqliteOnly(t, "checks SQLite's query plans (EXPLAIN QUERY PLAN)")
	s := openTemp(t, Options{})
	end := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, f := range []LedgerFilter{{AccountID: "a"}, {KeyID: "k"}, {AccountID: "a", Kind: KindUsage}} {
		where, args, err := f.where()
		if err != nil {
			t.Fatal(err)
		}
		plan := queryPlan(t, s.r, `SELECT id FROM ledger WHERE `+where+` ORDER BY id DESC LIMIT 25`, args...)
		if strings.Contains(plan, "TEMP B-TREE") || !strings.Contains(plan, "INDEX ledger_") {
			t.Errorf("listing %+v: %s", f, plan)
		}
	}
	for _, f := range []LedgerFilter{
		{AccountID: "a", Since: end.Add(-24 * time.Hour)},
		{KeyID: "k", Since: end.Add(-720 * time.Hour), Until: end},
		{Since: end.Add(-720 * time.Hour)},
		{AccountID: "a", Model: "m", Since: end.Add(-90 * time.Minute), Until: end},
	} {
		f.Kind = KindUsage
		raw, roll, _ := usageGroup(s.dialect, "model")
		q, args := usageQuery(s.dialect, f, true, raw, roll, sql.NullInt64{})
		plan := queryPlan(t, s.r, q, args...)
		if strings.Contains(plan, "SCAN ledger") || strings.Contains(plan, "ledger_account") ||
			strings.Contains(plan, "ledger_key") || !strings.Contains(plan, "ledger_time") {
			t.Errorf("totals %+v: %s", f, plan)
		}
	}
}
