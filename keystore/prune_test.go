package keystore

import (
	"context"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checkPrunedStore is checkStore for a pruned ledger: each account's
// balance_after chain starts from its carried-forward amount, and
// balance = carried_forward + sum(ledger) = LedgerSum, in memory and on disk.
func checkPrunedStore(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	chain := map[string]int64{}
	rows, err := s.r.Query(`SELECT account_id, amount FROM ledger_pruned`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a string
		var amount int64
		if err := rows.Scan(&a, &amount); err != nil {
			t.Fatal(err)
		}
		chain[a] = amount
	}
	rows.Close()
	rows, err = s.r.Query(`SELECT id, account_id, amount, balance_after FROM ledger ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, amount, after int64
		var a string
		if err := rows.Scan(&id, &a, &amount, &after); err != nil {
			t.Fatal(err)
		}
		chain[a] += amount
		if after != chain[a] {
			rows.Close()
			t.Fatalf("ledger row %d of %q: balance_after %d, want carried forward + previous = %d", id, a, after, chain[a])
		}
	}
	rows.Close()
	for _, a := range s.Accounts(ctx) {
		stored, err := s.StoredBalance(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		sum, err := s.LedgerSum(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if a.Balance != stored || stored != sum || sum != chain[a.ID] {
			t.Fatalf("account %q: memory %d, stored %d, LedgerSum %d, carried forward + ledger %d", a.ID, a.Balance, stored, sum, chain[a.ID])
		}
	}
}

// floorFilter rounds the since and until of f that lie before cut down to
// an hour boundary: the totals UsageTotals promises once rows before cut are
// pruned.
func floorFilter(f LedgerFilter, cut time.Time) LedgerFilter {
	if !f.Since.IsZero() && f.Since.Before(cut) {
		f.Since = f.Since.Truncate(time.Hour)
	}
	if !f.Until.IsZero() && f.Until.Before(cut) {
		f.Until = f.Until.Truncate(time.Hour)
	}
	return f
}

// TestPruneKeepsBalancesAndReports prunes the older half of a random ledger:
// the rows before the cut (rounded down to the hour) are gone, the others
// stay; balances and LedgerSum are unchanged and chain from the carried
// forward amounts; usage totals equal those computed before pruning, exactly
// for edges after the cut and to the hour before it.
func TestPruneKeepsBalancesAndReports(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 4))
	clk := newFakeClock()
	s := openTemp(t, Options{Now: clk.Now, CommitInterval: -1})
	u := newUniverse(clk)
	for _, a := range u.accounts {
		mustAccount(t, s, a, "1000")
	}
	fillRandomLedger(t, s, clk, u, r, 1500)
	u.to = clk.Now()
	before := u.from.Add(u.to.Sub(u.from) / 2).Add(17*time.Minute + 3*time.Second)
	cut := before.Truncate(time.Hour)

	type report struct {
		f  LedgerFilter
		by string
		it []UsageTotal
	}
	var reports []report
	for range 40 {
		f := u.randomFilter(r, 0)
		for _, by := range []string{"", "model", "day", "key", "account"} {
			reports = append(reports, report{f, by, bruteUsageTotals(t, s, floorFilter(f, cut), by)})
		}
	}
	balances := map[string]int64{}
	for _, a := range s.Accounts(ctx) {
		balances[a.ID] = a.Balance
	}
	older := queryInt(t, s.r, `SELECT count(*) FROM ledger WHERE created_at < ?`, unixMS(cut))
	total := queryInt(t, s.r, `SELECT count(*) FROM ledger`)
	if older < pruneBatchRows/10 || older == total {
		t.Fatalf("fixture: %d of %d rows before the cut", older, total)
	}

	n, err := s.PruneLedger(ctx, before)
	if err != nil || n != older {
		t.Fatalf("PruneLedger: %d rows, %v; want %d", n, err, older)
	}
	if left := queryInt(t, s.r, `SELECT count(*) FROM ledger`); left != total-older {
		t.Fatalf("%d rows left, want %d", left, total-older)
	}
	if got, err := s.PrunedUntil(ctx); err != nil || !got.Equal(cut) {
		t.Fatalf("PrunedUntil %s, %v; want %s", got, err, cut)
	}
	if n, err := s.PruneLedger(ctx, before); err != nil || n != 0 {
		t.Fatalf("second PruneLedger: %d, %v", n, err)
	}
	checkPrunedStore(t, s)
	for _, a := range s.Accounts(ctx) {
		if a.Balance != balances[a.ID] {
			t.Fatalf("balance of %s changed by pruning: %d, was %d", a.ID, a.Balance, balances[a.ID])
		}
	}
	for _, rep := range reports {
		got, err := s.UsageTotals(ctx, rep.f, rep.by)
		if err != nil || !reflect.DeepEqual(got, rep.it) {
			t.Fatalf("UsageTotals(%+v, %q) after pruning:\n got %+v, %v\nwant %+v", rep.f, rep.by, got, err, rep.it)
		}
	}
	// after the cut, totals stay exact at any edge
	u.from, u.sinceMin = cut, cut
	checkTotalsAgainstRaw(t, s, u, r, 20)
}

// TestPruneUnderConcurrentSettlement prunes again and again while
// goroutines settle charges and top up (run it with -race): no charge is
// lost, balances and LedgerSum stay exact, and the all-time totals equal
// what was charged.
func TestPruneUnderConcurrentSettlement(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	s := openTemp(t, Options{Now: clk.Now, CommitInterval: time.Millisecond})
	accounts := []string{"a", "b", "c"}
	for _, a := range accounts {
		mustAccount(t, s, a, "1000000")
	}
	var charged, requests atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				a := accounts[r.IntN(len(accounts))]
				if i%100 == 99 {
					if _, _, err := s.AdjustBalance(ctx, a, NanoPerUnit, "top-up"); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				clk.Advance(time.Duration(r.Int64N(int64(30 * time.Second))))
				cost := 1 + r.Int64N(1000)
				h, err := s.ReserveFor(Identity{AccountID: a}, cost)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := h.Settle(Charge{Cost: cost, Model: "m", KeyID: "k", PromptTokens: 1}); err != nil {
					t.Error(err)
					return
				}
				charged.Add(cost)
				requests.Add(1)
			}
		}()
	}
	var pruned int64
	for range 30 {
		time.Sleep(20 * time.Millisecond)
		n, err := s.PruneLedger(ctx, clk.Now().Add(-30*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		pruned += n
	}
	close(stop)
	wg.Wait()
	if pruned == 0 {
		t.Fatal("nothing was pruned")
	}
	checkPrunedStore(t, s)
	tot, err := s.UsageTotals(ctx, LedgerFilter{}, "")
	if err != nil || tot[0].Cost != charged.Load() || tot[0].Requests != requests.Load() {
		t.Fatalf("totals after pruning %+v, %v; charged %d in %d requests", tot, err, charged.Load(), requests.Load())
	}
	t.Logf("%d requests, %d rows pruned", requests.Load(), pruned)
}

// TestRetentionPrunesInBackground: with LedgerRetention set, the store
// prunes by itself, in batches, and SetLedgerRetention (a reload) applies a
// new retention.
func TestRetentionPrunesInBackground(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	s := openTemp(t, Options{Now: clk.Now, CommitInterval: -1, LedgerRetention: 48 * time.Hour})
	mustAccount(t, s, "a", "1000")
	for range pruneBatchRows + 300 { // more than a batch, over 5 days
		clk.Advance(80 * time.Second)
		settleOne(t, s, "a", Charge{Cost: 7, Model: "m"})
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := bruteUsageTotals(t, s, LedgerFilter{}, "day")
	s.SetLedgerRetention(2 * time.Hour)
	cut := clk.Now().Add(-2 * time.Hour).Truncate(time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for queryInt(t, s.r, `SELECT count(*) FROM ledger WHERE created_at < ?`, unixMS(cut)) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("rows past the retention were not pruned")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := queryInt(t, s.r, `SELECT rows FROM ledger_pruned WHERE account_id = 'a'`); n <= pruneBatchRows {
		t.Fatalf("%d rows carried forward, want more than a batch", n)
	}
	checkPrunedStore(t, s)
	got, err := s.UsageTotals(ctx, LedgerFilter{}, "day")
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("totals by day after pruning:\n got %+v, %v\nwant %+v", got, err, want)
	}
}
