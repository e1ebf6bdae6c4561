package management

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// TestCLIKeysDisableEnable: a disabled key gets 401 key_disabled (through
// the OpenAI SDK) from the next request on, and 200 again once enabled;
// the key's other lineage members and the account are untouched.
func TestCLIKeysDisableEnable(t *testing.T) {
	g, mock := startCLIGateway(t)
	mustCLI(t, g, "accounts", "create", "acme")
	mustCLI(t, g, "accounts", "topup", "acme", "1")
	out := mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "app")
	secret, id := secretFrom(t, out), keyIDFrom(t, out, "Created key ")
	other := secretFrom(t, mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "other"))
	chatOK(t, g, secret)

	if out := mustCLI(t, g, "keys", "disable", id); !strings.Contains(out, "is disabled") {
		t.Fatalf("disable output:\n%s", out)
	}
	before := mock.Count()
	_, err := gwtest.Chat(context.Background(), gwtest.Client(g, secret))
	if e := gwtest.APIErrorOf(t, err); e.StatusCode != http.StatusUnauthorized || e.Code != "key_disabled" ||
		!strings.Contains(e.Message, "is disabled") || strings.Contains(e.Message, secret) {
		t.Fatalf("SDK error of a disabled key: %d %q %q", e.StatusCode, e.Code, e.Message)
	}
	if mock.Count() != before {
		t.Fatal("a request of a disabled key reached the provider")
	}
	chatOK(t, g, other)
	if out := mustCLI(t, g, "keys", "show", id); !strings.Contains(out, "disabled (by an operator)") {
		t.Fatalf("show of a disabled key:\n%s", out)
	}
	failCLI(t, g, []string{"keys", "rotate", id}, "is disabled; enable it before rotating it")

	if out := mustCLI(t, g, "keys", "enable", id); !strings.Contains(out, "is enabled") {
		t.Fatalf("enable output:\n%s", out)
	}
	chatOK(t, g, secret)
	failCLI(t, g, []string{"keys", "disable", "key_nope"}, "not found")
	failCLI(t, g, []string{"keys", "disable", secret}, "refused, nothing was sent")
}

// TestCLIAudit: every change through the CLI and the admin API is in the
// audit log with its actor, filterable, and never with a key.
func TestCLIAudit(t *testing.T) {
	g, _ := startCLIGateway(t)
	mustCLI(t, g, "accounts", "create", "acme")
	mustCLI(t, g, "accounts", "topup", "acme", "2", "--note", "invoice 9")
	mustCLI(t, g, "accounts", "topup", "acme", "-0.5", "--note", "refund")
	out := mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "app")
	secret, id := secretFrom(t, out), keyIDFrom(t, out, "Created key ")
	mustCLI(t, g, "keys", "rename", id, "renamed")
	mustCLI(t, g, "keys", "update", id, "--limit", "1.00", "--limit-period", "day")
	mustCLI(t, g, "keys", "disable", id)
	mustCLI(t, g, "keys", "enable", id)
	rot := mustCLI(t, g, "keys", "rotate", id)
	secret2 := secretFrom(t, rot)
	g.MustAdmin("POST", "/ai-gateway/accounts", map[string]string{"id": "beta"}, http.StatusCreated, nil)
	mustCLI(t, g, "accounts", "disable", "beta")

	var all AuditView
	g.MustAdmin("GET", "/ai-gateway/audit", nil, http.StatusOK, &all)
	var actions []string
	for _, e := range all.Entries {
		actions = append(actions, e.Action)
		if strings.Contains(string(e.Detail), secret) || strings.Contains(string(e.Detail), secret2) {
			t.Fatalf("audit entry with a plaintext key: %s", e.Detail)
		}
	}
	want := "account.disable account.create key.rotate key.enable key.disable key.update key.rename key.create balance.correction balance.topup account.create"
	if got := strings.Join(actions, " "); got != want {
		t.Fatalf("actions\n got %s\nwant %s", got, want)
	}
	if a := all.Entries[1].Actor; !strings.HasPrefix(a, "admin API 127.0.0.1:") {
		t.Fatalf("actor of a direct admin API call %q", a)
	}
	if a := all.Entries[0].Actor; !strings.HasPrefix(a, "cli (") || !strings.Contains(a, ") via 127.0.0.1:") {
		t.Fatalf("actor of a CLI call %q", a)
	}

	out = mustCLI(t, g, "audit", "--account", "acme", "--action", "balance")
	if r := tableRow(t, out, "ID"); strings.Join(r, " ") != "ID TIME ACTOR ACCOUNT TARGET ACTION DETAIL" {
		t.Fatalf("audit header %q", r)
	}
	if !strings.Contains(out, "balance.correction") || !strings.Contains(out, `"note":"refund"`) || strings.Contains(out, "key.") {
		t.Fatalf("audit --action balance:\n%s", out)
	}
	out = mustCLI(t, g, "audit", "--target", id, "--limit", "2")
	if !strings.Contains(out, "key.rotate") || !strings.Contains(out, "key.enable") || strings.Contains(out, "key.disable") ||
		!strings.Contains(out, "Older entries: --before ") {
		t.Fatalf("audit --target --limit 2:\n%s", out)
	}
	out = mustCLI(t, g, "--json", "audit", "--actor", "admin API*")
	var j AuditView
	if err := json.Unmarshal([]byte(out), &j); err != nil || len(j.Entries) != 1 || j.Entries[0].Target != "beta" {
		t.Fatalf("audit --actor 'admin API*' --json: %v\n%s", err, out)
	}
	failCLI(t, g, []string{"audit", "--limit", "0"}, "--limit must be from 1 to 1000")
	failCLI(t, g, []string{"audit", "--since", "yesterday"}, "since")
	if code, body := g.Admin("GET", "/ai-gateway/audit?bogus=1", nil); code != http.StatusBadRequest {
		t.Fatalf("unknown parameter: %d %s", code, body)
	}
}

