package keystore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metask/caddy-ai-gateway/internal/pgtest"
)

// fakeClock is a goroutine-safe clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// openAt opens a store at path and closes it when the test ends.
func openAt(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	opts.Path = path
	s, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testOnPostgres is set when the tests run on PostgreSQL
// (AIGW_TEST_STORE=postgres; test.sh runs the package a second time so):
// tempDB then gives each test a fresh database on the test PostgreSQL
// server (internal/pgtest) instead of an SQLite file.
var testOnPostgres = os.Getenv("AIGW_TEST_STORE") == "postgres"

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// tempDB returns a fresh database for the test: an SQLite path in
// t.TempDir(), or on PostgreSQL the URL of a new, empty database.
func tempDB(t testing.TB) string {
	t.Helper()
	if testOnPostgres {
		return pgtest.NewDatabase(t)
	}
	return filepath.Join(t.TempDir(), "ks.db")
}

// testDialect is the dialect of the stores tempDB opens.
func testDialect() dialect {
	if testOnPostgres {
		return dialectPostgres
	}
	return dialectSQLite
}

// sqliteOnly skips a test of something only SQLite has when the tests run
// on PostgreSQL; why says what.
func sqliteOnly(t testing.TB, why string) {
	t.Helper()
	if testOnPostgres {
		t.Skip("SQLite only: " + why)
	}
}

func openTemp(t *testing.T, opts Options) *Store {
	t.Helper()
	return openAt(t, tempDB(t), opts)
}

func mustAccount(t *testing.T, s *Store, id, topup string) {
	t.Helper()
	if _, err := s.CreateAccount(context.Background(), id, ""); err != nil {
		t.Fatalf("CreateAccount(%s): %v", id, err)
	}
	if topup != "" {
		n, err := ParseAmount(topup)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.AdjustBalance(context.Background(), id, n, "top-up"); err != nil {
			t.Fatalf("AdjustBalance(%s): %v", id, err)
		}
	}
}

func mustKey(t *testing.T, s *Store, account, name string, expires ...*time.Time) (Key, string) {
	t.Helper()
	var exp *time.Time
	if len(expires) > 0 {
		exp = expires[0]
	}
	k, pt, err := s.CreateKey(context.Background(), account, name, KeyPolicy{ExpiresAt: exp})
	if err != nil {
		t.Fatalf("CreateKey(%s, %s): %v", account, name, err)
	}
	return k, pt
}

func queryInt(t *testing.T, db *sql.DB, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestOpenCloseReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "nested", "dir") // Open creates it
	path := filepath.Join(dir, "ks.db")

	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	mustAccount(t, s, "acme", "12.345")
	k, pt := mustKey(t, s, "acme", "prod")
	if _, err := s.Authenticate(ctx, pt); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Fatalf("database file mode %o, want 600", perm)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("database directory: %v, mode %o, want 700", err, st.Mode().Perm())
	}

	// Reopen twice: migrations are idempotent and data survives.
	for i := 0; i < 2; i++ {
		s2, err := Open(ctx, Options{Path: path})
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		if v := queryInt(t, s2.r, `PRAGMA user_version`); v != int64(SchemaVersion()) {
			t.Fatalf("user_version %d, want %d", v, SchemaVersion())
		}
		var mode string
		if err := s2.r.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
			t.Fatalf("journal_mode %q (%v), want wal", mode, err)
		}
		if n := queryInt(t, s2.r, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('accounts','api_keys','ledger')`); n != 3 {
			t.Fatalf("%d of the 3 tables exist", n)
		}
		bal, disabled, err := s2.Balance("acme")
		if err != nil || bal != 12_345_000_000 || disabled {
			t.Fatalf("Balance after reopen = %d, %v, %v", bal, disabled, err)
		}
		id, err := s2.Authenticate(ctx, pt)
		if err != nil || id.KeyID != k.ID || id.AccountID != "acme" || id.KeyName != "prod" {
			t.Fatalf("Authenticate after reopen = %+v, %v", id, err)
		}
		// migrating an up-to-date database again changes nothing
		if err := migrate(ctx, s2.w); err != nil {
			t.Fatalf("second migrate: %v", err)
		}
		if v := queryInt(t, s2.r, `PRAGMA user_version`); v != int64(SchemaVersion()) {
			t.Fatalf("user_version %d after re-migrate", v)
		}
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := tempDB(t)
	s, err := Open(context.Background(), Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	bump := fmt.Sprintf(`PRAGMA user_version = %d`, SchemaVersion()+1)
	if testOnPostgres {
		bump = fmt.Sprintf(`INSERT INTO schema_migrations (version, applied_at) VALUES (%d, 0)`, SchemaVersion()+1)
	}
	if _, err := s.w.Exec(bump); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(context.Background(), Options{Path: path})
	if err == nil {
		s2.Close()
		t.Fatal("Open accepted a database written by a newer schema")
	}
	if !strings.Contains(err.Error(), "newer") {
		t.Fatalf("unexpected error: %v", err)
	}
}

func TestOpenEmptyPath(t *testing.T) {
	if _, err := Open(context.Background(), Options{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Open with empty path: %v, want ErrInvalid", err)
	}
}

func TestCreateAccount(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	a, err := s.CreateAccount(ctx, "acme", "")
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != "acme" || a.Name != "acme" || a.Balance != 0 || a.Disabled {
		t.Fatalf("new account %+v", a)
	}
	if _, err := s.CreateAccount(ctx, "acme", "Other"); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v, want ErrExists", err)
	}
	if got, _ := s.Account(ctx, "acme"); got.Name != "acme" {
		t.Fatalf("duplicate create changed the name to %q", got.Name)
	}
	for _, bad := range []string{"", "Acme", "-acme", ".x", "a b", "ä", strings.Repeat("a", 65), "a/b"} {
		if _, err := s.CreateAccount(ctx, bad, "x"); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateAccount(%q): %v, want ErrInvalid", bad, err)
		}
	}
	for _, bad := range []string{"tab\tname", strings.Repeat("n", 129), "bell\x07"} {
		if _, err := s.CreateAccount(ctx, "ok-id", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateAccount name %q: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := s.CreateAccount(ctx, strings.Repeat("a", 64), "max"); err != nil {
		t.Fatalf("64-character id: %v", err)
	}
	if n := queryInt(t, s.r, `SELECT count(*) FROM accounts`); n != 2 {
		t.Fatalf("%d account rows, want 2", n)
	}
	if _, err := s.Account(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Account(nope): %v", err)
	}
}

func TestAdjustBalanceWritesLedgerInSameTx(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "")
	mustAccount(t, s, "other", "")

	var want int64
	for i, amt := range []string{"10.50", "-3.25", "0.000000001", "100", "-0.000000001", "-7.25"} {
		n, _ := ParseAmount(amt)
		a, e, err := s.AdjustBalance(ctx, "acme", n, fmt.Sprintf("step %d", i))
		if err != nil {
			t.Fatalf("AdjustBalance(%s): %v", amt, err)
		}
		want += n
		if a.Balance != want || e.BalanceAfter != want || e.Amount != n || e.Kind != KindAdjustment ||
			e.AccountID != "acme" || e.Note != fmt.Sprintf("step %d", i) || e.ID == 0 {
			t.Fatalf("after %s: account %+v entry %+v, want balance %d", amt, a, e, want)
		}
		// the ledger row is committed with the balance
		if got := queryInt(t, s.r, `SELECT balance_after FROM ledger WHERE id = ?`, e.ID); got != want {
			t.Fatalf("ledger row balance_after %d, want %d", got, want)
		}
	}
	sum, err := s.LedgerSum(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	stored, err := s.StoredBalance(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	mem, _, _ := s.Balance("acme")
	if sum != want || stored != want || mem != want {
		t.Fatalf("ledger sum %d, stored %d, memory %d, want all %d", sum, stored, mem, want)
	}
	if want != 100_000_000_000 {
		t.Fatalf("final balance %d, want 100.00", want)
	}
	if n := queryInt(t, s.r, `SELECT count(*) FROM ledger WHERE account_id = 'other'`); n != 0 {
		t.Fatalf("other account got %d ledger rows", n)
	}
}

func TestAdjustBalanceRefusalsWriteNothing(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "5")
	rows := func() int64 { return queryInt(t, s.r, `SELECT count(*) FROM ledger`) }
	before := rows()

	if _, _, err := s.AdjustBalance(ctx, "acme", 0, "nothing"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("zero amount: %v, want ErrInvalid", err)
	}
	if _, _, err := s.AdjustBalance(ctx, "ghost", 1, "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown account: %v, want ErrNotFound", err)
	}
	if n := queryInt(t, s.r, `SELECT count(*) FROM accounts WHERE id = 'ghost'`); n != 0 {
		t.Fatal("adjusting an unknown account created it")
	}
	limit := int64(maxAmountUnits) * NanoPerUnit
	if _, _, err := s.AdjustBalance(ctx, "acme", limit+1, "x"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("too large: %v, want ErrInvalid", err)
	}
	if _, _, err := s.AdjustBalance(ctx, "acme", 1, strings.Repeat("n", 1025)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("long note: %v, want ErrInvalid", err)
	}
	if got := rows(); got != before {
		t.Fatalf("refused adjustments wrote %d ledger rows", got-before)
	}
	if b, _ := s.StoredBalance(ctx, "acme"); b != 5*NanoPerUnit {
		t.Fatalf("stored balance %d changed", b)
	}

	// Overflow guard: 9e18 fits in int64, one more 1e18 does not.
	for i := 0; i < 9; i++ {
		if _, _, err := s.AdjustBalance(ctx, "acme", limit, "big"); err != nil {
			t.Fatalf("big top-up %d: %v", i, err)
		}
	}
	beforeOverflow, _, _ := s.Balance("acme")
	rowsBefore := rows()
	if _, _, err := s.AdjustBalance(ctx, "acme", limit, "overflow"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("overflowing top-up: %v, want ErrInvalid", err)
	}
	after, _, _ := s.Balance("acme")
	sum, _ := s.LedgerSum(ctx, "acme")
	if after != beforeOverflow || rows() != rowsBefore || sum != after {
		t.Fatalf("overflow refusal changed state: balance %d -> %d, ledger sum %d", beforeOverflow, after, sum)
	}
}

func TestCreateKeyPlaintextOnlyOnce(t *testing.T) {
	ctx := context.Background()
	path := tempDB(t)
	s := openAt(t, path, Options{})
	mustAccount(t, s, "acme", "1")
	k, pt := mustKey(t, s, "acme", "  prod app  ")

	if !strings.HasPrefix(pt, KeyPrefix) || len(pt) != len(KeyPrefix)+keyRandomLen || !LooksLikeKey(pt) {
		t.Fatalf("plaintext %q is not sk- + %d base62 characters", pt, keyRandomLen)
	}
	if !strings.HasPrefix(k.ID, "key_") || k.AccountID != "acme" || k.Name != "prod app" ||
		k.Hint != "sk-…"+pt[len(pt)-4:] || k.Status != "active" || k.LastUsedAt != nil || k.ExpiresAt != nil {
		t.Fatalf("key %+v", k)
	}
	_, pt2 := mustKey(t, s, "acme", "second")
	if pt2 == pt {
		t.Fatal("two keys with the same plaintext")
	}

	got, err := s.Key(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.Keys(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.Keys(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || len(all) != 2 || (list[0].ID != k.ID && list[1].ID != k.ID) {
		t.Fatalf("Keys: %+v / %+v", list, all)
	}
	if _, err := s.Keys(ctx, "ghost"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Keys(ghost): %v", err)
	}
	blob, _ := json.Marshal([]any{got, list, all})
	for _, secret := range []string{pt, pt[len(KeyPrefix):], pt2, pt2[len(KeyPrefix):], pt[3:20]} {
		if bytes.Contains(blob, []byte(secret)) {
			t.Fatalf("Key/Keys expose the plaintext: %s", blob)
		}
	}
	// only the SHA-256 is stored
	var h []byte
	if err := s.r.QueryRow(`SELECT hash FROM api_keys WHERE id = ?`, k.ID).Scan(&h); err != nil {
		t.Fatal(err)
	}
	if want := HashKey(pt); !bytes.Equal(h, want[:]) {
		t.Fatal("stored hash is not sha256(plaintext)")
	}
	s.Close()
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(pt[len(KeyPrefix):])) || bytes.Contains(b, []byte(pt2[len(KeyPrefix):])) {
			t.Fatalf("%s contains a plaintext key", f)
		}
	}

	// invalid input
	s = openAt(t, path, Options{})
	if _, _, err := s.CreateKey(ctx, "ghost", "k", KeyPolicy{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("CreateKey for unknown account: %v", err)
	}
	if _, _, err := s.CreateKey(ctx, "acme", "  ", KeyPolicy{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("CreateKey with empty name: %v", err)
	}
	past := time.Now().Add(-time.Minute)
	if _, _, err := s.CreateKey(ctx, "acme", "old", KeyPolicy{ExpiresAt: &past}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("CreateKey with past expiry: %v", err)
	}
	if n := queryInt(t, s.r, `SELECT count(*) FROM api_keys`); n != 2 {
		t.Fatalf("%d key rows, want 2 (refused creates wrote rows)", n)
	}
}

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	s := openTemp(t, Options{Now: clk.Now})
	mustAccount(t, s, "acme", "1")
	k, pt := mustKey(t, s, "acme", "prod")
	exp := clk.Now().Add(time.Hour)
	ek, ept := mustKey(t, s, "acme", "temp", &exp)
	if ek.ExpiresAt == nil || !ek.ExpiresAt.Equal(exp) {
		t.Fatalf("expiry %v, want %v", ek.ExpiresAt, exp)
	}

	// hit (twice: database, then cache)
	for i := 0; i < 2; i++ {
		id, err := s.Authenticate(ctx, pt)
		if err != nil || id.KeyID != k.ID || id.KeyName != "prod" || id.AccountID != "acme" || id.AllowedModels != nil || id.lineage != k.ID {
			t.Fatalf("Authenticate hit %d: %+v, %v", i, id, err)
		}
	}
	if s.keys.len() != 1 {
		t.Fatalf("cache holds %d entries, want 1", s.keys.len())
	}
	// miss: well-formed but never issued, malformed, a prefix of a real key
	for _, bad := range []string{KeyPrefix + strings.Repeat("A", keyRandomLen), "", "sk-", "Bearer " + pt, pt[:len(pt)-1], pt + "x", strings.ToUpper(pt)} {
		if _, err := s.Authenticate(ctx, bad); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("Authenticate(%q): %v, want ErrUnknownKey", bad, err)
		}
	}
	// expired: valid until the last millisecond, expired at the instant
	clk.Advance(time.Hour - time.Millisecond)
	if _, err := s.Authenticate(ctx, ept); err != nil {
		t.Fatalf("key before expiry: %v", err)
	}
	clk.Advance(time.Millisecond)
	if _, err := s.Authenticate(ctx, ept); !errors.Is(err, ErrExpiredKey) {
		t.Fatalf("expired key: %v, want ErrExpiredKey", err)
	}
	if got, _ := s.Key(ctx, ek.ID); got.Status != "expired" {
		t.Fatalf("expired key status %q", got.Status)
	}
	// deleted
	if err := s.DeleteKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, pt); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("deleted key: %v, want ErrUnknownKey", err)
	}
}

func TestDeleteKeyInvalidatesCacheImmediately(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "1")
	k, pt := mustKey(t, s, "acme", "prod")
	other, opt := mustKey(t, s, "acme", "other")
	for _, p := range []string{pt, opt} {
		if _, err := s.Authenticate(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if s.keys.len() != 2 {
		t.Fatalf("cache holds %d entries, want 2", s.keys.len())
	}
	if err := s.DeleteKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, pt); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Authenticate right after DeleteKey: %v, want ErrUnknownKey", err)
	}
	if id, err := s.Authenticate(ctx, opt); err != nil || id.KeyID != other.ID {
		t.Fatalf("other key after delete: %+v %v", id, err)
	}
	if _, err := s.Key(ctx, k.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Key(deleted): %v", err)
	}
	if err := s.DeleteKey(ctx, k.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second DeleteKey: %v", err)
	}
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Name: ptr("x")}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UpdateKey(deleted, name): %v", err)
	}
	keys, _ := s.Keys(ctx, "")
	if len(keys) != 1 || keys[0].ID != other.ID {
		t.Fatalf("Keys after delete: %+v", keys)
	}
	// the row stays, marked deleted
	if n := queryInt(t, s.r, `SELECT count(*) FROM api_keys WHERE id = ? AND deleted_at IS NOT NULL`, k.ID); n != 1 {
		t.Fatal("deleted key row missing or not marked")
	}
}

func TestRenameKeyInvalidatesCache(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "1")
	k, pt := mustKey(t, s, "acme", "before")
	if id, _ := s.Authenticate(ctx, pt); id.KeyName != "before" {
		t.Fatalf("name %q", id.KeyName)
	}
	nk, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Name: ptr("after")})
	if err != nil || nk.Name != "after" {
		t.Fatalf("UpdateKey(name): %+v %v", nk, err)
	}
	if id, err := s.Authenticate(ctx, pt); err != nil || id.KeyName != "after" {
		t.Fatalf("Authenticate after rename: %+v %v", id, err)
	}
}

func TestRotateKeyWithoutGrace(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "1")
	k, pt := mustKey(t, s, "acme", "prod")
	if _, err := s.Authenticate(ctx, pt); err != nil { // cached
		t.Fatal(err)
	}
	nk, npt, old, err := s.RotateKey(ctx, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if nk.ID == k.ID || npt == pt || !LooksLikeKey(npt) || nk.Name != "prod" || nk.AccountID != "acme" || nk.ExpiresAt != nil {
		t.Fatalf("new key %+v (%q)", nk, npt)
	}
	if old.ID != k.ID || old.ReplacedBy != nk.ID || old.Status != "deleted" {
		t.Fatalf("old key %+v", old)
	}
	if _, err := s.Authenticate(ctx, pt); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old key after rotation: %v, want ErrUnknownKey", err)
	}
	if id, err := s.Authenticate(ctx, npt); err != nil || id.KeyID != nk.ID || id.KeyName != "prod" || id.AccountID != "acme" {
		t.Fatalf("new key: %+v %v", id, err)
	}
	if _, _, _, err := s.RotateKey(ctx, k.ID, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rotating the revoked key again: %v, want ErrNotFound", err)
	}
	if _, _, _, err := s.RotateKey(ctx, "key_nope", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rotating an unknown key: %v, want ErrNotFound", err)
	}
	if n := queryInt(t, s.r, `SELECT count(*) FROM api_keys`); n != 2 {
		t.Fatalf("%d key rows, want 2", n)
	}
}

func TestRotateKeyWithGrace(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	s := openTemp(t, Options{Now: clk.Now})
	mustAccount(t, s, "acme", "1")
	k, pt := mustKey(t, s, "acme", "prod")
	if _, err := s.Authenticate(ctx, pt); err != nil {
		t.Fatal(err)
	}
	start := clk.Now()
	nk, npt, old, err := s.RotateKey(ctx, k.ID, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if old.ReplacedBy != nk.ID || old.ExpiresAt == nil || !old.ExpiresAt.Equal(start.Add(10*time.Minute)) || old.Status != KeyRotated {
		t.Fatalf("old key %+v", old)
	}
	if nk.Name != "prod" || nk.AccountID != "acme" || nk.ExpiresAt != nil {
		t.Fatalf("new key %+v", nk)
	}
	// both work during the grace period
	clk.Advance(10*time.Minute - time.Millisecond)
	for _, p := range []string{pt, npt} {
		if _, err := s.Authenticate(ctx, p); err != nil {
			t.Fatalf("during grace: %v", err)
		}
	}
	// rotating the old key again is refused: rotate its replacement
	if _, _, _, err := s.RotateKey(ctx, k.ID, time.Minute); !errors.Is(err, ErrInvalid) {
		t.Fatalf("rotating a rotated key: %v, want ErrInvalid", err)
	}
	clk.Advance(time.Millisecond)
	if _, err := s.Authenticate(ctx, pt); !errors.Is(err, ErrExpiredKey) {
		t.Fatalf("old key after grace: %v, want ErrExpiredKey", err)
	}
	if _, err := s.Authenticate(ctx, npt); err != nil {
		t.Fatalf("new key after grace: %v", err)
	}
	got, err := s.Key(ctx, k.ID)
	if err != nil || got.Status != "expired" || got.ReplacedBy != nk.ID {
		t.Fatalf("old key after grace: %+v %v", got, err)
	}

	// A key that expires before the grace would end keeps its own expiry,
	// and the replacement inherits it.
	exp := clk.Now().Add(5 * time.Minute)
	k3, _ := mustKey(t, s, "acme", "short-lived", &exp)
	nk3, _, old3, err := s.RotateKey(ctx, k3.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !old3.ExpiresAt.Equal(exp) || nk3.ExpiresAt == nil || !nk3.ExpiresAt.Equal(exp) {
		t.Fatalf("old expiry %v, new expiry %v, want both %v", old3.ExpiresAt, nk3.ExpiresAt, exp)
	}
}

func lastUsedInDB(t *testing.T, s *Store, id string) sql.NullInt64 {
	t.Helper()
	var v sql.NullInt64
	if err := s.r.QueryRow(`SELECT last_used_at FROM api_keys WHERE id = ?`, id).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestLastUsedFlushedAfterInterval(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	s := openTemp(t, Options{Now: clk.Now, LastUsedFlushInterval: 20 * time.Millisecond})
	mustAccount(t, s, "acme", "1")
	k, pt := mustKey(t, s, "acme", "prod")
	mustKey(t, s, "acme", "unused")

	waitFor := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			v := lastUsedInDB(t, s, k.ID)
			if v.Valid && v.Int64 == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("last_used_at in the database is %v, want %d", v, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if _, err := s.Authenticate(ctx, pt); err != nil {
		t.Fatal(err)
	}
	first := unixMS(clk.Now())
	waitFor(first)
	if got, _ := s.Key(ctx, k.ID); got.LastUsedAt == nil || unixMS(*got.LastUsedAt) != first {
		t.Fatalf("Key.LastUsedAt %v, want %v", got.LastUsedAt, fromMS(first))
	}
	// a later use moves it forward
	clk.Advance(5 * time.Second)
	if _, err := s.Authenticate(ctx, pt); err != nil {
		t.Fatal(err)
	}
	waitFor(unixMS(clk.Now()))
	keys, _ := s.Keys(ctx, "acme")
	for _, kk := range keys {
		if kk.Name == "unused" && kk.LastUsedAt != nil {
			t.Fatalf("unused key has last_used_at %v", kk.LastUsedAt)
		}
	}
}

func TestLastUsedFlushedOnClose(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	path := tempDB(t)
	s := openAt(t, path, Options{Now: clk.Now, LastUsedFlushInterval: time.Hour})
	mustAccount(t, s, "acme", "1")
	k, pt := mustKey(t, s, "acme", "prod")
	if _, err := s.Authenticate(ctx, pt); err != nil {
		t.Fatal(err)
	}
	want := unixMS(clk.Now())
	// visible through the API before it is written...
	if got, _ := s.Key(ctx, k.ID); got.LastUsedAt == nil || unixMS(*got.LastUsedAt) != want {
		t.Fatalf("Key.LastUsedAt before flush: %v", got.LastUsedAt)
	}
	// ...but not yet written (the interval is an hour)
	if v := lastUsedInDB(t, s, k.ID); v.Valid {
		t.Fatalf("last_used_at written before the flush interval: %v", v)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, path, Options{})
	if v := lastUsedInDB(t, s2, k.ID); !v.Valid || v.Int64 != want {
		t.Fatalf("last_used_at after Close %v, want %d", v, want)
	}
	if got, _ := s2.Key(ctx, k.ID); got.LastUsedAt == nil || unixMS(*got.LastUsedAt) != want {
		t.Fatalf("Key.LastUsedAt after reopen %v", got.LastUsedAt)
	}
}

func TestClosedStoreRefusesEverything(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "1")
	k, pt := mustKey(t, s, "acme", "prod")
	if _, err := s.Authenticate(ctx, pt); err != nil { // now cached
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// fail closed: even a cached key is refused once the store is closed
	if _, err := s.Authenticate(ctx, pt); !errors.Is(err, ErrClosed) {
		t.Fatalf("Authenticate on closed store: %v, want ErrClosed", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping: %v", err)
	}
	if _, err := s.CreateAccount(ctx, "b", ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("CreateAccount: %v", err)
	}
	if _, _, err := s.AdjustBalance(ctx, "acme", 1, ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("AdjustBalance: %v", err)
	}
	if _, _, err := s.CreateKey(ctx, "acme", "x", KeyPolicy{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("CreateKey: %v", err)
	}
	if err := s.DeleteKey(ctx, k.ID); !errors.Is(err, ErrClosed) {
		t.Fatalf("DeleteKey: %v", err)
	}
	if _, _, _, err := s.RotateKey(ctx, k.ID, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("RotateKey: %v", err)
	}
}

// TestConcurrentAuthenticateAndDelete: once DeleteKey has returned, no
// Authenticate that starts afterwards accepts the key, whatever the cache
// was doing. Readers hammer the key being deleted (and, with a tiny cache,
// filler keys that keep evicting it, so that database lookups race with the
// invalidation: the case the cache's epoch fence exists for).
func TestConcurrentAuthenticateAndDelete(t *testing.T) {
	for _, cacheSize := range []int{100_000, 2} {
		t.Run(fmt.Sprintf("cache=%d", cacheSize), func(t *testing.T) {
			ctx := context.Background()
			s := openTemp(t, Options{KeyCacheSize: cacheSize})
			mustAccount(t, s, "acme", "1")
			const n = 60
			ids := make([]string, n)
			pts := make([]string, n)
			for i := range n {
				k, pt := mustKey(t, s, "acme", fmt.Sprintf("k%d", i))
				ids[i], pts[i] = k.ID, pt
			}
			var deleted [n]atomic.Bool
			var target atomic.Int64 // the key being deleted now (always even)
			var stop atomic.Bool
			var bad atomic.Int64
			var firstBad atomic.Value
			var accepted, refused atomic.Int64
			var wg sync.WaitGroup
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func(seed uint64) {
					defer wg.Done()
					r := rand.New(rand.NewPCG(seed, 7))
					for !stop.Load() {
						i := r.IntN(n)
						if r.IntN(2) == 0 {
							i = int(target.Load())
						}
						wasDeleted := deleted[i].Load()
						_, err := s.Authenticate(ctx, pts[i])
						switch {
						case err == nil && wasDeleted:
							if bad.Add(1) == 1 {
								firstBad.Store(fmt.Sprintf("key %d accepted after DeleteKey returned", i))
							}
						case err == nil:
							accepted.Add(1)
						case errors.Is(err, ErrUnknownKey):
							refused.Add(1)
						default:
							if bad.Add(1) == 1 {
								firstBad.Store(fmt.Sprintf("key %d: unexpected error %v", i, err))
							}
						}
					}
				}(uint64(w))
			}
			// delete the even keys one by one while the readers run
			for i := 0; i < n; i += 2 {
				target.Store(int64(i))
				time.Sleep(time.Millisecond)
				if err := s.DeleteKey(ctx, ids[i]); err != nil {
					t.Errorf("DeleteKey(%d): %v", i, err)
				}
				deleted[i].Store(true)
				time.Sleep(time.Millisecond)
			}
			stop.Store(true)
			wg.Wait()
			if bad.Load() != 0 {
				t.Fatalf("%d bad outcomes; first: %v", bad.Load(), firstBad.Load())
			}
			if accepted.Load() == 0 || refused.Load() == 0 {
				t.Fatalf("the race did not happen: %d accepted, %d refused", accepted.Load(), refused.Load())
			}
			for i := range n {
				_, err := s.Authenticate(ctx, pts[i])
				if i%2 == 0 && !errors.Is(err, ErrUnknownKey) {
					t.Fatalf("deleted key %d: %v", i, err)
				}
				if i%2 == 1 && err != nil {
					t.Fatalf("live key %d: %v", i, err)
				}
			}
		})
	}
}

// ptr returns a pointer to a copy of v.
func ptr[T any](v T) *T { return &v }

// TestNamesRefuseControlCharacters: account and key names hold no control
// characters, C0 or C1 (U+009B is a terminal escape in the CLI's tables),
// no bidirectional overrides and no line separators; ordinary Unicode,
// emoji with joiners included, is fine.
func TestNamesRefuseControlCharacters(t *testing.T) {
	for _, bad := range []string{"a\nb", "a\x7fb", "c1\u009b31mRED", "n\u0085x", "evil\u202Etxt.exe", "a\u2028b", "a\u200Eb"} {
		if _, err := validateName("key", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("validateName(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	for _, good := range []string{"Acme Corp", "Équipe été", "团队", "dev 👩‍💻 laptop", "a-b_c.d"} {
		if got, err := validateName("key", good); err != nil || got != good {
			t.Errorf("validateName(%q) = %q, %v", good, got, err)
		}
	}
}
