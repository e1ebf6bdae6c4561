package management

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// A PostgreSQL database given with its password in an {env.*} placeholder
// serves the gateway, and the password appears nowhere: not in Caddy's
// log, not in the admin API, not in the error of a config whose database
// cannot be opened.
func TestPostgresDatabasePasswordNeverShown(t *testing.T) {
	dsn := pgtest.NewDatabase(t) // the test server trusts local connections: any password works
	b := make([]byte, 12)
	rand.Read(b)
	secret := "pw" + hex.EncodeToString(b)
	t.Setenv("AIGW_TEST_PG_PASSWORD", secret)

	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.DBPath = strings.Replace(dsn, "postgres://postgres@", "postgres://postgres:{env.AIGW_TEST_PG_PASSWORD}@", 1)
	g.LoadSite(gwtest.Site(mock.URL))
	g.NewAccount("acme", "5")
	_, key := g.NewKey("acme", "prod")
	chatOK(t, g, key)
	status, body := g.Admin("POST", "/ai-gateway/backup", map[string]string{"path": filepath.Join(t.TempDir(), "b.db")})
	if status != 400 || !strings.Contains(string(body), "pg_dump") {
		t.Fatalf("backup of a PostgreSQL store: %d %s", status, body)
	}
	if strings.Contains(string(body), secret) {
		t.Fatalf("backup answer shows the password: %s", body)
	}

	// A config whose database cannot be opened fails with an error that
	// names it without the password.
	missing := strings.Replace(dsn, "@/t", "@/nosuch_t", 1)
	bad := *g
	bad.DBPath = strings.Replace(missing, "postgres://postgres@", "postgres://postgres:{env.AIGW_TEST_PG_PASSWORD}@", 1)
	err := caddy.Load(gwtest.Adapt(t, bad.Caddyfile(gwtest.Site(mock.URL), "")), true)
	if err == nil {
		t.Fatal("a config with a missing PostgreSQL database loaded")
	}
	if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "xxxxx") {
		t.Fatalf("load error: %v", err)
	}
	chatOKAfterLoad(t, g, key) // the running config is untouched

	// Every metric labelled with the database names it without the
	// password (the ledger backlog gauges and the write-error counter
	// once showed it in clear).
	_, raw := gwtest.Scrape(t, g)
	if strings.Contains(raw, secret) {
		t.Fatalf("/metrics shows the database password")
	}
	for _, name := range []string{"caddy_ai_gateway_ledger_pending_writes", "caddy_ai_gateway_ledger_backlogged"} {
		if !strings.Contains(raw, name+`{database="postgres://postgres:xxxxx@`) {
			t.Fatalf("/metrics has no %s for the redacted database", name)
		}
	}

	logs, rerr := os.ReadFile(filepath.Join(g.Dir, "caddy.log"))
	if rerr != nil {
		t.Fatal(rerr)
	}
	if strings.Contains(string(logs), secret) {
		t.Fatalf("Caddy's log shows the database password:\n%s", logs)
	}
	if !strings.Contains(string(logs), `"backend":"postgres"`) || !strings.Contains(string(logs), "postgres:xxxxx@") {
		t.Fatalf("the log does not name the PostgreSQL database (redacted):\n%s", logs)
	}
}

// TestClusterSettingsReloadWarns: the cluster settings apply when the
// database is opened; a reload that changes them keeps the running values
// and says so in the log, and a reload that does not change them says
// nothing (an outsider changed lease by reload and saw nothing happen).
func TestClusterSettingsReloadWarns(t *testing.T) {
	const warning = "apply when the database is opened"
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.DBPath = pgtest.NewDatabase(t)
	g.LoadSite(gwtest.Site(mock.URL))
	g.LoadSite(gwtest.Site(mock.URL) + "\n") // same settings: no warning
	withLease := func(lease string) {
		var cfg map[string]any
		if err := json.Unmarshal(gwtest.Adapt(t, g.Caddyfile(gwtest.Site(mock.URL), "")), &cfg); err != nil {
			t.Fatal(err)
		}
		cfg["apps"].(map[string]any)["ai_gateway"].(map[string]any)["lease"] = lease
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		g.LoadJSON(b)
	}
	withLease("1.00") // the default, spelled out: no warning
	withLease("0")
	logs, err := os.ReadFile(filepath.Join(g.Dir, "caddy.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(logs), warning); n != 1 {
		t.Fatalf("%d warnings about the cluster settings after one reload that changed them, want 1:\n%s", n, logs)
	}
	if !strings.Contains(string(logs), `"running_lease":"1.00","configured_lease":"0.00"`) {
		t.Fatalf("the warning does not give the configured lease:\n%s", logs)
	}
}
