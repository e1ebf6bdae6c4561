package keystore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metask/caddy-ai-gateway/internal/pgtest"
)

// Tests of several Stores (instances) on one real PostgreSQL database.

// testCluster is the cluster options of the tests: the defaults, with a
// lease of lease nano-units (0: exact mode).
func testCluster(lease int64) *ClusterOptions {
	return &ClusterOptions{Lease: lease}
}

// openInstances opens n Stores on one fresh PostgreSQL database.
func openInstances(t *testing.T, n int, cl *ClusterOptions) (string, []*Store) {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	stores := make([]*Store, n)
	for i := range stores {
		opts := *cl
		s, err := Open(context.Background(), Options{Path: dsn, Cluster: &opts, CommitInterval: 5 * time.Millisecond})
		if err != nil {
			t.Fatalf("opening instance %d: %v", i, err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	return dsn, stores
}

// refusedAfter waits until the revocation rule's deadline for a change
// that committed by committed (committed + RevocationStaleness) and then
// checks that auth, run on every other instance, refuses.
func refusedAfter(t *testing.T, committed time.Time, stores []*Store, what string, refused func(*Store) error) {
	t.Helper()
	time.Sleep(time.Until(committed.Add(defaultRevocationStaleness)))
	for i, s := range stores {
		if err := refused(s); err != nil {
			t.Errorf("%s: instance %d after the revocation bound: %v", what, i, err)
		}
	}
}

// mustRefuseKey is a refused func: the key no longer authenticates, as
// unknown or expired. (ErrUnavailable, a stale feed on a stalled machine,
// is a refusal too, but it is not what these tests are after: it is
// waited out, and the feed must then have applied the change.)
func mustRefuseKey(key string) func(*Store) error {
	return func(s *Store) error {
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := s.Authenticate(context.Background(), key)
			switch {
			case err == nil:
				return errors.New("key still accepted")
			case errors.Is(err, ErrUnknownKey), errors.Is(err, ErrExpiredKey):
				return nil
			case !errors.Is(err, ErrUnavailable) || time.Now().After(deadline):
				return fmt.Errorf("unexpected error %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestClusterRevocation: a key deleted, rotated without grace, expired by
// an update, or an account disabled on one instance is refused by the
// others by the rule (committed + RevocationStaleness), although they had
// the key cached.
func TestClusterRevocation(t *testing.T) {
	ctx := context.Background()
	_, st := openInstances(t, 3, testCluster(-1))
	a, others := st[0], st[1:]
	if _, err := a.CreateAccount(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.AdjustBalance(ctx, "acme", 100*NanoPerUnit, "top-up"); err != nil {
		t.Fatal(err)
	}
	newKey := func(name string, pol KeyPolicy) (Key, string) {
		k, plain, err := a.CreateKey(ctx, "acme", name, pol)
		if err != nil {
			t.Fatal(err)
		}
		// every other instance knows and caches it
		for i, s := range others {
			waitFor(t, 5*time.Second, func() bool { _, err := s.Authenticate(ctx, plain); return err == nil })
			if _, err := s.Authenticate(ctx, plain); err != nil {
				t.Fatalf("instance %d: %v", i+1, err)
			}
		}
		return k, plain
	}

	// deleted
	k, plain := newKey("deleted", KeyPolicy{})
	if err := a.DeleteKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	refusedAfter(t, time.Now(), others, "deleted key", mustRefuseKey(plain))

	// rotated without grace: the old key is refused, the new one works
	k, plain = newKey("rotated", KeyPolicy{})
	_, newPlain, _, err := a.RotateKey(ctx, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	refusedAfter(t, time.Now(), others, "rotated key", mustRefuseKey(plain))
	for i, s := range others {
		if _, err := s.Authenticate(ctx, newPlain); err != nil {
			t.Errorf("instance %d: replacement key: %v", i+1, err)
		}
	}

	// expired by an update
	k, plain = newKey("expiring", KeyPolicy{})
	exp := time.Now().Add(100 * time.Millisecond)
	if _, err := a.UpdateKey(ctx, k.ID, KeyUpdate{SetExpiry: true, ExpiresAt: &exp}); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	if exp.After(committed) {
		committed = exp
	}
	refusedAfter(t, committed, others, "expired key", mustRefuseKey(plain))

	// account disabled: no admission, and Balance reports it
	_, plain = newKey("of disabled account", KeyPolicy{})
	for i, s := range others {
		h, err := s.ReserveFor(Identity{AccountID: "acme"}, NanoPerUnit)
		if err != nil {
			t.Fatalf("instance %d before disabling: %v", i+1, err)
		}
		h.Release()
	}
	yes := true
	if _, err := a.UpdateAccount(ctx, "acme", nil, &yes); err != nil {
		t.Fatal(err)
	}
	refusedAfter(t, time.Now(), others, "disabled account", func(s *Store) error {
		id, err := s.Authenticate(ctx, plain)
		if err != nil {
			return mustRefuseKey(plain)(s) // refused outright is fine too
		}
		if _, disabled, err := s.Balance(id.AccountID); err != nil || !disabled {
			return fmt.Errorf("Balance: disabled %v, %v", disabled, err)
		}
		if _, err := s.ReserveFor(id, NanoPerUnit); !errors.Is(err, ErrAccountDisabled) && !errors.Is(err, ErrUnavailable) {
			return fmt.Errorf("ReserveFor: %v", err)
		}
		return nil
	})
}

// TestClusterListenerKilled: with its LISTEN connection cut, an instance
// still applies changes by polling, within the rule, and listens again.
func TestClusterListenerKilled(t *testing.T) {
	ctx := context.Background()
	dsn, st := openInstances(t, 2, testCluster(-1))
	a, b := st[0], st[1]
	if _, err := a.CreateAccount(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	k, plain, err := a.CreateKey(ctx, "acme", "k", KeyPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { _, err := b.Authenticate(ctx, plain); return err == nil })
	waitFor(t, 5*time.Second, func() bool { return b.cluster.listenerPID.Load() != 0 })
	pid := b.cluster.listenerPID.Load()
	if err := pgtest.Shared(t).ExecIn(ctx, pgtest.DatabaseName(dsn), `SELECT pg_terminate_backend($1)`, int32(pid)); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	refusedAfter(t, time.Now(), []*Store{b}, "deleted key, listener cut", mustRefuseKey(plain))
	waitFor(t, 5*time.Second, func() bool { p := b.cluster.listenerPID.Load(); return p != 0 && p != pid })
}

// TestClusterTopUpSpendableElsewhere: an account with nothing left is
// refused on one instance, topped up on another, and admitted on the first
// within the revocation bound.
func TestClusterTopUpSpendableElsewhere(t *testing.T) {
	for _, lease := range []int64{0, -1} {
		t.Run(fmt.Sprintf("lease=%d", lease), func(t *testing.T) {
			ctx := context.Background()
			_, st := openInstances(t, 2, testCluster(lease))
			a, b := st[0], st[1]
			if _, err := a.CreateAccount(ctx, "acme", ""); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, func() bool { _, _, err := b.Balance("acme"); return err == nil })
			if _, err := b.ReserveFor(Identity{AccountID: "acme"}, 1); !errors.Is(err, ErrInsufficientBalance) {
				t.Fatalf("empty account: %v", err)
			}
			if _, _, err := a.AdjustBalance(ctx, "acme", NanoPerUnit, "top-up"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(defaultRevocationStaleness)
			h, err := b.ReserveFor(Identity{AccountID: "acme"}, NanoPerUnit/2)
			if err != nil {
				t.Fatalf("after the top-up on the other instance: %v", err)
			}
			if _, err := h.Settle(Charge{Cost: NanoPerUnit / 2}); err != nil {
				t.Fatal(err)
			}
			for _, s := range st {
				if err := s.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			// admin views agree, and balance == ledger
			for i, s := range st {
				acct, err := s.Account(ctx, "acme")
				if err != nil {
					t.Fatal(err)
				}
				sum, err := s.LedgerSum(ctx, "acme")
				if err != nil {
					t.Fatal(err)
				}
				if acct.Balance != NanoPerUnit/2 || sum != acct.Balance {
					t.Errorf("instance %d: balance %d, ledger %d, want %d", i, acct.Balance, sum, NanoPerUnit/2)
				}
			}
		})
	}
}

// TestClusterOverdraftBound: concurrent requests spread over three
// instances on a tiny balance, with costs beyond their holds now and then.
// The final balance respects the stated bound: in exact mode
// >= -(largest cost) - Σ overruns, in lease mode >= -k × (largest cost) -
// Σ overruns with k = 3; and balance == sum(ledger).
func TestClusterOverdraftBound(t *testing.T) {
	for _, lease := range []int64{0, NanoPerUnit / 100} {
		t.Run(fmt.Sprintf("lease=%d", lease), func(t *testing.T) {
			ctx := context.Background()
			_, st := openInstances(t, 3, testCluster(lease))
			if _, err := st[0].CreateAccount(ctx, "tiny", ""); err != nil {
				t.Fatal(err)
			}
			const start = NanoPerUnit / 10
			if _, _, err := st[0].AdjustBalance(ctx, "tiny", start, "top-up"); err != nil {
				t.Fatal(err)
			}
			for _, s := range st {
				waitFor(t, 5*time.Second, func() bool { _, _, err := s.Balance("tiny"); return err == nil })
			}
			var (
				mu       sync.Mutex
				largest  int64
				overruns int64
				charged  int64
				admitted atomic.Int64
			)
			var wg sync.WaitGroup
			for w := range 24 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(w), 7))
					s := st[w%len(st)]
					for range 40 {
						hold := int64(r.IntN(int(NanoPerUnit/50))) + 1
						h, err := s.ReserveFor(Identity{AccountID: "tiny"}, hold)
						if err != nil {
							if !errors.Is(err, ErrInsufficientBalance) {
								t.Error(err)
								return
							}
							continue
						}
						admitted.Add(1)
						cost := hold - int64(r.IntN(int(hold)))
						if r.IntN(5) == 0 {
							cost = hold + int64(r.IntN(int(hold))) // an overrun
						}
						time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
						if _, err := h.Settle(Charge{Cost: cost}); err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						largest = max(largest, cost)
						overruns += max(cost-hold, 0)
						charged += cost
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			for _, s := range st {
				if err := s.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			acct, err := st[1].Account(ctx, "tiny")
			if err != nil {
				t.Fatal(err)
			}
			sum, err := st[2].LedgerSum(ctx, "tiny")
			if err != nil {
				t.Fatal(err)
			}
			if acct.Balance != sum || acct.Balance != start-charged {
				t.Fatalf("balance %d, ledger %d, want %d", acct.Balance, sum, start-charged)
			}
			k := int64(1)
			if lease > 0 {
				k = int64(len(st))
			}
			bound := -k*largest - overruns
			t.Logf("admitted %d, charged %d of %d, final balance %d, bound %d", admitted.Load(), charged, start, acct.Balance, bound)
			if acct.Balance < bound {
				t.Fatalf("final balance %d below the bound %d (k %d, largest %d, overruns %d)", acct.Balance, bound, k, largest, overruns)
			}
			if admitted.Load() == 0 {
				t.Fatal("nothing was admitted")
			}
		})
	}
}

// TestClusterPostgresDownUnderLoad: PostgreSQL stopped abruptly (pg_ctl
// stop -m immediate) while two instances admit and settle requests. The
// instances refuse with ErrUnavailable (the gateway's 503
// store_unavailable) once their feed is stale, and serve again by
// themselves when PostgreSQL is back; every settled charge is in the
// ledger exactly once and the balance equals the ledger.
func TestClusterPostgresDownUnderLoad(t *testing.T) {
	ctx := context.Background()
	pg := pgtest.Shared(t)
	_, st := openInstances(t, 2, testCluster(NanoPerUnit/10))
	a := st[0]
	if _, err := a.CreateAccount(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	const start = 1000 * NanoPerUnit
	if _, _, err := a.AdjustBalance(ctx, "acme", start, "top-up"); err != nil {
		t.Fatal(err)
	}
	_, plain, err := a.CreateKey(ctx, "acme", "k", KeyPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		waitFor(t, 5*time.Second, func() bool { _, err := s.Authenticate(ctx, plain); return err == nil })
	}

	var (
		settled     atomic.Int64 // charges settled
		charged     atomic.Int64 // their sum
		unavailable atomic.Int64 // refusals while PostgreSQL was down
		stop        = make(chan struct{})
		wg          sync.WaitGroup
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := st[w%2]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id, err := s.Authenticate(ctx, plain)
				if err == nil {
					var h *Hold
					if h, err = s.ReserveFor(id, NanoPerUnit/100); err == nil {
						cost := int64(1000 + w*10 + i%7)
						if _, err := h.Settle(Charge{Cost: cost, KeyID: id.KeyID}); err != nil {
							t.Error(err)
							return
						}
						settled.Add(1)
						charged.Add(cost)
						continue
					}
				}
				if errors.Is(err, ErrUnknownKey) || errors.Is(err, ErrExpiredKey) || errors.Is(err, ErrInsufficientBalance) {
					t.Errorf("instance %d: %v", w%2, err)
					return
				}
				// Refused because PostgreSQL is down: ErrUnavailable
				// (stale feed, failed lease), ErrBacklog, or a key
				// lookup that failed; the gateway answers 503.
				unavailable.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	waitFor(t, 10*time.Second, func() bool { return settled.Load() > 2000 })
	if err := pg.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Start() })
	// Both instances fail closed once the bound has passed.
	time.Sleep(defaultRevocationStaleness + 200*time.Millisecond)
	for i, s := range st {
		if _, err := s.Authenticate(ctx, plain); !errors.Is(err, ErrUnavailable) {
			t.Errorf("instance %d with PostgreSQL down: Authenticate: %v", i, err)
		}
		if _, err := s.ReserveFor(Identity{AccountID: "acme"}, 1); !errors.Is(err, ErrUnavailable) {
			t.Errorf("instance %d with PostgreSQL down: ReserveFor: %v", i, err)
		}
	}
	down := settled.Load()
	time.Sleep(300 * time.Millisecond)
	if settled.Load() != down {
		t.Errorf("%d requests admitted with PostgreSQL down past the bound", settled.Load()-down)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	// Back by themselves.
	waitFor(t, 30*time.Second, func() bool { return settled.Load() > down+200 })
	close(stop)
	wg.Wait()
	if unavailable.Load() == 0 {
		t.Error("no request was refused while PostgreSQL was down")
	}
	for _, s := range st {
		fctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := s.Flush(fctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	acct, err := st[1].Account(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	sum, err := a.LedgerSum(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	rows := queryInt(t, a.r, `SELECT count(*) FROM ledger WHERE kind = 'usage'`)
	t.Logf("settled %d (%d before the bound passed), refused %d while down", settled.Load(), down, unavailable.Load())
	if acct.Balance != sum || acct.Balance != start-charged.Load() || rows != settled.Load() {
		t.Fatalf("balance %d, ledger %d, want %d; %d usage rows for %d settled charges",
			acct.Balance, sum, start-charged.Load(), rows, settled.Load())
	}
}

// TestClusterSpendLimitBound: a key's spend limit holds across three
// instances spending concurrently with overruns: the committed spend of the
// lineage ends at most one request plus overruns past the limit (the
// single-instance bound: limits are leased per request), KeySpend agrees on
// every instance, and a limit raised on one instance admits again on the
// others within the revocation bound.
func TestClusterSpendLimitBound(t *testing.T) {
	ctx := context.Background()
	_, st := openInstances(t, 3, testCluster(-1))
	if _, err := st[0].CreateAccount(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st[0].AdjustBalance(ctx, "acme", 1000*NanoPerUnit, "top-up"); err != nil {
		t.Fatal(err)
	}
	const limit = NanoPerUnit / 10
	k, plain, err := st[0].CreateKey(ctx, "acme", "limited", KeyPolicy{SpendLimit: &SpendLimit{Amount: limit, Period: PeriodDay}})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]Identity, len(st))
	for i, s := range st {
		waitFor(t, 5*time.Second, func() bool { _, err := s.Authenticate(ctx, plain); return err == nil })
		if ids[i], err = s.Authenticate(ctx, plain); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, func() bool { _, _, _, ok := s.KeySpend(ctx, k.ID); return ok })
	}
	var (
		mu                          sync.Mutex
		largest, overruns, charged  int64
		admitted, refusedByTheLimit atomic.Int64
		wg                          sync.WaitGroup
	)
	for w := range 18 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 11))
			i := w % len(st)
			for range 30 {
				hold := int64(r.IntN(int(limit/20))) + 1
				h, err := st[i].ReserveFor(ids[i], hold)
				if err != nil {
					if !errors.Is(err, ErrKeyLimitExceeded) {
						t.Error(err)
						return
					}
					refusedByTheLimit.Add(1)
					continue
				}
				admitted.Add(1)
				cost := hold - int64(r.IntN(int(hold)))
				if r.IntN(5) == 0 {
					cost = hold + int64(r.IntN(int(hold)))
				}
				if _, err := h.Settle(Charge{Cost: cost, KeyID: ids[i].KeyID}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				largest, overruns, charged = max(largest, cost), overruns+max(cost-hold, 0), charged+cost
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, s := range st {
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("admitted %d, refused by the limit %d, charged %d of a limit of %d (largest %d, overruns %d)",
		admitted.Load(), refusedByTheLimit.Load(), charged, limit, largest, overruns)
	if refusedByTheLimit.Load() == 0 {
		t.Fatal("the limit never refused anything")
	}
	if charged > limit+largest+overruns {
		t.Fatalf("charged %d past the bound %d", charged, limit+largest+overruns)
	}
	for i, s := range st {
		spent, _, _, ok := s.KeySpend(ctx, k.ID)
		if !ok || spent != charged {
			t.Errorf("instance %d: KeySpend %d (%v), want %d", i, spent, ok, charged)
		}
	}
	// Raised on one instance, admitted on the others.
	raised := SpendLimit{Amount: 10 * NanoPerUnit, Period: PeriodDay}
	if _, err := st[0].UpdateKey(ctx, k.ID, KeyUpdate{SetSpendLimit: true, SpendLimit: &raised}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(defaultRevocationStaleness)
	for i, s := range st[1:] {
		h, err := s.ReserveFor(ids[i+1], 1)
		if err != nil {
			t.Fatalf("instance %d after the limit was raised: %v", i+1, err)
		}
		h.Release()
	}
}

// TestClusterLeasePressure: an instance that holds the whole balance of an
// account as an unused lease gives it back when another instance finds
// nothing free, well before the lease would go back for idleness.
func TestClusterLeasePressure(t *testing.T) {
	ctx := context.Background()
	_, st := openInstances(t, 2, testCluster(NanoPerUnit))
	a, b := st[0], st[1]
	if _, err := a.CreateAccount(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.AdjustBalance(ctx, "acme", NanoPerUnit, "top-up"); err != nil {
		t.Fatal(err)
	}
	h, err := a.ReserveFor(Identity{AccountID: "acme"}, NanoPerUnit/100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Settle(Charge{Cost: NanoPerUnit / 100}); err != nil {
		t.Fatal(err)
	}
	// a leased the whole balance: b finds nothing free, asks a to give
	// its unused lease back and waits for it, so its first request is
	// admitted (an outsider saw requests refused while the balance sat
	// unused in another instance's lease), long before a's lease would
	// go back for idleness.
	start := time.Now()
	h, err = b.ReserveFor(Identity{AccountID: "acme"}, NanoPerUnit/100)
	if err != nil {
		t.Fatalf("b while a holds the whole balance unused: %v", err)
	}
	h.Release()
	if d := time.Since(start); d >= leaseIdle {
		t.Fatalf("b got a lease after %s, not before a's lease went back for idleness", d)
	}
}

// TestClusterConcurrentPrune: two instances pruning the same ledger at the
// same time carry every row forward once: balance == carried + sum(ledger).
func TestClusterConcurrentPrune(t *testing.T) {
	ctx := context.Background()
	_, st := openInstances(t, 2, testCluster(-1))
	if _, err := st[0].CreateAccount(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st[0].AdjustBalance(ctx, "acme", 100*NanoPerUnit, "top-up"); err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		waitFor(t, 5*time.Second, func() bool { _, _, err := s.Balance("acme"); return err == nil })
		for i := range 3 * pruneBatchRows / 2 {
			h, err := s.ReserveFor(Identity{AccountID: "acme"}, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.Settle(Charge{Cost: int64(1 + i%10)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var pruned [2]int64
	for i, s := range st {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := s.PruneLedger(ctx, time.Now().Add(2*time.Hour))
			if err != nil {
				t.Error(err)
			}
			pruned[i] = n
		}()
	}
	wg.Wait()
	acct, err := st[0].Account(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	sum, err := st[1].LedgerSum(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	total := pruned[0] + pruned[1]
	t.Logf("pruned %d + %d rows", pruned[0], pruned[1])
	if total != 1+3*pruneBatchRows || acct.Balance != sum {
		t.Fatalf("pruned %d rows, want %d; balance %d, carried + ledger %d", total, 1+3*pruneBatchRows, acct.Balance, sum)
	}
}

// TestClusterConcurrentOpen: instances starting together on an empty
// database create the schema and the cluster tables once, and all serve.
func TestClusterConcurrentOpen(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	const n = 3
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = Open(context.Background(), Options{Path: dsn, Cluster: testCluster(-1)})
		}()
	}
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("instance %d: %v", i, errs[i])
		}
		t.Cleanup(func() { s.Close() })
	}
	if v := queryInt(t, stores[0].r, `SELECT max(version) FROM aigw_cluster_schema`); v != int64(len(clusterMigrations)) {
		t.Fatalf("cluster schema version %d, want %d", v, len(clusterMigrations))
	}
	if _, err := stores[1].CreateAccount(context.Background(), "acme", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { _, _, err := stores[2].Balance("acme"); return err == nil })
}

// TestClusterNewerSchemaRefused: a database whose cluster tables a newer
// release migrated is refused rather than misread.
func TestClusterNewerSchemaRefused(t *testing.T) {
	dsn, st := openInstances(t, 1, testCluster(-1))
	if _, err := st[0].r.Exec(`UPDATE aigw_cluster_schema SET version = 99`); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), Options{Path: dsn, Cluster: testCluster(-1)})
	if err == nil {
		s.Close()
		t.Fatal("opened a database with a newer cluster schema")
	}
	if !strings.Contains(err.Error(), "newer than this build") {
		t.Fatalf("error %v", err)
	}
}

// TestClusterManyAccountsBatches: two instances charging twenty accounts
// concurrently (batches touching many accounts, in both orders): every
// balance equals its ledger and what was charged, and balance_after chains
// per account across the instances' rows.
func TestClusterManyAccountsBatches(t *testing.T) {
	ctx := context.Background()
	_, st := openInstances(t, 2, testCluster(-1))
	const accounts = 20
	for i := range accounts {
		id := fmt.Sprintf("a%02d", i)
		if _, err := st[0].CreateAccount(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st[0].AdjustBalance(ctx, id, 100*NanoPerUnit, "top-up"); err != nil {
			t.Fatal(err)
		}
	}
	var charged [accounts]atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := st[w%2]
			for i := range 300 {
				n := (i*7 + w*3) % accounts
				if w%2 == 1 {
					n = accounts - 1 - n
				}
				h, err := s.ReserveFor(Identity{AccountID: fmt.Sprintf("a%02d", n)}, 1000)
				if err != nil {
					t.Error(err)
					return
				}
				cost := int64(1 + (i+w)%50)
				if _, err := h.Settle(Charge{Cost: cost}); err != nil {
					t.Error(err)
					return
				}
				charged[n].Add(cost)
			}
		}()
	}
	wg.Wait()
	for _, s := range st {
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := range accounts {
		id := fmt.Sprintf("a%02d", i)
		acct, err := st[i%2].Account(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		sum, err := st[0].LedgerSum(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if want := 100*NanoPerUnit - charged[i].Load(); acct.Balance != want || sum != want {
			t.Errorf("%s: balance %d, ledger %d, want %d", id, acct.Balance, sum, want)
		}
	}
	if breaks := queryInt(t, st[0].r, `SELECT count(*) FROM (SELECT balance_after - amount - lag(balance_after, 1, 0) OVER (PARTITION BY account_id ORDER BY id) AS d
		FROM ledger) x WHERE d <> 0`); breaks != 0 {
		t.Errorf("%d ledger rows whose balance_after does not follow the previous row of their account", breaks)
	}
}
