package dashboard

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// loadAndRelease loads the shared secret as a config would and releases it
// as its Cleanup would, so that the next load starts afresh (as after a
// restart).
func loadAndRelease(t *testing.T, storage certmagic.Storage, logger *zap.Logger) csrfSecret {
	t.Helper()
	s, err := loadCSRFSecret(storage, logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := csrfSecrets.Delete(csrfSecretKey); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCSRFSecretInStorage: the secret is written to Caddy's storage once
// and read back after the pool forgot it (a restart), so tokens stay valid;
// another storage has another secret.
func TestCSRFSecretInStorage(t *testing.T) {
	dir := t.TempDir()
	st := &certmagic.FileStorage{Path: dir}
	first := loadAndRelease(t, st, zap.NewNop())
	if _, err := os.Stat(filepath.Join(dir, csrfStorageKey)); err != nil {
		t.Fatalf("the secret was not written to the storage: %v", err)
	}
	again := loadAndRelease(t, &certmagic.FileStorage{Path: dir}, zap.NewNop())
	if first.token("bob") != again.token("bob") {
		t.Fatal("the token changed after a restart with the same storage")
	}
	other := loadAndRelease(t, &certmagic.FileStorage{Path: t.TempDir()}, zap.NewNop())
	if other.token("bob") == first.token("bob") {
		t.Fatal("two storages share a secret")
	}
}

// TestCSRFSecretDamagedOrUnwritable: a damaged stored secret is replaced;
// a storage that cannot be written gives a per-process secret and a
// warning, never an error that stops the config.
func TestCSRFSecretDamagedOrUnwritable(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(csrfStorageKey)), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, csrfStorageKey), []byte("not a secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := loadAndRelease(t, &certmagic.FileStorage{Path: dir}, zap.NewNop())
	if len(s) != 32 {
		t.Fatalf("secret of %d bytes", len(s))
	}
	if again := loadAndRelease(t, &certmagic.FileStorage{Path: dir}, zap.NewNop()); again.token("x") != s.token("x") {
		t.Fatal("the replaced secret was not stored")
	}

	// a file where the storage's directory should be: nothing can be written
	blocked := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	s = loadAndRelease(t, &certmagic.FileStorage{Path: blocked}, zap.New(core))
	if len(s) != 32 {
		t.Fatalf("secret of %d bytes", len(s))
	}
	if logs.Len() != 1 {
		t.Fatalf("%d warnings, want 1 about the storage", logs.Len())
	}
}
