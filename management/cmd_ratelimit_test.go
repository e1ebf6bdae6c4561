package management

import (
	"context"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// TestCLIRateLimits: keys create/update and accounts update set rate
// limits kind by kind, show them with their use, remove them, and the
// gateway enforces them from the next request.
func TestCLIRateLimits(t *testing.T) {
	g, _ := startCLIGateway(t)
	mustCLI(t, g, "accounts", "create", "acme")
	mustCLI(t, g, "accounts", "topup", "acme", "10")
	out := mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "ci", "--rpm", "2", "--tpm", "100000")
	if !strings.Contains(out, "Rate limits: rpm 0/2 (key), tpm 0/100000 (key).") {
		t.Fatalf("keys create output:\n%s", out)
	}
	id, secret := keyIDFrom(t, out, "Created key "), secretFrom(t, out)
	chatOK(t, g, secret)
	chatOK(t, g, secret)
	if _, err := gwtest.Chat(context.Background(), gwtest.Client(g, secret)); gwtest.APIErrorOf(t, err).StatusCode != 429 {
		t.Fatalf("third request: %v", err)
	}
	out = mustCLI(t, g, "keys", "update", id, "--rpm", "0", "--concurrency", "3")
	if !strings.Contains(out, "tpm ") || strings.Contains(out, "rpm ") || !strings.Contains(out, "concurrency 0/3 (key)") {
		t.Fatalf("keys update output (rpm removed, tpm kept, concurrency set):\n%s", out)
	}
	chatOK(t, g, secret)
	out = mustCLI(t, g, "accounts", "update", "acme", "--rpd", "100")
	if !strings.Contains(out, "Rate limits:  rpd 0/100 (account)") {
		t.Fatalf("accounts update output:\n%s", out)
	}
	out = mustCLI(t, g, "keys", "update", id, "--no-rate-limits")
	if !strings.Contains(out, "rpd ") || strings.Contains(out, "tpm ") {
		t.Fatalf("after --no-rate-limits the account's limit stays, the key's go:\n%s", out)
	}
	failCLI(t, g, []string{"keys", "update", id, "--rpm", "-1"}, "--rpm must be a positive integer")
	failCLI(t, g, []string{"keys", "create", "--account", "acme", "--name", "x", "--tpm", "0"}, "--tpm must be a positive integer")
	failCLI(t, g, []string{"accounts", "update", "acme"}, "nothing to change")

	// Numbers are decimal, as in the Caddyfile: a padded 010 is ten, not
	// the octal eight pflag's integer flags would read; Go literals are
	// refused.
	out = mustCLI(t, g, "keys", "update", id, "--rpm", "010")
	if !strings.Contains(out, "/10 (key") || strings.Contains(out, "/8 (key") {
		t.Fatalf("--rpm 010:\n%s", out)
	}
	for _, v := range []string{"0x10", "0b11", "1_000", "1.5", "1e3"} {
		failCLI(t, g, []string{"keys", "update", id, "--concurrency", v}, "is not a whole number in decimal digits")
	}
	failCLI(t, g, []string{"usage", "--limit", "0x10"}, "is not a whole number in decimal digits")
}
