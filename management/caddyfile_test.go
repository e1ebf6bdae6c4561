package management

// Every error branch of the ai_gateway global option, with the line Caddy
// reports, and the app config Provision refuses. What a correct option
// adapts to is in e2e/testdata/caddyfile_adapt.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// argErr is the start of Caddy's message for a missing or extra argument;
// the token it names follows in quotes.
const argErr = "wrong argument count or unexpected line ending after "

// appBlock is an ai_gateway block holding lines; lines[i] is on line i+2
// of the Testfile.
func appBlock(lines ...string) string {
	return "ai_gateway {\n\t" + strings.Join(lines, "\n\t") + "\n}"
}

func TestAppCaddyfile(t *testing.T) {
	var a App
	err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(appBlock(
		"database {env.HOME}/gateway.db",
		"currency EUR",
		"key_cache_size 1",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if a.Database != "{env.HOME}/gateway.db" || a.Currency != "EUR" || a.KeyCacheSize != 1 {
		t.Fatalf("parsed %+v", a)
	}
}

func TestAppCaddyfileErrors(t *testing.T) {
	for _, c := range []struct {
		name, input, want string
		line              int
	}{
		{"argument after the option", "ai_gateway extra", argErr + "'extra'", 1},
		{"unknown option", appBlock("currency USD", "datadir /var/lib"), `unrecognized ai_gateway option "datadir"`, 3},
		{"database without a path", appBlock("database"), argErr + "'database'", 2},
		{"database with two paths", appBlock("database a.db b.db"), argErr + "'b.db'", 2},
		{"currency without a code", appBlock("currency"), argErr + "'currency'", 2},
		{"currency with two codes", appBlock("currency USD EUR"), argErr + "'EUR'", 2},
		{"key_cache_size without a number", appBlock("key_cache_size"), argErr + "'key_cache_size'", 2},
		{"key_cache_size not a number", appBlock("key_cache_size many"), `key_cache_size must be a positive integer, got "many"`, 2},
		{"key_cache_size zero", appBlock("key_cache_size 0"), `key_cache_size must be a positive integer, got "0"`, 2},
		{"key_cache_size negative", appBlock("key_cache_size -5"), `key_cache_size must be a positive integer, got "-5"`, 2},
		{"key_cache_size with two numbers", appBlock("key_cache_size 5 6"), argErr + "'6'", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			check := func(err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("parsed without error:\n%s", c.input)
				}
				if !strings.Contains(err.Error(), c.want) {
					t.Errorf("error %q\ndoes not contain %q", err, c.want)
				}
				if at := fmt.Sprintf(", at Testfile:%d", c.line); !strings.HasSuffix(err.Error(), at) {
					t.Errorf("error %q\ndoes not end with %q", err, at)
				}
			}
			var a App
			check(a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input)))
			// the global option hands the same error to the adapter
			v, err := parseGlobalOption(caddyfile.NewTestDispenser(c.input), nil)
			if v != nil {
				t.Errorf("parseGlobalOption returned %v with its error", v)
			}
			check(err)
		})
	}
}

// TestAppProvisionRefusesNegativeCacheSize: JSON can hold what the
// Caddyfile refuses; the check comes before the database is opened.
func TestAppProvisionRefusesNegativeCacheSize(t *testing.T) {
	var a App
	if err := caddy.StrictUnmarshalJSON([]byte(`{"key_cache_size":-1}`), &a); err != nil {
		t.Fatal(err)
	}
	err := a.Provision(caddy.Context{})
	if err == nil || !strings.Contains(err.Error(), "key_cache_size must not be negative") {
		t.Fatalf("Provision error %v, want key_cache_size must not be negative", err)
	}
	if a.Store() != nil || a.taken {
		t.Fatal("a store was opened for a refused config")
	}
}

// TestClusterSettings: the settings of a shared PostgreSQL database become
// the store's cluster options, and impossible combinations are refused.
func TestClusterSettings(t *testing.T) {
	a := &App{Lease: "0.25", LeaseTTL: caddy.Duration(time.Minute), RevocationStaleness: caddy.Duration(500 * time.Millisecond), InstanceID: "gw-a"}
	o, err := a.clusterOptions()
	if err != nil {
		t.Fatal(err)
	}
	if o.Lease != keystore.NanoPerUnit/4 || o.LeaseTTL != time.Minute || o.RevocationStaleness != 500*time.Millisecond ||
		o.PollInterval != 100*time.Millisecond || o.InstanceID != "gw-a" {
		t.Fatalf("options %+v", o)
	}
	if o, err := (&App{}).clusterOptions(); err != nil || o.Lease != -1 {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
	if o, err := (&App{Lease: "0"}).clusterOptions(); err != nil || o.Lease != 0 {
		t.Fatalf("exact mode: %+v, %v", o, err)
	}
	for _, bad := range []*App{
		{Lease: "-1"},
		{Lease: "lots"},
		{RevocationStaleness: caddy.Duration(5 * time.Second), LeaseTTL: caddy.Duration(10 * time.Second)},
	} {
		if _, err := bad.clusterOptions(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
