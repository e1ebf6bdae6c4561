package keystore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metask/caddy-ai-gateway/internal/pgtest"
)

// Fault injection and PostgreSQL-only tests. The contract tests run on
// PostgreSQL with AIGW_TEST_STORE=postgres (see tempDB); the tests here
// open PostgreSQL stores whatever that variable says, and skip only when
// PostgreSQL is not installed (failing instead with AIGW_REQUIRE_PG=1).

// failInserts makes every insert into table fail with msg, on either
// database, until dropFailInserts.
func failInserts(t *testing.T, s *Store, table, msg string) {
	t.Helper()
	q := `CREATE TRIGGER ` + table + `_fail BEFORE INSERT ON ` + table + ` BEGIN SELECT RAISE(ABORT, '` + msg + `'); END`
	if s.dialect == dialectPostgres {
		q = `CREATE FUNCTION ` + table + `_fail() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN RAISE EXCEPTION '` + msg + `'; END $$;
			CREATE TRIGGER ` + table + `_fail BEFORE INSERT ON ` + table + ` FOR EACH ROW EXECUTE FUNCTION ` + table + `_fail()`
	}
	if _, err := s.w.Exec(q); err != nil {
		t.Fatal(err)
	}
}

func dropFailInserts(t *testing.T, s *Store, table string) {
	t.Helper()
	q := `DROP TRIGGER ` + table + `_fail`
	if s.dialect == dialectPostgres {
		q = `DROP TRIGGER ` + table + `_fail ON ` + table + `; DROP FUNCTION ` + table + `_fail()`
	}
	if _, err := s.w.Exec(q); err != nil {
		t.Fatal(err)
	}
}

// failWritesPostgres is failWrites on PostgreSQL: a trigger on the ledger
// that fails while the writer connection's session setting
// aigw.fail_writes is on (SQLite's version uses a temporary trigger of
// that connection).
func failWritesPostgres(t *testing.T, s *Store) func(on bool) {
	t.Helper()
	if _, err := s.w.Exec(`CREATE FUNCTION fail_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF current_setting('aigw.fail_writes', true) = 'on' THEN
				RAISE EXCEPTION 'injected write failure';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER fail_ledger BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION fail_ledger()`); err != nil {
		t.Fatal(err)
	}
	return func(on bool) {
		t.Helper()
		v := "off"
		if on {
			v = "on"
		}
		if _, err := s.w.Exec(`SET aigw.fail_writes = '` + v + `'`); err != nil {
			t.Fatal(err)
		}
	}
}

// pgDB returns a fresh PostgreSQL database (skipping without PostgreSQL).
func pgDB(t *testing.T) string {
	t.Helper()
	return pgtest.NewDatabase(t)
}

func TestMigrationListsMatch(t *testing.T) {
	if len(pgMigrations) != len(migrations) {
		t.Fatalf("%d SQLite migrations, %d PostgreSQL migrations: every migration needs its PostgreSQL twin in schema_pg.go",
			len(migrations), len(pgMigrations))
	}
	for i := range migrations {
		sn, _ := migrationPhases(migrations[i])
		pn, _ := migrationPhases(pgMigrations[i])
		if strings.Join(sn, "|") != strings.Join(pn, "|") {
			t.Errorf("migration %d: SQLite phases %q, PostgreSQL phases %q", i+1, sn, pn)
		}
	}
}

// Stores opening one new database together migrate it once: the others
// wait for the advisory lock and find it done.
func TestPostgresConcurrentOpensMigrateOnce(t *testing.T) {
	dsn := pgDB(t)
	ctx := context.Background()
	const n = 4
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		migrated int // "done" reports over all opens
		stores   []*Store
		errs     []error
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(ctx, Options{Path: dsn, OnMigrationProgress: func(p MigrationProgress) {
				if p.Phase == "done" {
					mu.Lock()
					migrated++
					mu.Unlock()
				}
			}})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			stores = append(stores, s)
		}()
	}
	wg.Wait()
	for _, s := range stores {
		defer s.Close()
	}
	if len(errs) > 0 {
		t.Fatalf("concurrent opens: %v", errors.Join(errs...))
	}
	if migrated != SchemaVersion() {
		t.Fatalf("%d migrations committed over %d opens, want %d (once each)", migrated, n, SchemaVersion())
	}
	if v := queryInt(t, stores[0].r, `SELECT count(*) FROM schema_migrations`); v != int64(SchemaVersion()) {
		t.Fatalf("%d rows in schema_migrations, want %d", v, SchemaVersion())
	}
	if stores[0].Backend() != "postgres" {
		t.Fatalf("Backend() = %q", stores[0].Backend())
	}
}

