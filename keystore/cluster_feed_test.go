package keystore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/metask/caddy-ai-gateway/internal/pgtest"
)

// recordingApplier records what the feed applies.
type recordingApplier struct {
	mu     sync.Mutex
	seen   []feedRow
	resets int
}

func (r *recordingApplier) applyChanges(_ context.Context, cs []feedRow) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, cs...)
	return nil
}

func (r *recordingApplier) resetCaches(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resets++
	return nil
}

func (r *recordingApplier) pressure(string) {}

func (r *recordingApplier) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// TestChangeFeedOrderAndDelivery: changes appended by concurrent
// transactions on several connections are all delivered, once each, in seq
// order, and a rolled-back one never; a killed listener delays nothing
// beyond the poll interval, and it comes back.
func TestChangeFeedOrderAndDelivery(t *testing.T) {
	cl := pgtest.Shared(t)
	dsn := cl.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	rec := &recordingApplier{}
	c, err := startCluster(ctx, pool, ClusterOptions{PollInterval: 50 * time.Millisecond, RevocationStaleness: 500 * time.Millisecond}, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	// a second migrate is a no-op
	if err := clusterMigrate(ctx, pool); err != nil {
		t.Fatal(err)
	}

	appendIn := func(commit bool, kind, account, key string, hashes ...[32]byte) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		// a row change before, as administrative transactions make
		if _, err := tx.ExecContext(ctx, `SELECT 1`); err != nil {
			return err
		}
		if err := appendChange(ctx, tx, kind, account, key, hashes); err != nil {
			return err
		}
		if !commit {
			return nil
		}
		return tx.Commit()
	}
	const writers, each = 4, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("k%d_%d", w, i)
				if err := appendIn(true, "key", "a", id, HashKey(id)); err != nil {
					t.Error(err)
					return
				}
				if err := appendIn(false, "account", "rolled-back", ""); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := appendIn(true, "account", "a", "", [][32]byte{}...); err != nil {
		t.Fatal(err)
	}
	want := writers*each + 1
	waitFor(t, 5*time.Second, func() bool { return rec.count() >= want })
	time.Sleep(100 * time.Millisecond) // nothing more may come
	rec.mu.Lock()
	seen := append([]feedRow(nil), rec.seen...)
	rec.mu.Unlock()
	if len(seen) != want {
		t.Fatalf("applied %d changes, want %d", len(seen), want)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].seq <= seen[i-1].seq {
			t.Fatalf("change %d has seq %d after %d", i, seen[i].seq, seen[i-1].seq)
		}
	}
	if last := seen[len(seen)-1]; last.kind != "account" || last.accountID != "a" {
		t.Fatalf("last change %+v", last)
	}
	if h := HashKey(seen[0].keyID); seen[0].kind != "key" || string(seen[0].keyHash) != string(h[:]) {
		t.Fatalf("first change %+v", seen[0])
	}
	if err := c.check(); err != nil {
		t.Fatalf("fresh feed: %v", err)
	}

	// Kill the listener: the poll alone still delivers.
	waitFor(t, 5*time.Second, func() bool { return c.listenerPID.Load() != 0 })
	pid := c.listenerPID.Load()
	if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, int32(pid)); err != nil {
		t.Fatal(err)
	}
	if err := appendIn(true, "key", "a", "k0_0", HashKey("k0_0")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return rec.count() == want+1 })
	// and the listener comes back with a new connection
	waitFor(t, 5*time.Second, func() bool { p := c.listenerPID.Load(); return p != 0 && p != pid })
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
