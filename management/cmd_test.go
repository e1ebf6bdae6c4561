package management

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/openai/openai-go/v3"
	"github.com/spf13/cobra"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// runCLIArgs runs the ai-gateway command in-process with exactly args and
// returns what it printed on stdout.
func runCLIArgs(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newAIGatewayCommand(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.Execute()
	if err != nil && strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	return out.String(), err
}

// runCLI runs the ai-gateway command against the test's admin endpoint.
func runCLI(t *testing.T, g *gwtest.Gateway, args ...string) (string, error) {
	t.Helper()
	return runCLIArgs(t, append([]string{"--address", g.AdminAddr}, args...)...)
}

// mustCLI is runCLI that fails the test on an error.
func mustCLI(t *testing.T, g *gwtest.Gateway, args ...string) string {
	t.Helper()
	out, err := runCLI(t, g, args...)
	if err != nil {
		t.Fatalf("ai-gateway %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// failCLI is runCLI that fails the test unless the command fails with an
// error containing every one of wants.
func failCLI(t *testing.T, g *gwtest.Gateway, args []string, wants ...string) error {
	t.Helper()
	out, err := runCLI(t, g, args...)
	if err == nil {
		t.Fatalf("ai-gateway %s: no error; output:\n%s", strings.Join(args, " "), out)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("ai-gateway %s: error %q does not contain %q", strings.Join(args, " "), err, w)
		}
	}
	return err
}

// tableRow returns the fields of the first line of out whose first field
// is first.
func tableRow(t *testing.T, out, first string) []string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == first {
			return f
		}
	}
	t.Fatalf("no row %q in:\n%s", first, out)
	return nil
}

// secretFrom returns the plaintext key that out prints on its own line,
// failing unless there is exactly one and it is printed exactly once.
func secretFrom(t *testing.T, out string) string {
	t.Helper()
	var found []string
	for _, line := range strings.Split(out, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "sk-") && !strings.ContainsAny(l, " \t") {
			found = append(found, l)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one key line, got %d in:\n%s", len(found), out)
	}
	if n := strings.Count(out, found[0]); n != 1 {
		t.Fatalf("key printed %d times:\n%s", n, out)
	}
	if !strings.Contains(out, "This is the only time the key is shown") {
		t.Fatalf("no warning that the key is shown once:\n%s", out)
	}
	return found[0]
}

// keyIDFrom returns the key id after prefix in out ("Created key key_…").
func keyIDFrom(t *testing.T, out, prefix string) string {
	t.Helper()
	i := strings.Index(out, prefix)
	if i < 0 {
		t.Fatalf("no %q in:\n%s", prefix, out)
	}
	f := strings.Fields(out[i+len(prefix):])
	if len(f) == 0 || !strings.HasPrefix(f[0], "key_") {
		t.Fatalf("no key id after %q in:\n%s", prefix, out)
	}
	return strings.TrimSuffix(f[0], ".")
}

func accountBalance(t *testing.T, g *gwtest.Gateway, id string) string {
	t.Helper()
	var a struct {
		Balance string `json:"balance"`
	}
	g.MustAdmin("GET", "/ai-gateway/accounts/"+id, nil, http.StatusOK, &a)
	return a.Balance
}

func startCLIGateway(t *testing.T) (*gwtest.Gateway, *gwtest.MockProvider) {
	t.Helper()
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(gwtest.Site(mock.URL))
	return g, mock
}

func chatOK(t *testing.T, g *gwtest.Gateway, secret string) {
	t.Helper()
	if _, err := gwtest.Chat(context.Background(), gwtest.Client(g, secret)); err != nil {
		t.Fatalf("chat with key %s…: %v", secret[:6], err)
	}
}

// chatOKAfterLoad is chatOK right after a config load (accepted or
// rejected): a request can meet a keep-alive connection that the load
// closed at that instant (an EOF before any answer), so a transport error
// is retried; an error answer is not.
func chatOKAfterLoad(t *testing.T, g *gwtest.Gateway, secret string) {
	t.Helper()
	var err error
	for try := 0; try < 3; try++ {
		if _, err = gwtest.Chat(context.Background(), gwtest.Client(g, secret)); err == nil {
			return
		}
		var apiErr *openai.Error
		if errors.As(err, &apiErr) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("chat with key %s… after a config load: %v", secret[:6], err)
}

func chat401(t *testing.T, g *gwtest.Gateway, secret string) {
	t.Helper()
	resp, body := gwtest.RawPost(t, g, []string{"Bearer " + secret})
	gwtest.CheckOpenAIError(t, resp, body, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "")
	_, err := gwtest.Chat(context.Background(), gwtest.Client(g, secret))
	if apiErr := gwtest.APIErrorOf(t, err); apiErr.StatusCode != 401 || apiErr.Code != "invalid_api_key" {
		t.Fatalf("SDK error %d %q, want 401 invalid_api_key", apiErr.StatusCode, apiErr.Code)
	}
}

func TestCLIAccounts(t *testing.T) {
	g, _ := startCLIGateway(t)

	out := mustCLI(t, g, "accounts", "create", "acme", "--name", "Acme Corp")
	if !strings.Contains(out, "Created account acme (Acme Corp), balance 0.00 USD.") {
		t.Fatalf("create output:\n%s", out)
	}
	mustCLI(t, g, "accounts", "create", "solo")
	failCLI(t, g, []string{"accounts", "create", "acme"}, "acme", "already exists", "HTTP 409")
	failCLI(t, g, []string{"accounts", "create", "Bad ID"}, "account id", "HTTP 400")

	// top-ups, including a negative correction before and after the flag
	out = mustCLI(t, g, "accounts", "topup", "acme", "10.50", "--note", "invoice 1")
	if !strings.Contains(out, "changed by +10.50 USD") || !strings.Contains(out, "New balance: 10.50 USD") {
		t.Fatalf("topup output:\n%s", out)
	}
	out = mustCLI(t, g, "accounts", "topup", "acme", "-0.25", "--note", "correction")
	if !strings.Contains(out, "changed by -0.25 USD") || !strings.Contains(out, "New balance: 10.25 USD") {
		t.Fatalf("negative topup output:\n%s", out)
	}
	mustCLI(t, g, "accounts", "topup", "--note", "-1 refund", "acme", "-.25")
	if got := accountBalance(t, g, "acme"); got != "10.00" {
		t.Fatalf("balance %s, want 10.00", got)
	}
	mustCLI(t, g, "accounts", "topup", "acme", "+0.000000001")
	mustCLI(t, g, "accounts", "topup", "acme", "-0.000000001")

	// bad amounts and arguments: usage errors, nothing written
	for _, bad := range []string{"abc", "1.0000000001", "1e3", "", "1,5", "--5"} {
		failCLI(t, g, []string{"accounts", "topup", "acme", bad}, "usage: ai-gateway accounts topup ID AMOUNT")
	}
	failCLI(t, g, []string{"accounts", "topup", "acme"}, "missing argument AMOUNT")
	failCLI(t, g, []string{"accounts", "topup", "acme", "1", "2"}, "unexpected argument \"2\"")
	failCLI(t, g, []string{"accounts", "topup", "acme", "1", "--bogus"}, "unknown flag: --bogus")
	failCLI(t, g, []string{"accounts", "show"}, "missing argument ID")
	failCLI(t, g, []string{"accounts", "create"}, "missing argument ID")
	failCLI(t, g, []string{"accounts", "list", "extra"}, "unexpected argument")
	if got := accountBalance(t, g, "acme"); got != "10.00" {
		t.Fatalf("balance %s after refused commands, want 10.00", got)
	}

	// list: table and JSON
	out = mustCLI(t, g, "accounts", "list")
	if h := strings.Fields(strings.SplitN(out, "\n", 2)[0]); strings.Join(h, " ") != "ID NAME BALANCE HELD SPENT THIS MONTH KEYS STATUS" {
		t.Fatalf("list header %q:\n%s", h, out)
	}
	if row := tableRow(t, out, "acme"); strings.Join(row, " ") != "acme Acme Corp 10.00 USD 0.00 USD 0.00 USD 0 active" {
		t.Fatalf("acme row %q:\n%s", row, out)
	}
	if row := tableRow(t, out, "solo"); strings.Join(row, " ") != "solo solo 0.00 USD 0.00 USD 0.00 USD 0 active" {
		t.Fatalf("solo row %q:\n%s", row, out)
	}
	out = mustCLI(t, g, "accounts", "list", "--json")
	var accts []struct {
		ID, Name, Balance, Currency string
	}
	if err := json.Unmarshal([]byte(out), &accts); err != nil || len(accts) != 2 {
		t.Fatalf("list --json: %v:\n%s", err, out)
	}
	for _, a := range accts {
		if a.ID == "acme" && (a.Balance != "10.00" || a.Currency != "USD" || a.Name != "Acme Corp") {
			t.Fatalf("list --json acme: %+v", a)
		}
	}

	// show: fields and JSON
	out = mustCLI(t, g, "accounts", "show", "acme")
	for _, want := range []string{"ID:", "acme", "Name:", "Acme Corp", "Balance:", "10.00 USD", "Disabled:", "Created:"} {
		if !strings.Contains(out, want) {
			t.Fatalf("show output lacks %q:\n%s", want, out)
		}
	}
	out = mustCLI(t, g, "--json", "accounts", "show", "acme")
	var one struct {
		ID, Balance string
		BalanceNano int64 `json:"balance_nano"`
	}
	if err := json.Unmarshal([]byte(out), &one); err != nil || one.ID != "acme" || one.Balance != "10.00" || one.BalanceNano != 10_000_000_000 {
		t.Fatalf("show --json: %v %+v:\n%s", err, one, out)
	}
	out = mustCLI(t, g, "accounts", "topup", "solo", "3", "--json")
	var adj struct {
		Account struct{ Balance string } `json:"account"`
		Entry   struct{ Amount string }  `json:"ledger_entry"`
	}
	if err := json.Unmarshal([]byte(out), &adj); err != nil || adj.Account.Balance != "3.00" || adj.Entry.Amount != "3.00" {
		t.Fatalf("topup --json: %v %+v:\n%s", err, adj, out)
	}
}

func TestCLIUnknownAccountAndKey(t *testing.T) {
	g, _ := startCLIGateway(t)
	g.NewAccount("acme", "1")

	cases := [][]string{
		{"accounts", "show", "nope"},
		{"accounts", "topup", "nope", "5"},
		{"keys", "create", "--account", "nope", "--name", "k"},
		{"keys", "list", "--account", "nope"},
	}
	for _, args := range cases {
		err := failCLI(t, g, args, `account "nope"`, "not found")
		var apiErr *adminAPIError
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
			t.Fatalf("%v: want an admin API 404, got %#v", args, err)
		}
	}
	for _, args := range [][]string{
		{"keys", "show", "key_nope"},
		{"keys", "rename", "key_nope", "x"},
		{"keys", "delete", "key_nope"},
		{"keys", "rotate", "key_nope"},
	} {
		failCLI(t, g, args, `key "key_nope"`, "not found", "HTTP 404")
	}
	if got := accountBalance(t, g, "acme"); got != "1.00" {
		t.Fatalf("balance changed: %s", got)
	}

	// unknown subcommands and missing required flags are errors too
	failCLI(t, g, []string{"accounts", "lst"}, `unknown command "lst"`, `did you mean "list"`)
	failCLI(t, g, []string{"bogus"}, `unknown command "bogus"`)
	failCLI(t, g, []string{"keys", "create", "--name", "k"}, `"account"`)
	failCLI(t, g, []string{"keys", "create", "--account", "acme", "--name", "k", "--expires-in", "1h", "--expires-at", "2030-01-01T00:00:00Z"}, "expires-at", "expires-in")
	failCLI(t, g, []string{"keys", "create", "--account", "acme", "--name", "k", "--expires-in", "soon"}, "expires_in", "HTTP 400")
	failCLI(t, g, []string{"keys", "rename", "key_x"}, "missing argument NAME")
}

func TestCLIKeysCreateWorksThroughGateway(t *testing.T) {
	g, mock := startCLIGateway(t)
	mustCLI(t, g, "accounts", "create", "acme")
	mustCLI(t, g, "accounts", "topup", "acme", "5")

	out := mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "production-app")
	secret := secretFrom(t, out)
	if len(secret) < 3+43 {
		t.Fatalf("key %q too short", secret)
	}
	id := keyIDFrom(t, out, "Created key ")
	if !strings.Contains(out, `("production-app") for account acme, expires never.`) {
		t.Fatalf("create output:\n%s", out)
	}
	chatOK(t, g, secret)
	if mock.Count() != 1 {
		t.Fatalf("mock saw %d requests", mock.Count())
	}

	// with an expiry, and --json: the API's answer, which has the key
	out = mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "ci", "--expires-in", "720h", "--json")
	var nk struct {
		ID, Key, Warning string
		ExpiresAt        *string `json:"expires_at"`
	}
	if err := json.Unmarshal([]byte(out), &nk); err != nil || !strings.HasPrefix(nk.Key, "sk-") || nk.Warning == "" || nk.ExpiresAt == nil {
		t.Fatalf("create --json: %v %+v:\n%s", err, nk, out)
	}
	chatOK(t, g, nk.Key)

	// list and show never print a plaintext key
	out = mustCLI(t, g, "keys", "list")
	if strings.Contains(out, secret) || strings.Contains(out, nk.Key) {
		t.Fatalf("list prints a key:\n%s", out)
	}
	if h := strings.Join(strings.Fields(strings.SplitN(out, "\n", 2)[0]), " "); h != "ID NAME ACCOUNT HINT CREATED LAST USED EXPIRES MODELS SPEND LIMIT" {
		t.Fatalf("keys header %q", h)
	}
	row := tableRow(t, out, id)
	if row[1] != "production-app" || row[2] != "acme" || !strings.HasPrefix(row[3], "sk-") || row[len(row)-3] != "never" ||
		row[len(row)-2] != "any" || row[len(row)-1] != "none" {
		t.Fatalf("key row %q:\n%s", row, out)
	}
	if !strings.HasSuffix(secret, strings.TrimPrefix(row[3][strings.LastIndex(row[3], "…"):], "…")) {
		t.Fatalf("hint %q does not match the key", row[3])
	}
	if r := tableRow(t, out, nk.ID); r[len(r)-3] == "never" {
		t.Fatalf("key with expiry shows EXPIRES never: %q", r)
	}
}

