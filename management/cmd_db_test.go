package management

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/internal/pgtest"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// db status, migrate and copy on the databases themselves: an SQLite file
// is migrated, filled, copied into PostgreSQL, and a gateway started on
// the copy serves the old key with the old balance.
func TestCLIDatabaseCommands(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "gw.db")
	build := strconv.Itoa(keystore.SchemaVersion())

	out, err := runCLIArgs(t, "db", "status", "--database", file)
	if err != nil || !strings.Contains(out, "sqlite") || !strings.Contains(out, "does not exist") ||
		!strings.Contains(out, "Pending migrations:  "+build) {
		t.Fatalf("status of a missing file: %v\n%s", err, out)
	}
	out, err = runCLIArgs(t, "db", "migrate", "--database", file)
	if err != nil || !strings.Contains(out, "from schema version 0 to "+build) {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	out, err = runCLIArgs(t, "db", "migrate", "--database", file)
	if err != nil || !strings.Contains(out, "nothing to do") {
		t.Fatalf("second migrate: %v\n%s", err, out)
	}

	s, err := keystore.Open(ctx, keystore.Options{Path: file})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateAccount(ctx, "acme", "Acme"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AdjustBalance(ctx, "acme", 3*keystore.NanoPerUnit, "top-up"); err != nil {
		t.Fatal(err)
	}
	_, secret, err := s.CreateKey(ctx, "acme", "prod", keystore.KeyPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	// the copy needs the file closed, as a running Caddy would hold it
	if _, err := runCLIArgs(t, "db", "copy", "--from", file, "--to", pgtest.NewDatabase(t)); err == nil ||
		!strings.Contains(err.Error(), "in use") {
		t.Fatalf("copy of an open file: %v", err)
	}
	s.Close()

	dsn := pgtest.NewDatabase(t)
	t.Setenv("AIGW_TEST_COPY_TARGET", dsn)
	out, err = runCLIArgs(t, "db", "copy", "--from", file, "--to", "{env.AIGW_TEST_COPY_TARGET}")
	if err != nil || !strings.Contains(out, "checked 1 accounts") || !strings.Contains(out, "ledger  ") {
		t.Fatalf("copy: %v\n%s", err, out)
	}
	if _, err := runCLIArgs(t, "db", "copy", "--from", file, "--to", dsn); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("second copy: %v", err)
	}

	// status through --config: the Caddyfile's database, placeholders expanded
	caddyfile := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(caddyfile, []byte("{\n\tai_gateway {\n\t\tdatabase {env.AIGW_TEST_COPY_TARGET}\n\t}\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runCLIArgs(t, "--config", caddyfile, "db", "status")
	if err != nil || !strings.Contains(out, "postgres") || !strings.Contains(out, "Schema version:      "+build) ||
		!strings.Contains(out, "Pending migrations:  0") {
		t.Fatalf("status of the copy: %v\n%s", err, out)
	}

	// a gateway on the copy: the old key works, the balance is there
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.DBPath = dsn
	g.LoadSite(gwtest.Site(mock.URL))
	if got := accountBalance(t, g, "acme"); got != "3.00" {
		t.Fatalf("balance on the copy %s, want 3.00", got)
	}
	chatOK(t, g, secret)
}
