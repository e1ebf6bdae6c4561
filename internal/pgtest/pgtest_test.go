package pgtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestDatabaseRestartAndTerminate checks the helper itself: a fresh
// database per call, data surviving an immediate stop and a start, and
// terminated connections failing.
func TestDatabaseRestartAndTerminate(t *testing.T) {
	ctx := context.Background()
	c := Shared(t)
	a, b := NewDatabase(t), NewDatabase(t)
	if a == b {
		t.Fatalf("two databases with one URL %s", a)
	}
	conn, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE x (v bigint); INSERT INTO x VALUES (42)`); err != nil {
		t.Fatal(err)
	}
	var fsync string
	if err := conn.QueryRow(ctx, `SHOW fsync`).Scan(&fsync); err != nil || fsync != "off" {
		t.Fatalf("fsync = %q (%v), want off", fsync, err)
	}
	n, err := c.TerminateBackends(ctx, DatabaseName(a))
	if err != nil || n != 1 {
		t.Fatalf("TerminateBackends = %d, %v; want 1 connection cut", n, err)
	}
	if _, err := conn.Exec(ctx, `SELECT 1`); err == nil {
		t.Fatal("a terminated connection still answers")
	}
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	conn2, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close(ctx)
	var v int64
	if err := conn2.QueryRow(ctx, `SELECT v FROM x`).Scan(&v); err != nil || v != 42 {
		t.Fatalf("after restart: %d, %v", v, err)
	}
	conn3, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer conn3.Close(ctx)
	if err := conn3.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = 'x'`).Scan(&v); err != nil || v != 0 {
		t.Fatalf("the second database is not fresh: %d tables x, %v", v, err)
	}
}
