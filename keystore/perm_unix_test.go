//go:build unix

package keystore

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestDatabaseFilesPrivateFromTheStart checks that under a permissive umask
// the database, -wal and -shm files are 0600 as soon as Open returns, not
// only once something chmods them later: no window in which another user
// could open them.
func TestDatabaseFilesPrivateFromTheStart(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)

	check := func(when string, path string) {
		t.Helper()
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			if perm := st.Mode().Perm(); perm != 0o600 {
				t.Fatalf("%s: %s has mode %o, want 600", when, filepath.Base(p), perm)
			}
		}
	}

	path := filepath.Join(t.TempDir(), "ks.db")
	s := openAt(t, path, Options{})
	check("right after Open", path)
	mustAccount(t, s, "acme", "10")
	settleOne(t, s, "acme", Charge{Cost: 5})
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	check("after writes", path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A database left world-readable by an older version, -wal and -shm
	// included, is made private before SQLite opens it.
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o644); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	s = openAt(t, path, Options{})
	check("reopened", path)
	if len(s.Accounts(context.Background())) != 1 {
		t.Fatal("data lost on reopen")
	}
}
