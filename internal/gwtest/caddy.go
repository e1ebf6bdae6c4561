package gwtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile" // the Caddyfile adapter
	_ "github.com/caddyserver/caddy/v2/modules/standard"      // reverse_proxy & co.
	"github.com/metask/caddy-ai-gateway/internal/pgtest"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Gateway is the in-process Caddy of one test. Caddy is process-global, so
// tests of one package that use a Gateway must not run in parallel.
type Gateway struct {
	AdminAddr string // 127.0.0.1:port
	HTTPPort  int
	BaseURL   string // http://127.0.0.1:port
	DBPath    string // an SQLite path, or a PostgreSQL URL (OnPostgres)
	Dir       string // the test's temp dir (database, logs)

	t testing.TB
}

// New picks free loopback ports and a database path in t.TempDir() (with
// AIGW_TEST_STORE=postgres: a fresh database on the test PostgreSQL, see
// internal/pgtest), and stops Caddy when the test ends.
func New(t testing.TB) *Gateway {
	t.Helper()
	dir := t.TempDir()
	db := filepath.Join(dir, "gateway.db")
	if OnPostgres() {
		db = pgtest.NewDatabase(t)
	}
	g := &Gateway{
		AdminAddr: fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		HTTPPort:  FreePort(t),
		DBPath:    db,
		Dir:       dir,
		t:         t,
	}
	g.BaseURL = fmt.Sprintf("http://127.0.0.1:%d", g.HTTPPort)
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Logf("stopping caddy: %v", err)
		}
	})
	return g
}

// OnPostgres reports whether the tests run their gateways on PostgreSQL
// (AIGW_TEST_STORE=postgres).
func OnPostgres() bool { return os.Getenv("AIGW_TEST_STORE") == "postgres" }

// Caddyfile wraps site directives in a complete Caddyfile: global options
// that bind the admin endpoint and the site to this test's loopback ports,
// keep Caddy's state in the test's temp dir, and point ai_gateway at the
// test database. extraGlobal is added to the global options block.
func (g *Gateway) Caddyfile(siteBody, extraGlobal string) string {
	return fmt.Sprintf(`{
	admin %s
	persist_config off
	auto_https off
	http_port %d
	storage file_system %s
	log {
		output file %s
		level INFO
	}
	ai_gateway {
		database %s
	}
%s}

http://127.0.0.1:%d {
	bind 127.0.0.1
%s
}
`, g.AdminAddr, g.HTTPPort, filepath.Join(g.Dir, "caddy-storage"), filepath.Join(g.Dir, "caddy.log"),
		g.DBPath, indentGlobal(extraGlobal), g.HTTPPort, siteBody)
}

// indentGlobal places extra global options one level in, as caddy fmt does.
func indentGlobal(extra string) string {
	extra = strings.TrimSpace(extra)
	if extra == "" {
		return ""
	}
	return "\t" + extra + "\n"
}

// Adapt turns a Caddyfile into Caddy JSON, failing the test on errors or
// warnings.
func Adapt(t testing.TB, caddyfile string) []byte {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfg, warnings, err := adapter.Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, caddyfile)
	}
	for _, w := range warnings {
		t.Logf("caddyfile warning: %s", w.String())
	}
	return cfg
}

// Load loads a complete Caddyfile into the in-process Caddy and waits until
// the admin endpoint answers.
func (g *Gateway) Load(caddyfile string) {
	g.t.Helper()
	g.LoadJSON(Adapt(g.t, caddyfile))
}

// LoadJSON loads a JSON config into the in-process Caddy and waits until the
// admin endpoint answers.
func (g *Gateway) LoadJSON(cfg []byte) {
	g.t.Helper()
	if err := caddy.Load(cfg, true); err != nil {
		g.t.Fatalf("loading config: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + g.AdminAddr + "/config/")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("admin endpoint %s did not come up: %v", g.AdminAddr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LoadSite is Load(Caddyfile(siteBody, "")).
func (g *Gateway) LoadSite(siteBody string) {
	g.t.Helper()
	g.Load(g.Caddyfile(siteBody, ""))
}

// Admin sends a request to the admin API and returns status and body. body
// may be nil, a string (sent as is) or a value marshalled as JSON.
func (g *Gateway) Admin(method, path string, body any) (int, []byte) {
	g.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			g.t.Fatalf("marshalling admin body: %v", err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, "http://"+g.AdminAddr+path, rd)
	if err != nil {
		g.t.Fatalf("admin request: %v", err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// Never reuse a connection: a config load replaces the admin server and
	// closes idle connections to the old one under a reused request.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatalf("admin request %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// MustAdmin is Admin that fails the test unless the status is want, and
// decodes the JSON answer into out (if not nil).
func (g *Gateway) MustAdmin(method, path string, body any, want int, out any) {
	g.t.Helper()
	status, b := g.Admin(method, path, body)
	if status != want {
		g.t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			g.t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
}

// NewAccount creates an account and, unless topup is "", tops it up.
func (g *Gateway) NewAccount(id, topup string) {
	g.t.Helper()
	g.MustAdmin("POST", "/ai-gateway/accounts", map[string]string{"id": id, "name": id}, http.StatusCreated, nil)
	if topup != "" {
		g.MustAdmin("POST", "/ai-gateway/accounts/"+id+"/balance",
			map[string]string{"amount": topup, "note": "test top-up"}, http.StatusOK, nil)
	}
}

// NewKey creates a key and returns its id and plaintext.
func (g *Gateway) NewKey(account, name string) (id, secret string) {
	g.t.Helper()
	var k struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	g.MustAdmin("POST", "/ai-gateway/keys", map[string]string{"account": account, "name": name}, http.StatusCreated, &k)
	if k.ID == "" || !strings.HasPrefix(k.Key, "sk-") {
		g.t.Fatalf("key creation returned %+v", k)
	}
	return k.ID, k.Key
}
