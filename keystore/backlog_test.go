package keystore

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var errInjectedDisk = errors.New("injected disk failure")

// failingCommits returns a CommitHook that fails while *on is set.
func failingCommits(on *atomic.Bool) func() error {
	return func() error {
		if on.Load() {
			return errInjectedDisk
		}
		return nil
	}
}

// TestBacklogStopsAdmissionAndDrains: while commits fail, every settled
// charge is kept, the failures are reported with the growing backlog, and
// once the backlog passes MaxPendingWrites no new request is admitted. When
// the disk recovers the backlog drains by itself, admission resumes, and
// every settled request has exactly one usage row.
func TestBacklogStopsAdmissionAndDrains(t *testing.T) {
	var failing atomic.Bool
	var log errorLog
	s := openTemp(t, Options{
		MaxPendingWrites: 10,
		MaxPendingAge:    -1,
		CommitHook:       failingCommits(&failing),
		OnWriteError:     log.add,
	})
	accounts := []string{"acme", "beta"}
	for _, a := range accounts {
		mustAccount(t, s, a, "100")
	}
	const n = 40
	holds := make([]*Hold, n)
	for i := range holds {
		holds[i] = mustReserve(t, s, accounts[i%2], nano(t, "1"))
	}
	settle := func(from, to int) {
		var wg sync.WaitGroup
		for i := from; i < to; i++ {
			wg.Go(func() {
				if _, err := holds[i].Settle(Charge{Cost: nano(t, "0.5"), RequestID: fmt.Sprintf("req-%d", i)}); err != nil {
					t.Errorf("Settle %d: %v", i, err)
				}
			})
		}
		wg.Wait()
	}
	maxReported := func() int {
		log.mu.Lock()
		defer log.mu.Unlock()
		m := 0
		for _, p := range log.pending {
			m = max(m, p)
		}
		return m
	}

	failing.Store(true)
	settle(0, 5)
	waitUntil(t, "a write error with 5 pending", func() bool { return maxReported() == 5 })
	if err := s.WriteBacklog(); err != nil {
		t.Fatalf("WriteBacklog with 5 of at most 10 pending: %v", err)
	}
	if _, err := s.ReserveFor(Identity{AccountID: "acme"}, 1); err != nil {
		t.Fatalf("Reserve under the bound: %v", err)
	}
	// Holds admitted before the bound was passed still settle: their
	// charges are queued, never dropped.
	settle(5, n)
	waitUntil(t, "a write error with every row pending", func() bool { return maxReported() == n })
	log.mu.Lock()
	for i := 1; i < len(log.pending); i++ {
		if log.pending[i] < log.pending[i-1] {
			t.Errorf("reported pending counts shrink while nothing commits: %v", log.pending)
		}
	}
	if !errors.Is(log.errs[len(log.errs)-1], errInjectedDisk) {
		t.Errorf("reported error %v does not wrap the disk's", log.errs[len(log.errs)-1])
	}
	log.mu.Unlock()

	err := s.WriteBacklog()
	if !errors.Is(err, ErrBacklog) {
		t.Fatalf("WriteBacklog with %d pending: %v, want ErrBacklog", n, err)
	}
	for _, want := range []string{fmt.Sprint(n), "failing to commit", errInjectedDisk.Error()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("WriteBacklog error %q does not say %q", err, want)
		}
	}
	if _, err := s.ReserveFor(Identity{AccountID: "acme"}, 1); !errors.Is(err, ErrBacklog) {
		t.Fatalf("Reserve over the bound: %v, want ErrBacklog", err)
	}
	if _, err := s.ReserveFor(Identity{AccountID: "beta"}, 1); !errors.Is(err, ErrBacklog) {
		t.Fatalf("ReserveFor over the bound: %v, want ErrBacklog", err)
	}
	if s.OldestPendingAge() <= 0 {
		t.Fatalf("OldestPendingAge = %s with rows pending", s.OldestPendingAge())
	}

	failing.Store(false) // the disk recovers; nobody calls Flush
	waitUntil(t, "the backlog to drain", func() bool { return s.WriteBacklog() == nil && s.PendingWrites() == 0 })
	if age := s.OldestPendingAge(); age != 0 {
		t.Fatalf("OldestPendingAge = %s with nothing pending", age)
	}
	if _, err := s.ReserveFor(Identity{AccountID: "acme"}, 1); err != nil {
		t.Fatalf("Reserve after recovery: %v", err)
	}
	checkStore(t, s)
	if got := queryInt(t, s.r, `SELECT count(*) FROM ledger WHERE kind = 'usage'`); got != n {
		t.Fatalf("%d usage rows, want %d", got, n)
	}
	if got := queryInt(t, s.r, `SELECT count(DISTINCT request_id) FROM ledger WHERE kind = 'usage'`); got != n {
		t.Fatalf("%d distinct requests in the ledger, want %d", got, n)
	}
	for _, a := range accounts {
		if b, _, _ := s.Balance(a); b != nano(t, "90") {
			t.Fatalf("balance of %s = %s, want 90", a, FormatAmount(b))
		}
	}
}

// TestBacklogAgeBound: one charge that cannot commit for longer than
// MaxPendingAge is enough to stop admission.
func TestBacklogAgeBound(t *testing.T) {
	var failing atomic.Bool
	s := openTemp(t, Options{MaxPendingWrites: -1, MaxPendingAge: 50 * time.Millisecond, CommitHook: failingCommits(&failing)})
	mustAccount(t, s, "acme", "10")
	failing.Store(true)
	settleOne(t, s, "acme", Charge{Cost: nano(t, "1")})
	waitUntil(t, "the oldest row to age", func() bool { return s.OldestPendingAge() > 50*time.Millisecond })
	if err := s.WriteBacklog(); !errors.Is(err, ErrBacklog) {
		t.Fatalf("WriteBacklog with a row pending for %s: %v, want ErrBacklog", s.OldestPendingAge(), err)
	}
	if _, err := s.ReserveFor(Identity{AccountID: "acme"}, 1); !errors.Is(err, ErrBacklog) {
		t.Fatalf("Reserve: %v, want ErrBacklog", err)
	}
	failing.Store(false)
	waitUntil(t, "the backlog to drain", func() bool { return s.WriteBacklog() == nil })
	if age := s.OldestPendingAge(); age != 0 {
		t.Fatalf("OldestPendingAge = %s after the drain", age)
	}
	checkStore(t, s)
}