func TestBackupRefusedOnPostgres(t *testing.T) {
	s := openAt(t, pgDB(t), Options{})
	dest := filepath.Join(t.TempDir(), "b.db")
	err := s.Backup(context.Background(), dest)
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrBackupPostgres) || !strings.Contains(err.Error(), "pg_dump") {
		t.Fatalf("Backup on PostgreSQL: %v", err)
	}
}

func TestIsPostgresAndRedact(t *testing.T) {
	for _, c := range []struct {
		in       string
		pg       bool
		redacted string
	}{
		{"/var/lib/caddy/ai-gateway.db", false, "/var/lib/caddy/ai-gateway.db"},
		{"ai-gateway.db", false, "ai-gateway.db"},
		{"data/host=x.db", false, "data/host=x.db"},
		{"postgres://aigw:s3cret@db:5432/aigw?sslmode=verify-full", true, "postgres://aigw:xxxxx@db:5432/aigw?sslmode=verify-full"},
		{"PostgreSQL://aigw@db/aigw", true, "postgresql://aigw@db/aigw"},
		{"postgres://aigw@db/aigw?password=s3cret&sslmode=disable", true, "postgres://aigw@db/aigw?password=xxxxx&sslmode=disable"},
		{"host=db user=aigw password=s3cret dbname=aigw", true, "host=db user=aigw password=xxxxx dbname=aigw"},
		{"host=db password='s3 cr\\'et' dbname=aigw", true, "host=db password=xxxxx dbname=aigw"},
		// the client key's passphrase is a secret too, and so is a
		// password key in another letter case (libpq refuses it, but
		// an error would quote it)
		{"postgres://aigw@db/aigw?sslmode=verify-full&sslpassword=s3cret", true, "postgres://aigw@db/aigw?sslmode=verify-full&sslpassword=xxxxx"},
		{"host=db user=aigw sslpassword=s3cret dbname=aigw", true, "host=db user=aigw sslpassword=xxxxx dbname=aigw"},
		{"postgres://aigw@db/aigw?Password=s3cret", true, "postgres://aigw@db/aigw?Password=xxxxx"},
		{"HOST=db PASSWORD=s3cret", true, "HOST=db PASSWORD=xxxxx"},
	} {
		if got := IsPostgres(c.in); got != c.pg {
			t.Errorf("IsPostgres(%q) = %v", c.in, got)
		}
		got := RedactDatabase(c.in)
		if got != c.redacted {
			t.Errorf("RedactDatabase(%q) = %q, want %q", c.in, got, c.redacted)
		}
		if strings.Contains(got, "s3") {
			t.Errorf("RedactDatabase(%q) leaks the password: %q", c.in, got)
		}
	}
}

// An Open that fails (here: wrong password against a server that
// checks none is impossible, so an unknown database) names the database
// without its password.
func TestPostgresOpenErrorHidesPassword(t *testing.T) {
	dsn := pgDB(t)
	bad := strings.Replace(dsn, "postgres://postgres@/", "postgres://postgres:hunter2secret@/", 1)
	bad = strings.Replace(bad, "/t", "/missing_t", 1)
	_, err := Open(context.Background(), Options{Path: bad})
	if err == nil {
		t.Fatal("Open of a missing database succeeded")
	}
	if strings.Contains(err.Error(), "hunter2secret") {
		t.Fatalf("error leaks the password: %v", err)
	}
	if !strings.Contains(err.Error(), "xxxxx") {
		t.Fatalf("error does not name the database: %v", err)
	}
}

func TestRewritePlaceholders(t *testing.T) {
	for in, want := range map[string]string{
		`SELECT 1`:                                `SELECT 1`,
		`a = ? AND b = ?`:                         `a = $1 AND b = $2`,
		`a = ?1 OR b = ?1 AND c = ?2`:             `a = $1 OR b = $1 AND c = $2`,
		`x = '?' AND y = ? -- ? here` + "\n?":     `x = '?' AND y = $1 -- ? here` + "\n$2",
		`"we?ird" = ? /* ? */ AND z = ?3, ?`:      `"we?ird" = $1 /* ? */ AND z = $3, $4`,
		`'it''s ?' || ?`:                          `'it''s ?' || $1`,
		fmt.Sprintf("%s", `IN (?, ?, ?) LIMIT ?`): `IN ($1, $2, $3) LIMIT $4`,
	} {
		if got := rewritePlaceholders(in); got != want {
			t.Errorf("rewritePlaceholders(%q) = %q, want %q", in, got, want)
		}
	}
}