// TestCLIAccountsListSummary: accounts list shows held, spend this month,
// live keys and status.
func TestCLIAccountsListSummary(t *testing.T) {
	g, _ := startCLIGateway(t)
	mustCLI(t, g, "accounts", "create", "acme")
	mustCLI(t, g, "accounts", "topup", "acme", "1")
	secret := secretFrom(t, mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "a"))
	gone := keyIDFrom(t, mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "b"), "Created key ")
	mustCLI(t, g, "keys", "delete", gone)
	chatOK(t, g, secret)
	chatOK(t, g, secret)
	mustCLI(t, g, "accounts", "create", "idle")
	mustCLI(t, g, "accounts", "disable", "idle")
	out := mustCLI(t, g, "accounts", "list")
	if r := strings.Join(tableRow(t, out, "acme"), " "); r != "acme acme 0.9999904 USD 0.00 USD 0.0000096 USD 1 active" {
		t.Fatalf("acme row %q:\n%s", r, out)
	}
	if r := strings.Join(tableRow(t, out, "idle"), " "); r != "idle idle 0.00 USD 0.00 USD 0.00 USD 0 disabled" {
		t.Fatalf("idle row %q:\n%s", r, out)
	}
}

// TestCLIUsageStatusFilter: --status keeps the requests that ended so, and
// the totals are of those rows.
func TestCLIUsageStatusFilter(t *testing.T) {
	g, _ := startCLIGateway(t)
	mustCLI(t, g, "accounts", "create", "acme")
	mustCLI(t, g, "accounts", "topup", "acme", "1")
	secret := secretFrom(t, mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "app"))
	chatOK(t, g, secret)
	chatOK(t, g, secret)
	out := mustCLI(t, g, "usage", "--status", "ok")
	if !strings.Contains(out, "2 requests") {
		t.Fatalf("usage --status ok:\n%s", out)
	}
	out = mustCLI(t, g, "usage", "--status", "error")
	if !strings.Contains(out, "No requests in this range.") {
		t.Fatalf("usage --status error:\n%s", out)
	}
	failCLI(t, g, []string{"usage", "--status", "2xx"}, `status "2xx" must be ok, error, 4xx, 5xx`)
}
