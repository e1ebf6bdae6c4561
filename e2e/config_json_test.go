package e2e

// Configs that exist only in JSON: Caddy's authentication handler with the
// api_key provider (no Caddyfile syntax), and module configs that unmarshal
// but that loading must refuse. Both start from an adapted Caddyfile whose
// bare balance_guard is swapped for a handler written in JSON.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// placeholderHandler is what a bare balance_guard adapts to.
const placeholderHandler = `{"handler":"balance_guard"}`

// jsonConfig adapts the test's Caddyfile around siteBody (which must hold
// one bare balance_guard) and puts handler, raw JSON, in its place; edit,
// if not nil, may change the whole config.
func jsonConfig(t *testing.T, g *gwtest.Gateway, siteBody, handler string, edit func(cfg map[string]any)) []byte {
	t.Helper()
	cfg := gwtest.Adapt(t, g.Caddyfile(siteBody, ""))
	if n := bytes.Count(cfg, []byte(placeholderHandler)); n != 1 {
		t.Fatalf("adapted config holds %s %d times, want once:\n%s", placeholderHandler, n, cfg)
	}
	cfg = bytes.Replace(cfg, []byte(placeholderHandler), []byte(handler), 1)
	if edit == nil {
		return cfg
	}
	var m map[string]any
	if err := json.Unmarshal(cfg, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAPIKeyProviderJSON: the api_key provider in Caddy's authentication
// handler refuses a request without a valid key (401, WWW-Authenticate:
// Bearer) and admits a valid one with the key id as user id, the account in
// the user metadata, and the client's Authorization header removed.
func TestAPIKeyProviderJSON(t *testing.T) {
	g := gwtest.New(t)
	site := `
	balance_guard
	respond "{http.auth.user.id}|{http.auth.user.account}|{http.auth.user.key_name}|{http.request.header.Authorization}"`
	g.LoadJSON(jsonConfig(t, g, site, `{"handler":"authentication","providers":{"api_key":{}}}`, nil))
	g.NewAccount("acme", "")
	keyID, secret := g.NewKey("acme", "ci")

	get := func(auth string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", g.BaseURL+"/anything", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, auth := range []string{"", "Bearer sk-not-a-key", "Basic YWNtZTpwdw=="} {
		resp, body := get(auth)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("Authorization %q: status %d, want 401: %s", auth, resp.StatusCode, body)
		}
		if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("Authorization %q: WWW-Authenticate %q, want Bearer", auth, got)
		}
	}
	resp, body := get("Bearer " + secret)
	if want := keyID + "|acme|ci|"; resp.StatusCode != http.StatusOK || body != want {
		t.Fatalf("valid key: status %d body %q, want 200 %q", resp.StatusCode, body, want)
	}
}

// TestLoadRefusesBadJSONConfig: module configs that unmarshal (or, for
// unknown fields, do not) but must not run are refused when the config is
// loaded, with a message naming the module and the problem. The unit tests
// of each package cover every branch; these show what an operator sees.
func TestLoadRefusesBadJSONConfig(t *testing.T) {
	g := gwtest.New(t)
	site := "\tbalance_guard\n\trespond ok"
	for _, c := range []struct {
		name, handler string
		edit          func(map[string]any)
		want          string
	}{
		{"alias chain", `{"handler":"balance_guard","aliases":{"fast":"quick","quick":"gpt-4o-mini"}}`, nil,
			`balance_guard: alias fast: target "quick" is itself an alias; aliases do not chain`},
		{"price without output", `{"handler":"balance_guard","prices":[{"model":"gpt-4o","input":"2.50"}]}`, nil,
			`balance_guard: price for "gpt-4o": output`},
		{"price as a number", `{"handler":"balance_guard","prices":[{"model":"gpt-4o","input":2.5,"output":"10"}]}`, nil,
			"cannot unmarshal number"},
		{"unknown_model reject with prices", `{"handler":"balance_guard","unknown_model":{"action":"reject","input":"1","output":"2"}}`, nil,
			"balance_guard: unknown_model reject takes no prices"},
		{"negative max_request_body", `{"handler":"balance_guard","max_request_body":-1}`, nil,
			"balance_guard: max_request_body must not be negative"},
		{"misspelt balance_guard field", `{"handler":"balance_guard","price":[]}`, nil,
			`unknown field "price"`},
		{"ai_model without patterns", `{"handler":"subroute","routes":[{"match":[{"ai_model":[]}],"handle":[{"handler":"static_response"}]}]}`, nil,
			"ai_model: at least one model pattern is required"},
		{"ai_model bad pattern", `{"handler":"subroute","routes":[{"match":[{"ai_model":["gpt-[4o"]}],"handle":[{"handler":"static_response"}]}]}`, nil,
			`ai_model: pattern "gpt-[4o"`},
		{"negative key_cache_size", `{"handler":"balance_guard"}`,
			func(m map[string]any) {
				m["apps"].(map[string]any)["ai_gateway"].(map[string]any)["key_cache_size"] = -1
			},
			"key_cache_size must not be negative"},
		{"dashboard account id", `{"handler":"ai_dashboard","accounts":{"bob":"Team B"}}`, nil,
			`ai_dashboard: account of user "bob"`},
		{"provider unknown field", `{"handler":"authentication","providers":{"api_key":{"realm":"x"}}}`, nil,
			`unknown field "realm"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := caddy.Load(jsonConfig(t, g, site, c.handler, c.edit), true)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("load error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestAPIKeyProviderDocumentedConfig: the provider config that
// docs/caddyfile.md shows loads as written.
func TestAPIKeyProviderDocumentedConfig(t *testing.T) {
	doc, err := os.ReadFile("../docs/caddyfile.md")
	if err != nil {
		t.Fatal(err)
	}
	const shown = `"api_key": {}`
	if !strings.Contains(string(doc), shown) {
		t.Fatalf("docs/caddyfile.md no longer shows %s; update this test with it", shown)
	}
	g := gwtest.New(t)
	cfg := jsonConfig(t, g, "\tbalance_guard\n\trespond ok",
		`{"handler":"authentication","providers":{`+shown+`}}`, nil)
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading the documented provider config: %v", err)
	}
}