func TestCLIKeysDeleteRevokesAtOnce(t *testing.T) {
	g, _ := startCLIGateway(t)
	g.NewAccount("acme", "5")
	out := mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "k")
	secret, id := secretFrom(t, out), keyIDFrom(t, out, "Created key ")
	chatOK(t, g, secret) // cached as valid now

	out = mustCLI(t, g, "keys", "delete", id)
	if !strings.Contains(out, "Deleted key "+id) {
		t.Fatalf("delete output:\n%s", out)
	}
	chat401(t, g, secret)
	failCLI(t, g, []string{"keys", "show", id}, "not found")
	failCLI(t, g, []string{"keys", "delete", id}, "not found")
	if out := mustCLI(t, g, "keys", "list", "--account", "acme"); !strings.HasPrefix(out, "No keys.") {
		t.Fatalf("list after delete:\n%s", out)
	}
}

func TestCLIKeysRotate(t *testing.T) {
	g, _ := startCLIGateway(t)
	g.NewAccount("acme", "5")
	out := mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "app")
	old, oldID := secretFrom(t, out), keyIDFrom(t, out, "Created key ")
	chatOK(t, g, old)

	// without grace: the old key fails at once
	out = mustCLI(t, g, "keys", "rotate", oldID)
	next := secretFrom(t, out)
	nextID := keyIDFrom(t, out, "the new key is ")
	if next == old || nextID == oldID {
		t.Fatal("rotation returned the old key")
	}
	if !strings.Contains(out, "The old key "+oldID+" stopped working now.") {
		t.Fatalf("rotate output:\n%s", out)
	}
	chat401(t, g, old)
	chatOK(t, g, next)
	failCLI(t, g, []string{"keys", "rotate", oldID}, "not found")

	// with a grace period: both keys work until it ends
	out = mustCLI(t, g, "keys", "rotate", nextID, "--grace", "1h")
	third := secretFrom(t, out)
	thirdID := keyIDFrom(t, out, "the new key is ")
	if !strings.Contains(out, "The old key "+nextID+" keeps working until ") {
		t.Fatalf("rotate --grace output:\n%s", out)
	}
	chatOK(t, g, next)
	chatOK(t, g, third)
	out = mustCLI(t, g, "keys", "show", nextID)
	if !strings.Contains(out, "Replaced by:") || !strings.Contains(out, thirdID) {
		t.Fatalf("show of a rotated key:\n%s", out)
	}
	// a key rotated with grace cannot be rotated again
	failCLI(t, g, []string{"keys", "rotate", nextID}, "already rotated", "HTTP 400")
	failCLI(t, g, []string{"keys", "rotate", thirdID, "--grace", "-1h"}, "grace", "HTTP 400")

	// --json
	out = mustCLI(t, g, "--json", "keys", "rotate", thirdID)
	var res struct {
		New struct{ ID, Key string } `json:"new"`
		Old struct{ ID string }      `json:"old"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Old.ID != thirdID || !strings.HasPrefix(res.New.Key, "sk-") {
		t.Fatalf("rotate --json: %v %+v:\n%s", err, res, out)
	}
	chat401(t, g, third)
	chatOK(t, g, res.New.Key)
}

func TestCLIKeysRenameListShow(t *testing.T) {
	g, _ := startCLIGateway(t)
	g.NewAccount("acme", "5")
	g.NewAccount("other", "5")
	id, secret := g.NewKey("acme", "first")
	otherID, _ := g.NewKey("other", "theirs")

	out := mustCLI(t, g, "keys", "rename", id, "renamed app")
	if !strings.Contains(out, `Renamed key `+id+` to "renamed app".`) {
		t.Fatalf("rename output:\n%s", out)
	}
	failCLI(t, g, []string{"keys", "rename", id, " "}, "must not be empty")

	out = mustCLI(t, g, "keys", "list", "--account", "acme")
	if row := tableRow(t, out, id); row[1] != "renamed" || row[2] != "app" || row[3] != "acme" {
		t.Fatalf("row %q:\n%s", row, out)
	}
	if strings.Contains(out, otherID) {
		t.Fatalf("--account acme lists a key of another account:\n%s", out)
	}
	out = mustCLI(t, g, "keys", "list")
	tableRow(t, out, id)
	tableRow(t, out, otherID)

	out = mustCLI(t, g, "keys", "list", "--json", "--account", "other")
	var keys []struct{ ID, Name string }
	if err := json.Unmarshal([]byte(out), &keys); err != nil || len(keys) != 1 || keys[0].ID != otherID {
		t.Fatalf("list --json: %v %+v:\n%s", err, keys, out)
	}

	chatOK(t, g, secret)
	out = mustCLI(t, g, "keys", "show", id)
	for _, want := range []string{"ID:", id, "Name:", "renamed app", "Account:", "acme", "Hint:", "sk-", "Status:", "active", "Expires:", "never"} {
		if !strings.Contains(out, want) {
			t.Fatalf("show lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, secret) {
		t.Fatalf("show prints the key:\n%s", out)
	}
	out = mustCLI(t, g, "keys", "show", id, "--json")
	var k struct {
		ID, Name string
		Account  string `json:"account_id"`
	}
	if err := json.Unmarshal([]byte(out), &k); err != nil || k.ID != id || k.Name != "renamed app" || k.Account != "acme" {
		t.Fatalf("show --json: %v %+v:\n%s", err, k, out)
	}
}

func TestCLIFindsAdminAddressInConfig(t *testing.T) {
	g, _ := startCLIGateway(t)
	g.NewAccount("acme", "7")
	dir := t.TempDir()
	caddyfile := fmt.Sprintf("{\n\tadmin %s\n}\n", g.AdminAddr)

	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := map[string][]string{
		// explicit adapter, a name that says nothing
		"adapter": {"--config", write("gateway.conf", caddyfile), "--adapter", "caddyfile"},
		// detected from the name, as caddy reload does
		"Caddyfile name": {"--config", write("Caddyfile", caddyfile)},
		// Caddy JSON needs no adapter
		"json": {"-c", write("caddy.json", fmt.Sprintf(`{"admin":{"listen":%q}}`, g.AdminAddr))},
	}
	for name, flags := range cases {
		t.Run(name, func(t *testing.T) {
			out, err := runCLIArgs(t, append(flags, "accounts", "list")...)
			if err != nil {
				t.Fatalf("%v: %v", flags, err)
			}
			if row := tableRow(t, out, "acme"); row[2] != "7.00" {
				t.Fatalf("row %q", row)
			}
		})
	}

	// --address wins over --config
	other := gwtest.FreePort(t)
	if _, err := runCLIArgs(t, "--address", g.AdminAddr, "--config", write("x.json", fmt.Sprintf(`{"admin":{"listen":"127.0.0.1:%d"}}`, other)), "accounts", "list"); err != nil {
		t.Fatalf("--address with --config: %v", err)
	}
	if _, err := runCLIArgs(t, "--config", filepath.Join(dir, "missing.json"), "accounts", "list"); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Fatalf("missing config file: %v", err)
	}
	if _, err := runCLIArgs(t, "--adapter", "caddyfile", "accounts", "list"); err == nil || !strings.Contains(err.Error(), "--adapter needs --config") {
		t.Fatalf("--adapter without --config: %v", err)
	}
}

func TestCLIUnreachableAdmin(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", gwtest.FreePort(t))
	_, err := runCLIArgs(t, "--address", addr, "accounts", "list")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the Caddy admin API at "+addr) {
		t.Fatalf("want a clear error naming %s, got %v", addr, err)
	}
	// a topup with a bad amount fails before any request
	_, err = runCLIArgs(t, "--address", addr, "accounts", "topup", "acme", "abc")
	if err == nil || strings.Contains(err.Error(), "cannot reach") || !strings.Contains(err.Error(), `"abc"`) {
		t.Fatalf("bad amount: %v", err)
	}
}

func TestCLIAdminRunningWithoutGateway(t *testing.T) {
	g := gwtest.New(t)
	// a config without any ai_gateway module: the API says so
	g.Load(fmt.Sprintf("{\n\tadmin %s\n\tpersist_config off\n}\n", g.AdminAddr))
	failCLI(t, g, []string{"accounts", "list"}, "ai_gateway", "HTTP 503")
}

func TestCmdRegisteredWithCaddy(t *testing.T) {
	c, ok := caddycmd.Commands()["ai-gateway"]
	if !ok || c.CobraFunc == nil || c.Short == "" {
		t.Fatalf("ai-gateway command not registered: %+v", c)
	}
	// build it as Caddy does
	cmd := &cobra.Command{Use: c.Name + " " + c.Usage, Short: c.Short, Long: c.Long}
	c.CobraFunc(cmd)
	var out bytes.Buffer
	root := &cobra.Command{Use: "caddy", SilenceUsage: true}
	root.AddCommand(cmd)
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"ai-gateway", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"accounts", "keys", "--address", "--config", "--adapter", "--json", "shown", "caddy ai-gateway accounts topup"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("help lacks %q:\n%s", want, out.String())
		}
	}
	for _, path := range [][]string{
		{"accounts", "create"}, {"accounts", "list"}, {"accounts", "show"}, {"accounts", "topup"},
		{"keys", "create"}, {"keys", "list"}, {"keys", "show"}, {"keys", "rename"}, {"keys", "delete"}, {"keys", "rotate"},
	} {
		sub, _, err := cmd.Find(path)
		if err != nil || sub.Name() != path[1] || sub.Short == "" {
			t.Fatalf("subcommand %v: %v", path, err)
		}
	}

	// help of the subcommand that parses its own flags
	out.Reset()
	root.SetArgs([]string{"ai-gateway", "accounts", "topup", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "negative") || !strings.Contains(out.String(), "--note") {
		t.Fatalf("topup help:\n%s", out.String())
	}

	// a failing command returns the error for Caddy to exit 1
	root.SetArgs([]string{"ai-gateway", "--address", fmt.Sprintf("127.0.0.1:%d", gwtest.FreePort(t)), "keys", "list"})
	if err := root.Execute(); err == nil {
		t.Fatal("no error from an unreachable admin endpoint")
	}
}

func TestCLIKeyPolicies(t *testing.T) {
	g, mock := startCLIGateway(t)
	g.NewAccount("acme", "5")

	out := mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "capped",
		"--models", "mock-*, o3*", "--limit", "0.000005", "--limit-period", "day")
	secret := secretFrom(t, out)
	if !strings.Contains(out, "Models: mock-*,o3*; spend limit: 0.00 of 0.000005/day, resets ") {
		t.Fatalf("create output:\n%s", out)
	}
	id := strings.Fields(strings.SplitN(out, "Created key ", 2)[1])[0]

	// mock-model costs 0.0000048 a request: two fit under 0.000005
	chatOK(t, g, secret)
	chatOK(t, g, secret)
	_, err := gwtest.Chat(context.Background(), gwtest.Client(g, secret))
	if e := gwtest.APIErrorOf(t, err); e.StatusCode != http.StatusForbidden || e.Code != "key_limit_exceeded" {
		t.Fatalf("over the limit: %v", err)
	}
	if mock.Count() != 2 {
		t.Fatalf("provider saw %d requests", mock.Count())
	}
	out = mustCLI(t, g, "keys", "show", id)
	for _, want := range []string{"Models:", "mock-*,o3*", "Spend limit:", "0.0000096 of 0.000005/day, resets "} {
		if !strings.Contains(out, want) {
			t.Fatalf("show lacks %q:\n%s", want, out)
		}
	}
	out = mustCLI(t, g, "keys", "list")
	if row := strings.Join(tableRow(t, out, id), " "); !strings.Contains(row, "mock-*,o3*") || !strings.Contains(row, "0.0000096 of 0.000005/day") {
		t.Fatalf("list row %q", row)
	}

	// raise the limit, narrow the models
	out = mustCLI(t, g, "keys", "update", id, "--limit", "1", "--models", "o3*")
	if !strings.Contains(out, "Updated key "+id) || !strings.Contains(out, "of 1") {
		t.Fatalf("update output:\n%s", out)
	}
	_, err = gwtest.Chat(context.Background(), gwtest.Client(g, secret))
	if e := gwtest.APIErrorOf(t, err); e.StatusCode != http.StatusForbidden || e.Code != "model_not_allowed" {
		t.Fatalf("outside the allowlist: %v", err)
	}
	mustCLI(t, g, "keys", "update", id, "--any-model", "--no-limit", "--name", "free")
	chatOK(t, g, secret)
	out = mustCLI(t, g, "keys", "show", id, "--json")
	var k struct {
		Name          string          `json:"name"`
		AllowedModels []string        `json:"allowed_models"`
		SpendLimit    json.RawMessage `json:"spend_limit"`
	}
	if err := json.Unmarshal([]byte(out), &k); err != nil || k.Name != "free" || k.AllowedModels != nil || k.SpendLimit != nil {
		t.Fatalf("after clearing: %+v %v\n%s", k, err, out)
	}
	// expiry set and removed from the CLI
	mustCLI(t, g, "keys", "update", id, "--expires-in", "1h")
	if out = mustCLI(t, g, "keys", "show", id); strings.Contains(out, "Expires:     never") {
		t.Fatalf("expiry not set:\n%s", out)
	}
	mustCLI(t, g, "keys", "update", id, "--no-expiry")

	failCLI(t, g, []string{"keys", "update", id}, "nothing to change")
	failCLI(t, g, []string{"keys", "update", id, "--limit-period", "day"}, "--limit-period goes with --limit")
	failCLI(t, g, []string{"keys", "update", id, "--models", " , "}, "at least one model pattern")
	failCLI(t, g, []string{"keys", "update", id, "--limit", "0"}, "greater than zero")
	failCLI(t, g, []string{"keys", "update", id, "--limit", "1", "--limit-period", "week"}, "total, day or month")
	failCLI(t, g, []string{"keys", "update", id, "--models", "[bad"}, "[bad")
	failCLI(t, g, []string{"keys", "update", "key_nope", "--name", "x"}, "not found")
}
