package keystore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/metask/caddy-ai-gateway/internal/pgtest"
)

// recordingApplier records what the feed applies.
type recordingApplier struct {
	mu     sync.Mutex
	seen   []change
	resets int
}

func (r *recordingApplier) applyChanges(_ context.Context, cs []change) error {
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

func (r *recordingApplier) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// feedTables are the columns of accounts and api_keys the triggers read.
const feedTables = `
CREATE TABLE accounts (id text PRIMARY KEY, name text NOT NULL, balance bigint NOT NULL DEFAULT 0,
	disabled boolean NOT NULL DEFAULT false, created_at bigint NOT NULL DEFAULT 0);
CREATE TABLE api_keys (id text PRIMARY KEY, account_id text NOT NULL, hash bytea NOT NULL, lineage text,
	name text NOT NULL DEFAULT '', last_used_at bigint, deleted_at bigint);`

func TestChangeFeedLockConstant(t *testing.T) {
	if got := fmt.Sprint(changeFeedLock); got != changeFeedLockSQL {
		t.Fatalf("changeFeedLockSQL = %s, want %s", changeFeedLockSQL, got)
	}
}

// TestChangeFeedOrderAndDelivery: concurrent administrative transactions on
// two connections are all delivered, once each, in seq order; last-used
// updates and balance updates are not; a killed listener delays nothing
// beyond the poll interval.
func TestChangeFeedOrderAndDelivery(t *testing.T) {
	cl := pgtest.Shared(t)
	dsn := cl.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, feedTables); err != nil {
		t.Fatal(err)
	}
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

	if _, err := pool.Exec(ctx, `INSERT INTO accounts (id, name) VALUES ('a', 'A')`); err != nil {
		t.Fatal(err)
	}
	const writers, each = 4, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("k%d_%d", w, i)
				if _, err := pool.Exec(ctx, `INSERT INTO api_keys (id, account_id, hash, lineage) VALUES ($1, 'a', $2, $1)`, id, []byte(id)); err != nil {
					t.Error(err)
					return
				}
				if _, err := pool.Exec(ctx, `UPDATE api_keys SET last_used_at = $2 WHERE id = $1`, id, i+1); err != nil {
					t.Error(err)
					return
				}
				if _, err := pool.Exec(ctx, `UPDATE accounts SET balance = balance + 1 WHERE id = 'a'`); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if _, err := pool.Exec(ctx, `UPDATE accounts SET disabled = true WHERE id = 'a'`); err != nil {
		t.Fatal(err)
	}
	want := 1 + writers*each + 1
	waitFor(t, 5*time.Second, func() bool { return rec.count() >= want })
	rec.mu.Lock()
	seen := append([]change(nil), rec.seen...)
	rec.mu.Unlock()
	if len(seen) != want {
		t.Fatalf("applied %d changes, want %d", len(seen), want)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].seq <= seen[i-1].seq {
			t.Fatalf("change %d has seq %d after %d", i, seen[i].seq, seen[i-1].seq)
		}
	}
	if seen[0].kind != "account" || seen[len(seen)-1].kind != "account" || seen[1].kind != "key" {
		t.Fatalf("kinds: first %s, second %s, last %s", seen[0].kind, seen[1].kind, seen[len(seen)-1].kind)
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
	if _, err := pool.Exec(ctx, `UPDATE api_keys SET deleted_at = 1 WHERE id = 'k0_0'`); err != nil {
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
