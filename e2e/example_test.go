package e2e

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// TestCaddyfileExampleAdapts: the example a newcomer starts from is a valid
// config with the gateway, the dashboard behind basic_auth, and the demo
// provider.
func TestCaddyfileExampleAdapts(t *testing.T) {
	b, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg := gwtest.Adapt(t, string(b))
	if !json.Valid(cfg) {
		t.Fatal("adapted config is not JSON")
	}
	for _, want := range []string{`"handler":"api_key_auth"`, `"handler":"balance_guard"`, `"handler":"ai_dashboard"`,
		`"admins":["admin"]`, `"handler":"authentication"`, `"http_basic"`,
		`\"code\":\"request_too_large\"`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("adapted Caddyfile.example lacks %s", want)
		}
	}
}
