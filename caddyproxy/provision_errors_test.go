package caddyproxy

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestProvisionErrorsNameTheModuleOnce: Caddy prefixes a module's
// Provision error with "provision <module id>: ", so the module's own
// errors must not name it again. The config goes through caddy.Validate,
// as with `caddy validate`.
func TestProvisionErrorsNameTheModuleOnce(t *testing.T) {
	cases := []struct {
		name    string
		route   string // one route of the server
		module  string // the module name, as it appears before a colon
		wantMsg string // Caddy's prefix and the module's own error
	}{
		{
			name:    "negative default_max_tokens",
			route:   `{"handle": [{"handler": "balance_guard", "default_max_tokens": -1}]}`,
			module:  "balance_guard",
			wantMsg: "provision http.handlers.balance_guard: default_max_tokens must not be negative",
		},
		{
			name:    "negative max_request_body",
			route:   `{"handle": [{"handler": "balance_guard", "max_request_body": -1}]}`,
			module:  "balance_guard",
			wantMsg: "provision http.handlers.balance_guard: max_request_body must not be negative",
		},
		{
			name:    "bad price",
			route:   `{"handle": [{"handler": "balance_guard", "prices": [{"model": "m", "input": "x", "output": "1"}]}]}`,
			module:  "balance_guard",
			wantMsg: `provision http.handlers.balance_guard: price for "m": input: `,
		},
		{
			name:    "bad unknown_model",
			route:   `{"handle": [{"handler": "balance_guard", "unknown_model": {"action": "maybe"}}]}`,
			module:  "balance_guard",
			wantMsg: "provision http.handlers.balance_guard: unknown_model must be",
		},
		{
			name:    "bad models_endpoint",
			route:   `{"handle": [{"handler": "balance_guard", "models_endpoint": "elsewhere"}]}`,
			module:  "balance_guard",
			wantMsg: "provision http.handlers.balance_guard: models_endpoint must be gateway or upstream",
		},
		{
			name:    "ai_model without patterns",
			route:   `{"match": [{"ai_model": []}], "handle": [{"handler": "static_response"}]}`,
			module:  "ai_model",
			wantMsg: "provision http.matchers.ai_model: at least one model pattern is required",
		},
		{
			name:    "ai_model with a bad pattern",
			route:   `{"match": [{"ai_model": ["gpt-["]}], "handle": [{"handler": "static_response"}]}`,
			module:  "ai_model",
			wantMsg: `provision http.matchers.ai_model: pattern "gpt-[": `,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := `{
				"admin": {"disabled": true},
				"apps": {
					"ai_gateway": {"database": ` + jsonString(filepath.Join(t.TempDir(), "gw.db")) + `},
					"http": {"servers": {"t": {"listen": ["127.0.0.1:0"], "routes": [` + tc.route + `]}}}
				}
			}`
			var cfg caddy.Config
			if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
				t.Fatal(err)
			}
			err := caddy.Validate(&cfg)
			if err == nil {
				t.Fatal("a bad config was accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error %q\ndoes not contain %q", msg, tc.wantMsg)
			}
			// Caddy itself writes the name twice ("loading module
			// 'balance_guard': provision http.handlers.balance_guard: "),
			// but only once followed by a colon.
			if n := strings.Count(msg, tc.module+":"); n != 1 {
				t.Errorf("%q followed by a colon %d times in %q, want once", tc.module, n, msg)
			}
		})
	}
}