// While PostgreSQL is down, settled charges wait in memory, the failures
// are reported, and once the backlog passes its bound admission fails
// closed with ErrBacklog, as with a failing SQLite disk. When PostgreSQL
// is back the writer reconnects by itself, the backlog drains, and every
// charge is in the ledger once, balances equal to ledger sums.
func TestPostgresDownBacklogsAndRecovers(t *testing.T) {
	ctx := context.Background()
	cluster := pgtest.Shared(t)
	var log errorLog
	s := openAt(t, pgDB(t), Options{MaxPendingWrites: 5, MaxPendingAge: -1, OnWriteError: log.add})
	mustAccount(t, s, "acme", "100")
	const n = 10
	holds := make([]*Hold, n)
	for i := range holds {
		holds[i] = mustReserve(t, s, "acme", nano(t, "1"))
	}
	if err := cluster.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cluster.Start() })
	for i, h := range holds {
		if _, err := h.Settle(Charge{Cost: nano(t, "0.5"), RequestID: fmt.Sprintf("req-%d", i)}); err != nil {
			t.Fatalf("Settle %d with PostgreSQL down: %v", i, err)
		}
	}
	waitUntil(t, "a write error reported", func() bool { return log.len() > 0 })
	if err := s.WriteBacklog(); !errors.Is(err, ErrBacklog) {
		t.Fatalf("WriteBacklog with %d pending and PostgreSQL down: %v", s.PendingWrites(), err)
	}
	if _, err := s.ReserveFor(Identity{AccountID: "acme"}, nano(t, "1")); !errors.Is(err, ErrBacklog) {
		t.Fatalf("Reserve with PostgreSQL down: %v, want ErrBacklog", err)
	}
	if b, _, _ := s.Balance("acme"); b != nano(t, "95") {
		t.Fatalf("balance in memory %d, want 95 units (charges kept)", b)
	}
	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	flushCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := s.Flush(flushCtx); err != nil {
		t.Fatalf("Flush after PostgreSQL came back: %v", err)
	}
	if err := s.WriteBacklog(); err != nil {
		t.Fatalf("backlog after recovery: %v", err)
	}
	mustReserve(t, s, "acme", nano(t, "1")).Release()
	checkStore(t, s)
	if rows := queryInt(t, s.r, `SELECT count(*) FROM ledger WHERE kind = 'usage'`); rows != n {
		t.Fatalf("%d usage rows, want %d", rows, n)
	}
	// Admin changes work again too.
	if _, _, err := s.AdjustBalance(ctx, "acme", nano(t, "1"), "after recovery"); err != nil {
		t.Fatal(err)
	}
}

// TestIsUnavailable: a PostgreSQL that is down is "unavailable" (503 in the
// admin API and dashboard, not 500); the store's own refusals are not.
func TestIsUnavailable(t *testing.T) {
	cluster := pgtest.Shared(t)
	s := openAt(t, pgDB(t), Options{})
	mustAccount(t, s, "acme", "1")
	for _, err := range []error{ErrNotFound, ErrInvalid, ErrExists, ErrNotAllowed, nil} {
		if IsUnavailable(err) {
			t.Errorf("IsUnavailable(%v) = true", err)
		}
	}
	for _, err := range []error{ErrUnavailable, ErrBacklog, ErrClosed, fmt.Errorf("x: %w", ErrBacklog)} {
		if !IsUnavailable(err) {
			t.Errorf("IsUnavailable(%v) = false", err)
		}
	}
	if err := cluster.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cluster.Start() })
	_, err := s.CreateAccount(context.Background(), "other", "")
	if err == nil || !IsUnavailable(err) {
		t.Fatalf("CreateAccount with the server down: %v, IsUnavailable false", err)
	}
}

// TestNULBytes: PostgreSQL's text holds no NUL byte. A usage row whose
// model or request id carries one (they come from clients and providers)
// is stored with U+FFFD instead, so that it cannot block the ledger
// writer; an administrative input with one is refused as invalid (400),
// not failed as a database error (500), and writes nothing.
func TestNULBytes(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "1")
	h := mustReserve(t, s, "acme", 1000)
	e, err := h.Settle(Charge{Cost: 500, Model: "gpt\x00x", RequestID: "req\x00", Note: "n\x00"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitCommitted(ctx, e); err != nil {
		t.Fatalf("a usage row with NUL bytes: %v", err)
	}
	rows, err := s.Ledger(ctx, LedgerFilter{AccountID: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rows {
		if r.Model == "gpt\uFFFDx" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no row with model gpt\\uFFFDx in %+v", rows)
	}
	if s.dialect != dialectPostgres {
		return // SQLite stores NUL bytes: nothing more to refuse
	}
	if _, _, err := s.AdjustBalance(ctx, "acme", NanoPerUnit, "a\x00b"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("AdjustBalance with a NUL in its note: %v, want ErrInvalid", err)
	}
	if sum, err := s.LedgerSum(ctx, "acme"); err != nil || sum != NanoPerUnit-500 {
		t.Fatalf("ledger sum %d (%v) after the refused adjustment", sum, err)
	}
	if _, err := s.Audit(ctx, AuditFilter{Actor: "x\x00"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Audit filtered by a NUL: %v, want ErrInvalid", err)
	}
}
