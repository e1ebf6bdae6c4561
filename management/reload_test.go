package management

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// reloadJSON adapts caddyfile and lets edit change the JSON config.
func reloadJSON(t *testing.T, caddyfile string, edit func(cfg map[string]any)) map[string]any {
	t.Helper()
	var cfg map[string]any
	if err := json.Unmarshal(gwtest.Adapt(t, caddyfile), &cfg); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(cfg)
	}
	return cfg
}

// TestRejectedReloadKeepsServing: a reload whose ai_gateway app or guard
// fails to provision is refused with 400 and leaves the running config
// serving with its store (before the fix, the failed config's Cleanup
// released the running store and every request got 503 store_unavailable).
func TestRejectedReloadKeepsServing(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	good := g.Caddyfile(gwtest.Site(mock.URL), "")
	g.Load(good)
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "app")
	call := func(when string) {
		t.Helper()
		resp, body := gwtest.RawPost(t, g, []string{"Bearer " + secret})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d: %s", when, resp.StatusCode, body)
		}
	}
	call("before the reloads")
	before := lcCountPool()

	bad := map[string]func(cfg map[string]any){
		"negative key_cache_size": func(cfg map[string]any) {
			cfg["apps"].(map[string]any)["ai_gateway"].(map[string]any)["key_cache_size"] = -1
		},
		"bad price": nil, // set below: a Caddyfile the adapter accepts, the guard refuses
	}
	for name, edit := range bad {
		var cfg map[string]any
		if edit != nil {
			cfg = reloadJSON(t, good, edit)
		} else {
			site := strings.Replace(gwtest.Site(mock.URL), "price mock-* input 0.15 output 0.60",
				"alias fast cheap\n\t\t\talias cheap mock-model", 1)
			cfg = reloadJSON(t, g.Caddyfile(site, ""), nil)
		}
		status, body := g.Admin("POST", "/load", cfg)
		if status != http.StatusBadRequest {
			t.Fatalf("%s: reload answered %d, want 400: %s", name, status, body)
		}
		call("after the rejected reload (" + name + ")")
		if got := lcCountPool(); len(got) != len(before) || got[g.DBPath] != before[g.DBPath] {
			t.Fatalf("%s: store pool %v, want %v", name, got, before)
		}
	}
}

// TestReloadSwitchingDatabaseWarns: a reload that drops the ai_gateway
// block or points it at another file says so in the log, naming both.
func TestReloadSwitchingDatabaseWarns(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.Load(g.Caddyfile(gwtest.Site(mock.URL), ""))
	other := filepath.Join(g.Dir, "other.db")
	cfg := reloadJSON(t, g.Caddyfile(gwtest.Site(mock.URL), ""), func(cfg map[string]any) {
		cfg["apps"].(map[string]any)["ai_gateway"].(map[string]any)["database"] = other
	})
	g.MustAdmin("POST", "/load", cfg, http.StatusOK, nil)
	log, err := os.ReadFile(filepath.Join(g.Dir, "caddy.log"))
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "database changes") && strings.Contains(line, `"old_database":"`+g.DBPath+`"`) &&
			strings.Contains(line, `"new_database":"`+other+`"`) && strings.Contains(line, `"level":"warn"`) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no warning naming %s and %s in the log:\n%s", g.DBPath, other, log)
	}
}

// TestValidateTouchesNoDatabase: validating a config that uses every module
// of the gateway provisions them all but opens, creates and locks no
// database file (the store opens when a config starts), so `caddy validate`
// works beside a running gateway and leaves no file behind.
func TestValidateTouchesNoDatabase(t *testing.T) {
	g := gwtest.New(t)
	site := gwtest.Site("http://127.0.0.1:9") + `
	handle /dashboard/* {
		basic_auth {
			acme $2a$12$c78kpOZc/y5dyA1fCs8N2uHlqcd7t5vFkTU.E4vZoILLSH0HIiiha
		}
		ai_dashboard
	}`
	var cfg caddy.Config
	if err := json.Unmarshal(gwtest.Adapt(t, g.Caddyfile(site, "")), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("validate: %v", err)
	}
	for _, suffix := range []string{"", "-wal", "-shm", ".lock"} {
		if _, err := os.Stat(g.DBPath + suffix); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("validate left %s behind (stat: %v)", g.DBPath+suffix, err)
		}
	}
	if got := lcCountPool(); len(got) != 0 {
		t.Fatalf("validate left stores open: %v", got)
	}
}
