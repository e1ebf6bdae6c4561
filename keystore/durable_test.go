package keystore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitCommittedSharesGroupCommit: many requests settling at once and
// each waiting for its own row: when each wait returns, that row is in the
// database; the rows were committed in far fewer transactions than rows,
// and the writer did not sit out its (here very long) CommitInterval while
// someone waited.
func TestWaitCommittedSharesGroupCommit(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{
		CommitInterval: time.Hour,
		// every commit takes as long as a slow fsync
		CommitHook: func() error { time.Sleep(2 * time.Millisecond); return nil },
	})
	mustAccount(t, s, "acme", "1000")
	// one commit now, so that the next batch would wait the full interval
	settleOne(t, s, "acme", Charge{Cost: 1})
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	batches := s.batches.Load()

	const n = 200
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			h, err := s.ReserveFor(Identity{AccountID: "acme"}, NanoPerUnit)
			if err != nil {
				t.Error(err)
				return
			}
			<-start
			req := fmt.Sprintf("req-%d", i)
			e, err := h.Settle(Charge{Cost: NanoPerUnit, RequestID: req})
			if err != nil {
				t.Error(err)
				return
			}
			// Far less than CommitInterval: the writer must not pause
			// while rows are waited for.
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := s.WaitCommitted(wctx, e); err != nil {
				t.Errorf("WaitCommitted: %v", err)
				return
			}
			var rows int
			if err := s.r.QueryRow(`SELECT count(*) FROM ledger WHERE request_id = ?`, req).Scan(&rows); err != nil || rows != 1 {
				t.Errorf("%s: %d committed rows when WaitCommitted returned (%v)", req, rows, err)
			}
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	used := s.batches.Load() - batches
	t.Logf("%d settle+wait in %s, %d batches", n, time.Since(began), used)
	if used > n/4 {
		t.Fatalf("%d rows waited for took %d batches: no group commit", n, used)
	}
	checkStore(t, s)
}

func TestWaitCommittedEdges(t *testing.T) {
	ctx := context.Background()
	var failing atomic.Bool
	s := openTemp(t, Options{CommitHook: failingCommits(&failing)})
	mustAccount(t, s, "acme", "10")

	// entries that are committed already
	_, adj, err := s.AdjustBalance(ctx, "acme", 1, "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitCommitted(ctx, adj); err != nil {
		t.Fatalf("WaitCommitted(adjustment): %v", err)
	}
	if err := s.WaitCommitted(ctx, LedgerEntry{}); err != nil {
		t.Fatalf("WaitCommitted(zero entry): %v", err)
	}

	// a row that cannot commit: the wait ends with ctx
	failing.Store(true)
	e := settleOne(t, s, "acme", Charge{Cost: 1})
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := s.WaitCommitted(short, e); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitCommitted while commits fail: %v, want DeadlineExceeded", err)
	}
	failing.Store(false)
	if err := s.WaitCommitted(ctx, e); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitCommitted(ctx, e); err != nil {
		t.Fatalf("WaitCommitted after Close for a committed row: %v", err)
	}
}
