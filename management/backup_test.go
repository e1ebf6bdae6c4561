package management

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// TestCLIBackupRestores: `caddy ai-gateway backup FILE` copies the running
// database while requests are served; the copy opens as a store (the
// restore), every account's balance equals the sum of its ledger there,
// the copy has every row settled before the backup, and its keys work. The
// copy is private, and an existing file is never overwritten.
func TestCLIBackupRestores(t *testing.T) {
	if gwtest.OnPostgres() {
		t.Skip("SQLite only: the backup command copies the SQLite file; TestPostgresDatabasePasswordNeverShown checks its refusal on PostgreSQL")
	}
	g, _ := startCLIGateway(t)
	mustCLI(t, g, "accounts", "create", "acme")
	mustCLI(t, g, "accounts", "topup", "acme", "10")
	mustCLI(t, g, "accounts", "create", "beta")
	mustCLI(t, g, "accounts", "topup", "beta", "5")
	secretA := secretFrom(t, mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "a"))
	secretB := secretFrom(t, mustCLI(t, g, "keys", "create", "--account", "beta", "--name", "b"))
	for i := 0; i < 5; i++ {
		chatOK(t, g, secretA)
		chatOK(t, g, secretB)
	}

	// traffic goes on while the backup runs
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				chatOK(t, g, secretA)
			}
		}
	}()
	dir := t.TempDir()
	file := filepath.Join(dir, "copy.db")
	out := mustCLI(t, g, "backup", file)
	close(stop)
	wg.Wait()
	if !strings.Contains(out, "Backed up "+g.DBPath+" to "+file) {
		t.Fatalf("backup output: %s", out)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup mode %v, want 0600", fi.Mode().Perm())
	}
	failCLI(t, g, []string{"backup", file}, "exists", "never overwrites")
	failCLI(t, g, []string{"backup", "--json", filepath.Join(dir, "missing-dir", "x.db")}, "backing up")

	restored, err := keystore.Open(context.Background(), keystore.Options{Path: file})
	if err != nil {
		t.Fatalf("opening the backup: %v", err)
	}
	defer restored.Close()
	for _, acct := range []string{"acme", "beta"} {
		sum, err := restored.LedgerSum(context.Background(), acct)
		if err != nil {
			t.Fatal(err)
		}
		stored, _ := restored.StoredBalance(context.Background(), acct)
		a, err := restored.Account(context.Background(), acct)
		if err != nil {
			t.Fatal(err)
		}
		if sum != stored || a.Balance != sum {
			t.Fatalf("%s in the backup: balance %d, stored %d, sum(ledger) %d", acct, a.Balance, stored, sum)
		}
	}
	rows, err := restored.Ledger(context.Background(), keystore.LedgerFilter{AccountID: "beta", Kind: keystore.KindUsage})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 5 {
		t.Fatalf("the backup has %d of beta's 5 usage rows", len(rows))
	}
	if _, err := restored.Authenticate(context.Background(), secretB); err != nil {
		t.Fatalf("a key does not work in the backup: %v", err)
	}
}
