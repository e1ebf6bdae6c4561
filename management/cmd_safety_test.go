package management

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// recorder is an admin endpoint that counts the requests it gets and
// answers every one with an empty JSON list.
func recorder(t *testing.T) (addr string, requests *atomic.Int64) {
	t.Helper()
	requests = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("[]\n"))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), requests
}

// plaintext is a key of the store's shape (never issued by any store).
const plaintext = "sk-YaDhYmWVCR1ZUrp2NMwdIrTavF2FRMJg4KeNPyyOn0sjN6UY"

// TestCLIRefusesPlaintextKeyAsID: every command that takes a key id (or any
// id) refuses a plaintext key before sending anything, shows it only
// masked, and says how to find the id.
func TestCLIRefusesPlaintextKeyAsID(t *testing.T) {
	addr, requests := recorder(t)
	masked, hint := keystore.MaskKey(plaintext), "sk-…N6UY"
	for _, args := range [][]string{
		{"keys", "show", plaintext},
		{"keys", "rename", plaintext, "new-name"},
		{"keys", "update", plaintext, "--name", "x"},
		{"keys", "delete", plaintext},
		{"keys", "revoke", plaintext},
		{"keys", "rotate", plaintext, "--grace", "1h"},
		{"keys", "show", plaintext[:20]}, // a truncated key is still a key
		{"usage", "--key", plaintext},
		{"usage", "--key", plaintext[:20]},
		{"keys", "list", "--account", plaintext},
		{"accounts", "show", plaintext},
		{"accounts", "topup", plaintext, "5"},
		{"accounts", "topup", "acme", "5", "--note", plaintext},
		{"accounts", "topup", "acme", "5", "--note=" + plaintext},
		{"accounts", "disable", plaintext},
		{"keys", "create", "--account", "acme", "--name", plaintext},
	} {
		out, err := runCLIArgs(t, append([]string{"--address", addr}, args...)...)
		name := strings.Join(args[:2], " ")
		if err == nil {
			t.Errorf("%s: accepted a plaintext key:\n%s", name, out)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg+out, plaintext[10:30]) {
			t.Errorf("%s: the key is echoed: %q", name, msg)
		}
		if !strings.Contains(msg, "caddy ai-gateway keys list") || !strings.Contains(msg, "nothing was sent") {
			t.Errorf("%s: the message does not say how to find the id: %q", name, msg)
		}
		if len(args[2]) == len(plaintext) && strings.HasPrefix(args[len(args)-1], "sk") && !strings.Contains(msg, masked) {
			t.Errorf("%s: the message does not show the masked key %s: %q", name, masked, msg)
		}
		if strings.Contains(msg, masked) && !strings.Contains(msg, hint) {
			t.Errorf("%s: the message does not name the key's HINT %s: %q", name, hint, msg)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests reached the admin API", n)
	}
	// a key id and an account id that merely starts with sk- still work
	for _, args := range [][]string{{"keys", "list", "--account", "sk-labs"}, {"accounts", "list"}} {
		if _, err := runCLIArgs(t, append([]string{"--address", addr}, args...)...); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// TestAdminAPIRefusesPlaintextKeyAsID: the admin API itself refuses a
// plaintext key where an id belongs (curl users), echoing it only masked.
func TestAdminAPIRefusesPlaintextKeyAsID(t *testing.T) {
	g, _ := startCLIGateway(t)
	g.NewAccount("acme", "1")
	_, secret := g.NewKey("acme", "k")
	for _, c := range []struct{ method, path string }{
		{"GET", "/ai-gateway/keys/" + secret},
		{"DELETE", "/ai-gateway/keys/" + secret},
		{"PATCH", "/ai-gateway/keys/" + secret},
		{"POST", "/ai-gateway/keys/" + secret + "/rotate"},
		{"GET", "/ai-gateway/usage?key=" + secret},
		{"GET", "/ai-gateway/keys?account=" + secret},
		{"GET", "/ai-gateway/accounts/" + secret},
	} {
		status, body := g.Admin(c.method, c.path, nil)
		if status != http.StatusBadRequest || bytes.Contains(body, []byte(secret)) ||
			!bytes.Contains(body, []byte(keystore.MaskKey(secret))) {
			t.Errorf("%s %s: %d %s", c.method, strings.Replace(c.path, secret, "SECRET", 1), status, bytes.ReplaceAll(body, []byte(secret), []byte("SECRET")))
		}
	}
	// the key still works: nothing was deleted or rotated
	chatOK(t, g, secret)
}

// TestCLITopupZeroRefusedLocally: a zero amount is refused before anything
// is sent, as the docs promise for amounts.
func TestCLITopupZeroRefusedLocally(t *testing.T) {
	addr, requests := recorder(t)
	for _, amount := range []string{"0", "0.000", "-0"} {
		_, err := runCLIArgs(t, "--address", addr, "accounts", "topup", "acme", amount)
		if err == nil || !strings.Contains(err.Error(), "zero") {
			t.Errorf("topup %s: %v", amount, err)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests reached the admin API", n)
	}
}

// TestCLIAddressForms: --address takes host:port or an http URL; anything
// else is refused with a message about the address, not "cannot reach".
func TestCLIAddressForms(t *testing.T) {
	addr, requests := recorder(t)
	for _, a := range []string{addr, "http://" + addr, "http://" + addr + "/", "HTTP://" + addr} {
		if _, err := runCLIArgs(t, "--address", a, "accounts", "list"); err != nil {
			t.Errorf("--address %s: %v", a, err)
		}
	}
	if n := requests.Load(); n != 4 {
		t.Errorf("%d requests reached the admin API, want 4", n)
	}
	for a, want := range map[string]string{
		"https://" + addr:             "plain http",
		"ftp://" + addr:               "not supported",
		"http://" + addr + "/config/": "no path",
		"http://user:pw@" + addr:      "credentials",
		"localhost:notaport":          "not an admin address",
		"localhost":                   "no port",
		"http://":                     "no host",
		"127.0.0.1:2019-2020":         "port range",
	} {
		_, err := runCLIArgs(t, "--address", a, "accounts", "list")
		if err == nil || strings.Contains(err.Error(), "cannot reach") || !strings.Contains(err.Error(), want) {
			t.Errorf("--address %s: %v, want an error mentioning %q", a, err, want)
		}
	}
	if n := requests.Load(); n != 4 {
		t.Errorf("a refused address sent a request")
	}
}

// TestCLIKeysListMatchesDocs: the keys list example of docs/admin-api.md is
// what the CLI prints for those keys (amounts as keystore.FormatAmount
// writes them: 5.00/day, not 5/day).
func TestCLIKeysListMatchesDocs(t *testing.T) {
	doc, err := os.ReadFile("../docs/admin-api.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "$ caddy ai-gateway keys list --account acme\n")
	if !ok {
		t.Fatal("docs/admin-api.md has no keys list example")
	}
	lines := strings.SplitN(rest, "\n", 4)[:3]
	at := func(s string) *time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return &tm
	}
	spent, held := int64(14_400), int64(0)
	keys := []KeyView{
		{Key: keystore.Key{ID: "key_qshkQuFl09Vs6HBH", Name: "my-laptop", AccountID: "acme", Hint: "sk-…N6UY",
			CreatedAt: *at("2026-11-25T14:00:10Z"), LastUsedAt: at("2026-11-25T14:00:13Z"), Status: "active"}},
		{Key: keystore.Key{ID: "key_Tx0b7DkA2mQ1uY8c", Name: "ci", AccountID: "acme", Hint: "sk-…4fQe",
			CreatedAt: *at("2026-11-25T14:05:00Z"), Status: "active", AllowedModels: []string{"gpt-4o-mini"}},
			SpendLimit: &SpendLimitView{AmountNano: 5_000_000_000, Amount: "5.00", Period: keystore.PeriodDay,
				SpentNano: &spent, Spent: "0.0000144", HeldNano: &held, Held: "0.00", ResetsAt: at("2026-11-26T00:00:00Z")}},
	}
	var out bytes.Buffer
	if err := printKeys(&out, keys); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimRight(out.String(), "\n"), strings.Join(lines, "\n"); got != want {
		t.Errorf("the CLI prints\n%s\nthe docs show\n%s", got, want)
	}
}

// TestAdminAPIRefusesNULBytes: an id or filter with a NUL byte is a 400
// (on PostgreSQL, which stores no NUL, it was a 500 with the database's
// error text).
func TestAdminAPIRefusesNULBytes(t *testing.T) {
	g, _ := startCLIGateway(t)
	g.NewAccount("acme", "1")
	for _, path := range []string{
		"/ai-gateway/accounts/a%00",
		"/ai-gateway/keys/k%00",
		"/ai-gateway/audit?actor=%00",
		"/ai-gateway/usage?model=gpt%00",
		"/ai-gateway/keys?account=acme%00",
	} {
		status, body := g.Admin("GET", path, nil)
		if status != http.StatusBadRequest || !bytes.Contains(body, []byte("NUL byte")) {
			t.Errorf("GET %s: %d %s", path, status, body)
		}
	}
}
