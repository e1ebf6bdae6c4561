package keystore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestBackupIsConsistentAndUsable: a backup taken while charges are still
// waiting for the writer holds them, balances equal ledger sums in it, its
// keys authenticate, it is private, and an existing file is never
// overwritten.
func TestBackupIsConsistentAndUsable(t *testing.T) {
	sqliteOnly(t, "Backup copies the SQLite file (VACUUM INTO); TestBackupRefusedOnPostgres covers PostgreSQL")
	ctx := context.Background()
	// A long CommitInterval keeps settled rows pending until Backup
	// flushes them.
	s := openTemp(t, Options{CommitInterval: time.Hour})
	mustAccount(t, s, "acme", "100")
	mustAccount(t, s, "beta", "50")
	_, pa := mustKey(t, s, "acme", "a")
	_, pb := mustKey(t, s, "beta", "b")
	for i := range 30 {
		settleOne(t, s, []string{"acme", "beta"}[i%2], Charge{Cost: NanoPerUnit + int64(i), Model: "m"})
	}
	if s.PendingWrites() == 0 {
		t.Fatal("test setup: no rows pending before Backup")
	}
	memAcme, _, _ := s.Balance("acme")

	dest := filepath.Join(t.TempDir(), "backup.db")
	if err := s.Backup(ctx, dest); err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if st, err := os.Stat(dest); err != nil {
		t.Fatal(err)
	} else if runtime.GOOS != "windows" && st.Mode().Perm() != 0o600 {
		t.Fatalf("backup has mode %o, want 600", st.Mode().Perm())
	}
	if err := s.Backup(ctx, dest); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Backup over an existing file: %v, want os.ErrExist", err)
	}

	// the original keeps working, and the copy is a database of its own
	settleOne(t, s, "acme", Charge{Cost: 1})
	c := openAt(t, dest, Options{})
	checkStore(t, c)
	if got := queryInt(t, c.r, `SELECT count(*) FROM ledger WHERE kind = 'usage'`); got != 30 {
		t.Fatalf("backup holds %d usage rows, want 30", got)
	}
	if b, _, _ := c.Balance("acme"); b != memAcme {
		t.Fatalf("balance of acme in the backup %s, want %s", FormatAmount(b), FormatAmount(memAcme))
	}
	for _, p := range []string{pa, pb} {
		if _, err := c.Authenticate(ctx, p); err != nil {
			t.Fatalf("key in the backup: %v", err)
		}
	}
}
