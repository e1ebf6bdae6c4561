package dashboard_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"golang.org/x/crypto/bcrypt"

	_ "github.com/metask/caddy-ai-gateway" // registers ai_gateway and every handler, ai_dashboard included
	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// The users of the test dashboard: alice is an admin (with no account of
// her own), bob is mapped to the account team-b, carol uses the account
// named like her, dave has no account.
var users = []string{"alice", "bob", "carol", "dave"}

func password(user string) string { return "pw-" + user + "-secret" }

// env is a Caddy with the gateway under /v1/ and the dashboard under
// /dash/ behind basic_auth, in front of a mock provider.
type env struct {
	t    *testing.T
	g    *gwtest.Gateway
	mock *gwtest.MockProvider
	// AccessLog is the site's access log.
	AccessLog string
}

func dashboardSite(t *testing.T, g *gwtest.Gateway, mockURL, accessLog string) string {
	var auth strings.Builder
	for _, u := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(password(u)), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&auth, "\t\t\t%s %s\n", u, h)
	}
	return fmt.Sprintf(`
	log {
		output file %s
	}
	handle /v1/* {
		api_key_auth
		balance_guard {
			price mock-* input 0.15 output 0.60
		}
		reverse_proxy %s {
			header_up Authorization "Bearer provider-secret"
		}
	}
	redir /dash /dash/
	handle_path /dash/* {
		basic_auth {
%s		}
		ai_dashboard {
			admins alice
			account bob team-b
			gateway_url %s/v1
		}
	}`, accessLog, mockURL, auth.String(), g.BaseURL)
}

// newEnv starts the test's Caddy with the accounts team-b and carol, each
// topped up with 10.
func newEnv(t *testing.T) *env {
	t.Helper()
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	e := &env{t: t, g: g, mock: mock, AccessLog: filepath.Join(g.Dir, "access.log")}
	g.LoadSite(dashboardSite(t, g, mock.URL, e.AccessLog))
	g.NewAccount("team-b", "10")
	g.NewAccount("carol", "10")
	return e
}

func (e *env) dashURL() string { return e.g.BaseURL + "/dash/" }

// openAIClient is a client of the gateway with a key.
func (e *env) openAIClient(key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(e.g.BaseURL+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
}

// chatStatus calls the gateway with the key and returns the HTTP status
// (200 on success).
func (e *env) chatStatus(key string) int {
	e.t.Helper()
	c := e.openAIClient(key)
	_, err := c.Chat.Completions.New(e.t.Context(), openai.ChatCompletionNewParams{
		Model:    "mock-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
	})
	if err == nil {
		return http.StatusOK
	}
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		e.t.Fatalf("calling the gateway: %v", err)
	}
	return apiErr.StatusCode
}

// adminKeys lists the live keys of an account through Caddy's admin API.
func (e *env) adminKeys(account string) []keystore.Key {
	e.t.Helper()
	var keys []keystore.Key
	e.g.MustAdmin("GET", "/ai-gateway/keys?account="+account, nil, http.StatusOK, &keys)
	return keys
}

// keyByName finds a live key of an account by name.
func (e *env) keyByName(account, name string) keystore.Key {
	e.t.Helper()
	for _, k := range e.adminKeys(account) {
		if k.Name == name {
			return k
		}
	}
	e.t.Fatalf("account %s has no key named %q", account, name)
	return keystore.Key{}
}

// dbState is everything an attack through the dashboard could change:
// accounts with balances, live keys with names and expiries, ledger rows.
func (e *env) dbState() string {
	e.t.Helper()
	_, accts := e.g.Admin("GET", "/ai-gateway/accounts", nil)
	_, keys := e.g.Admin("GET", "/ai-gateway/keys", nil)
	_, ledger := e.g.Admin("GET", "/ai-gateway/usage?limit=10000", nil)
	return string(accts) + "\n" + string(keys) + "\n" + string(ledger)
}

// client is a user of the dashboard's JSON API.
type client struct {
	e     *env
	user  string
	token string
}

var tokenRe = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`)

// login loads the page as user and keeps its CSRF token.
func (e *env) login(user string) *client {
	e.t.Helper()
	c := &client{e: e, user: user}
	resp, body := c.raw("GET", "", nil, nil)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET dashboard as %s: %d %s", user, resp.StatusCode, body)
	}
	m := tokenRe.FindSubmatch(body)
	if m == nil {
		e.t.Fatalf("no csrf token in the page of %s", user)
	}
	c.token = string(m[1])
	return c
}

// raw sends a request to the dashboard as the client's user with nothing
// but Basic auth, a JSON body (if any) and what mod adds.
func (c *client) raw(method, path string, body any, mod func(*http.Request)) (*http.Response, []byte) {
	c.e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.e.dashURL()+path, rd)
	if err != nil {
		c.e.t.Fatal(err)
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, password(c.user))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if mod != nil {
		mod(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// sameOrigin sets what a browser sends with a fetch from the page.
func (c *client) sameOrigin(req *http.Request) {
	req.Header.Set("Origin", c.e.g.BaseURL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("X-CSRF-Token", c.token)
}

// do sends an API request as the page would.
func (c *client) do(method, path string, body any) (*http.Response, []byte) {
	c.e.t.Helper()
	return c.raw(method, path, body, c.sameOrigin)
}

// must sends an API request as the page would, wants status and decodes
// the answer into out (if not nil).
func (c *client) must(method, path string, body any, status int, out any) {
	c.e.t.Helper()
	resp, b := c.do(method, path, body)
	if resp.StatusCode != status {
		c.e.t.Fatalf("%s %s %s: status %d, want %d: %s", c.user, method, path, resp.StatusCode, status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.e.t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
}

// newKey is the answer to creating a key.
type newKey struct {
	keystore.Key
	Secret  string `json:"key"`
	Warning string `json:"warning"`
}

// wantAPIError checks status, headers (JSON, never cached) and the error
// shape of an answer, with code.
func wantAPIError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q, want no-store", cc)
	}
	if e := gwtest.CheckErrorShape(t, body); e.Error.Code != code {
		t.Fatalf("code %v, want %s: %s", e.Error.Code, code, body)
	}
}

// assertNoSecrets fails if a file holds any form of any key.
func assertNoSecrets(t *testing.T, paths []string, secrets []string) {
	t.Helper()
	for _, p := range paths {
		b := gwtest.ReadIfExists(t, p)
		for _, s := range secrets {
			for _, f := range gwtest.SecretForms(s) {
				if bytes.Contains(b, []byte(f)) {
					t.Fatalf("%s contains key material of %s", filepath.Base(p), keystore.MaskKey(s))
				}
			}
		}
	}
}

// gwtestAdapter is the Caddyfile adapter.
func gwtestAdapter() caddyconfig.Adapter { return caddyconfig.GetAdapter("caddyfile") }

// loadErr loads a site into the test's Caddy and returns the error.
func loadErr(g *gwtest.Gateway, siteBody string) error {
	cfg, _, err := gwtestAdapter().Adapt([]byte(g.Caddyfile(siteBody, "")), nil)
	if err != nil {
		return err
	}
	return caddy.Load(cfg, true)
}
