package management

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// TestReviewAdminAndCLIInput covers what the outsider review found in the
// admin API and the CLI: repeated JSON members (last-wins money), a backup
// into a missing directory (500), a row limit over the maximum, a spend
// limit and a grace that are only checked, or named, wrongly.
func TestReviewAdminAndCLIInput(t *testing.T) {
	g, mock := startCLIGateway(t)
	mustCLI(t, g, "accounts", "create", "beta")
	mustCLI(t, g, "accounts", "topup", "beta", "4")

	for _, body := range []string{`{"amount":"1","amount":"1000"}`, `{"amount":"1","Amount":"1000"}`, `{"note":"a","amount":"1","NOTE":"b"}`} {
		status, b := g.Admin("POST", "/ai-gateway/accounts/beta/balance", body)
		if status != http.StatusBadRequest || !strings.Contains(string(b), "more than once") {
			t.Fatalf("%s: %d %s, want 400 naming the repeated member", body, status, b)
		}
	}
	if out := mustCLI(t, g, "accounts", "show", "beta"); !strings.Contains(out, "4.00") {
		t.Fatalf("a refused top-up changed the balance:\n%s", out)
	}

	status, b := g.Admin("POST", "/ai-gateway/backup", map[string]string{"path": filepath.Join(t.TempDir(), "no", "such", "dir.db")})
	wantErr := "directory must exist"
	if gwtest.OnPostgres() {
		wantErr = "pg_dump" // no file backup of a PostgreSQL store
	}
	if status != http.StatusBadRequest || !strings.Contains(string(b), wantErr) {
		t.Fatalf("backup into a missing directory: %d %s, want 400", status, b)
	}

	for _, q := range []string{"limit=10001", "limit=0", "limit=-1"} {
		if status, b := g.Admin("GET", "/ai-gateway/usage?"+q, nil); status != http.StatusBadRequest {
			t.Fatalf("usage?%s: %d %s, want 400", q, status, b)
		}
	}
	failCLI(t, g, []string{"usage", "--limit", "0"}, "--limit must be from 1 to 10000")

	before := mock.Count()
	failCLI(t, g, []string{"keys", "create", "--account", "beta", "--name", "n", "--limit", "abc"}, `--limit "abc" must be a decimal amount greater than zero`)
	failCLI(t, g, []string{"keys", "create", "--account", "beta", "--name", "n", "--limit", "0"}, "must be a decimal amount greater than zero")
	if mock.Count() != before {
		t.Fatal("the provider saw requests")
	}

	id := keyIDFrom(t, mustCLI(t, g, "keys", "create", "--account", "beta", "--name", "r"), "Created key ")
	status, b = g.Admin("POST", "/ai-gateway/keys/"+id+"/rotate", map[string]string{"grace": "99999999h"})
	if status != http.StatusBadRequest || strings.Contains(string(b), "non-negative") {
		t.Fatalf("a grace out of range: %d %s", status, b)
	}
}

// TestReviewBackupAndExportInput: a backup whose directory is a file, and
// an export with a filter the store refuses, are 400s before anything is
// written or streamed.
func TestReviewBackupAndExportInput(t *testing.T) {
	g, _ := startCLIGateway(t)
	file := filepath.Join(t.TempDir(), "plain-file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	status, b := g.Admin("POST", "/ai-gateway/backup", map[string]string{"path": filepath.Join(file, "x.db")})
	if status != http.StatusBadRequest {
		t.Fatalf("backup under a file: %d %s, want 400", status, b)
	}
	for _, q := range []string{"kind=bogus", "since=2030-01-01&until=2020-01-01"} {
		if status, b := g.Admin("GET", "/ai-gateway/usage/export?"+q, nil); status != http.StatusBadRequest {
			t.Fatalf("export?%s: %d %s, want 400", q, status, b)
		}
	}
}
