package management

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestAppLedgerRetention: ledger_retention is a Caddy duration in the
// Caddyfile and in JSON; a malformed or negative one is refused.
func TestAppLedgerRetention(t *testing.T) {
	var a App
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(appBlock("ledger_retention 2160h"))); err != nil {
		t.Fatal(err)
	}
	if time.Duration(a.LedgerRetention) != 2160*time.Hour {
		t.Fatalf("parsed %+v", a)
	}
	var j App
	if err := caddy.StrictUnmarshalJSON([]byte(`{"ledger_retention":"90d"}`), &j); err != nil {
		t.Fatal(err)
	}
	if time.Duration(j.LedgerRetention) != 90*24*time.Hour {
		t.Fatalf("JSON parsed %v", time.Duration(j.LedgerRetention))
	}
	for _, in := range []string{"ledger_retention", "ledger_retention soon", "ledger_retention -1h", "ledger_retention 1h 2h"} {
		var b App
		if err := b.UnmarshalCaddyfile(caddyfile.NewTestDispenser(appBlock(in))); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	var n App
	if err := caddy.StrictUnmarshalJSON([]byte(`{"ledger_retention":"-1h"}`), &n); err != nil {
		t.Fatal(err)
	}
	if err := n.Provision(caddy.Context{}); err == nil || !strings.Contains(err.Error(), "ledger_retention must not be negative") {
		t.Fatalf("Provision error %v", err)
	}
}
