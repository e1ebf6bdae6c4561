package dashboard_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// TestCaddyfile: the directive parses with every option, adapts to the
// ai_dashboard handler, is ordered after basic_auth without a route block,
// and bad options fail the adaptation.
func TestCaddyfile(t *testing.T) {
	cfg := string(gwtest.Adapt(t, `
dash.example.com {
	ai_dashboard {
		admins alice root
		account bob team-b
		account carol carol-co
		user_id {http.auth.user.id}
		gateway_url https://api.example.com/v1
	}
	basic_auth {
		alice $2a$04$e1cZ1sDlNbrU2hPfwO1dCO0MpBPm4Si11Cx4XT2ZU5GYkdIk7/nl.
	}
}`))
	for _, want := range []string{
		`"handler":"ai_dashboard"`, `"admins":["alice","root"]`,
		`"accounts":{"bob":"team-b","carol":"carol-co"}`, `"gateway_url":"https://api.example.com/v1"`,
		`"user_id":"{http.auth.user.id}"`,
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("adapted config lacks %s:\n%s", want, cfg)
		}
	}
	// written after ai_dashboard, basic_auth still runs first
	if a, d := strings.Index(cfg, `"handler":"authentication"`), strings.Index(cfg, `"handler":"ai_dashboard"`); a < 0 || d < a {
		t.Errorf("basic_auth does not run before ai_dashboard:\n%s", cfg)
	}

	for _, bad := range []string{
		"ai_dashboard extra",
		"ai_dashboard {\n\tadmins\n}",
		"ai_dashboard {\n\taccount bob\n}",
		"ai_dashboard {\n\taccount bob a\n\taccount bob b\n}",
		"ai_dashboard {\n\tfrobnicate\n}",
	} {
		adapter := gwtestAdapter()
		if _, _, err := adapter.Adapt([]byte("x.example.com {\n"+bad+"\n}\n"), nil); err == nil {
			t.Errorf("Caddyfile %q adapted without error", bad)
		}
	}
}

// TestProvisionRejectsBadConfig: an invalid account id or gateway_url fails
// the config load, naming the problem.
func TestProvisionRejectsBadConfig(t *testing.T) {
	g := gwtest.New(t)
	for _, c := range []struct{ body, want string }{
		{"ai_dashboard {\n\t\taccount bob Not/An/Id\n\t}", "account of user"},
		{"ai_dashboard {\n\t\tgateway_url /relative\n\t}", "gateway_url"},
	} {
		err := loadErr(g, c.body)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: load error %v, want one mentioning %q", c.body, err, c.want)
		}
	}
}

// TestPageAndHeaders: the page, assets and API answers carry the strict CSP
// and the other security headers; the page and API are never cached; the
// page works under the /dash/ prefix with relative asset URLs.
func TestPageAndHeaders(t *testing.T) {
	e := newEnv(t)
	bob := &client{e: e, user: "bob"}
	resp, body := bob.raw("GET", "", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `src="assets/app.js"`) {
		t.Fatalf("page: %d %s", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "<script>") || strings.Contains(string(body), "style=") {
		t.Fatal("the page has inline script or style")
	}
	check := func(name string, resp *http.Response, cache string) {
		t.Helper()
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		for _, d := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'", "connect-src 'self'"} {
			if !strings.Contains(csp, d) {
				t.Errorf("%s: CSP %q lacks %s", name, csp, d)
			}
		}
		if strings.Contains(csp, "unsafe") {
			t.Errorf("%s: CSP allows unsafe sources: %s", name, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: missing nosniff / no-referrer: %v", name, h)
		}
		if cache != "" && h.Get("Cache-Control") != cache {
			t.Errorf("%s: Cache-Control %q, want %q", name, h.Get("Cache-Control"), cache)
		}
		if h.Get("Set-Cookie") != "" {
			t.Errorf("%s: sets a cookie", name)
		}
	}
	check("page", resp, "no-store")
	for _, a := range []struct{ path, ctype string }{
		{"assets/app.js", "text/javascript; charset=utf-8"},
		{"assets/app.css", "text/css; charset=utf-8"},
		{"assets/icon.svg", "image/svg+xml"},
	} {
		resp, body := bob.raw("GET", a.path, nil, nil)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != a.ctype || len(body) == 0 {
			t.Fatalf("%s: %d %q", a.path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		check(a.path, resp, "no-cache")
		// revalidation by ETag
		etag := resp.Header.Get("ETag")
		resp2, _ := bob.raw("GET", a.path, nil, func(r *http.Request) { r.Header.Set("If-None-Match", etag) })
		if resp2.StatusCode != http.StatusNotModified {
			t.Errorf("%s with If-None-Match: %d, want 304", a.path, resp2.StatusCode)
		}
	}
	resp, _ = bob.raw("GET", "api/keys", nil, nil)
	check("api", resp, "no-store")
	resp, _ = bob.raw("GET", "assets/index.html", nil, nil)
	if resp.StatusCode != 404 {
		t.Errorf("the page template is served as an asset: %d", resp.StatusCode)
	}
	resp, _ = bob.raw("GET", "nope", nil, nil)
	if resp.StatusCode != 404 {
		t.Errorf("unknown path: %d", resp.StatusCode)
	}
	// without credentials basic_auth answers before the dashboard
	anon := &client{e: e}
	resp, _ = anon.raw("GET", "", nil, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous: %d, want 401", resp.StatusCode)
	}
	resp, _ = anon.raw("GET", "api/keys", nil, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous API: %d, want 401", resp.StatusCode)
	}
}

// TestUserWithoutAccount: a user who is not an admin and whose account
// does not exist gets a 403 page that tells them to ask the operator, and
// 403 no_account from the API; nothing is created.
func TestUserWithoutAccount(t *testing.T) {
	e := newEnv(t)
	before := e.dbState()
	dave := &client{e: e, user: "dave"}
	resp, body := dave.raw("GET", "", nil, nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "Ask the operator") ||
		!strings.Contains(string(body), "dave") {
		t.Fatalf("page for a user without account: %d %s", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "csrf-token") {
		t.Fatal("the no-account page hands out a CSRF token")
	}
	resp, body = dave.raw("GET", "api/keys", nil, nil)
	wantAPIError(t, resp, body, http.StatusForbidden, "no_account")
	resp, body = dave.raw("GET", "api/session", nil, nil)
	wantAPIError(t, resp, body, http.StatusForbidden, "no_account")
	if after := e.dbState(); after != before {
		t.Fatalf("state changed:\n%s\n---\n%s", before, after)
	}
}

// TestCrossAccountAccessRefused: through the dashboard's own endpoints, a
// user who is not an admin cannot see or change another account (key ids
// of another account: 404; choosing the account: 403; admin routes: 403),
// and state-changing requests without the CSRF token, with another user's
// token, from a foreign origin or as a form are refused (403/415). The
// database is compared before and after: nothing changed. Then the same
// requests done properly succeed, so the refusals were not accidents.
func TestCrossAccountAccessRefused(t *testing.T) {
	e := newEnv(t)
	carolKeyID, carolSecret := e.g.NewKey("carol", "carol-prod")
	bobKeyID, _ := e.g.NewKey("team-b", "bob-prod")

	bob := e.login("bob")
	carol := e.login("carol")
	if bob.token == carol.token {
		t.Fatal("two users got the same CSRF token")
	}

	// bob sees only team-b
	var sess struct {
		User    string `json:"user"`
		Admin   bool   `json:"admin"`
		Account struct {
			ID string `json:"id"`
		} `json:"account"`
		Accounts []json.RawMessage `json:"accounts"`
	}
	bob.must("GET", "api/session", nil, 200, &sess)
	if sess.User != "bob" || sess.Admin || sess.Account.ID != "team-b" || sess.Accounts != nil {
		t.Fatalf("bob's session: %+v", sess)
	}
	var list struct {
		Keys []struct {
			ID        string `json:"id"`
			AccountID string `json:"account_id"`
		} `json:"keys"`
	}
	bob.must("GET", "api/keys", nil, 200, &list)
	if len(list.Keys) != 1 || list.Keys[0].ID != bobKeyID {
		t.Fatalf("bob's keys: %+v", list)
	}
	var usage map[string]any
	bob.must("GET", "api/usage", nil, 200, &usage)

	before := e.dbState()
	type attempt struct {
		name         string
		method, path string
		body         any
		mod          func(*http.Request)
		status       int
		code         string
	}
	foreign := func(origin string) func(*http.Request) {
		return func(r *http.Request) {
			bob.sameOrigin(r)
			r.Header.Set("Origin", origin)
			r.Header.Del("Sec-Fetch-Site")
		}
	}
	attempts := []attempt{
		// another account's key ids
		{"delete carol's key", "DELETE", "api/keys/" + carolKeyID, nil, bob.sameOrigin, 404, "key_not_found"},
		{"rename carol's key", "PATCH", "api/keys/" + carolKeyID, map[string]string{"name": "pwned"}, bob.sameOrigin, 404, "key_not_found"},
		{"rotate carol's key", "POST", "api/keys/" + carolKeyID + "/rotate", map[string]string{}, bob.sameOrigin, 404, "key_not_found"},
		{"unknown key id", "DELETE", "api/keys/key_doesnotexist", nil, bob.sameOrigin, 404, "key_not_found"},
		// choosing the account
		{"list carol's keys", "GET", "api/keys?account=carol", nil, nil, 403, "admin_only"},
		{"carol's usage", "GET", "api/usage?account=carol", nil, nil, 403, "admin_only"},
		{"carol's session", "GET", "api/session?account=carol", nil, nil, 403, "admin_only"},
		{"create key in carol's account", "POST", "api/keys?account=carol", map[string]string{"name": "x"}, bob.sameOrigin, 403, "admin_only"},
		{"delete carol's key with account", "DELETE", "api/keys/" + carolKeyID + "?account=carol", nil, bob.sameOrigin, 403, "admin_only"},
		// admin routes
		{"list accounts", "GET", "api/accounts", nil, nil, 403, "admin_only"},
		{"create account", "POST", "api/accounts", map[string]string{"id": "evil"}, bob.sameOrigin, 403, "admin_only"},
		{"top up own account", "POST", "api/balance", map[string]string{"amount": "1000"}, bob.sameOrigin, 403, "admin_only"},
		{"top up carol", "POST", "api/balance?account=carol", map[string]string{"amount": "1000"}, bob.sameOrigin, 403, "admin_only"},
		// CSRF: bob's own key, but the request is not from bob's page
		{"no token", "DELETE", "api/keys/" + bobKeyID, nil, func(r *http.Request) { bob.sameOrigin(r); r.Header.Del("X-CSRF-Token") }, 403, "csrf_token"},
		{"carol's token", "DELETE", "api/keys/" + bobKeyID, nil, func(r *http.Request) { bob.sameOrigin(r); r.Header.Set("X-CSRF-Token", carol.token) }, 403, "csrf_token"},
		{"made-up token", "POST", "api/keys", map[string]string{"name": "x"}, func(r *http.Request) { bob.sameOrigin(r); r.Header.Set("X-CSRF-Token", "AAAA") }, 403, "csrf_token"},
		{"foreign origin", "DELETE", "api/keys/" + bobKeyID, nil, foreign("https://evil.example"), 403, "csrf_origin"},
		{"foreign port", "DELETE", "api/keys/" + bobKeyID, nil, foreign("http://127.0.0.1:1"), 403, "csrf_origin"},
		{"null origin", "DELETE", "api/keys/" + bobKeyID, nil, foreign("null"), 403, "csrf_origin"},
		{"cross-site fetch", "POST", "api/keys", map[string]string{"name": "x"}, func(r *http.Request) { bob.sameOrigin(r); r.Header.Set("Sec-Fetch-Site", "cross-site") }, 403, "csrf_origin"},
		{"same-site fetch", "POST", "api/keys", map[string]string{"name": "x"}, func(r *http.Request) { bob.sameOrigin(r); r.Header.Set("Sec-Fetch-Site", "same-site") }, 403, "csrf_origin"},
		{"no origin headers", "DELETE", "api/keys/" + bobKeyID, nil, func(r *http.Request) {
			r.Header.Set("X-CSRF-Token", bob.token)
		}, 403, "csrf_origin"},
		{"form post", "POST", "api/keys", nil, func(r *http.Request) {
			bob.sameOrigin(r)
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Body = http.NoBody
		}, 415, "invalid_content_type"},
		{"a GET does not change state", "GET", "api/keys/" + bobKeyID, nil, bob.sameOrigin, 405, "method_not_allowed"},
	}
	for _, a := range attempts {
		t.Run(a.name, func(t *testing.T) {
			resp, body := bob.raw(a.method, a.path, a.body, a.mod)
			wantAPIError(t, resp, body, a.status, a.code)
			if strings.Contains(string(body), "carol-prod") || strings.Contains(string(body), carolKeyID) && a.status != 404 {
				t.Fatalf("the answer reveals carol's key: %s", body)
			}
		})
	}
	if after := e.dbState(); after != before {
		t.Fatalf("the refused requests changed the database:\n%s\n---\n%s", before, after)
	}
	if got := e.chatStatus(carolSecret); got != 200 {
		t.Fatalf("carol's key after bob's attempts: %d", got)
	}

	// controls: done properly, the same operations work
	carol.must("PATCH", "api/keys/"+carolKeyID, map[string]string{"name": "renamed"}, 200, nil)
	carol.must("DELETE", "api/keys/"+carolKeyID, nil, 200, nil)
	if got := e.chatStatus(carolSecret); got != 401 {
		t.Fatalf("carol's key after carol deleted it: %d, want 401", got)
	}
	bob.must("DELETE", "api/keys/"+bobKeyID+"?account=team-b", nil, 200, nil) // own account named: fine
	// Sec-Fetch-Site alone (no Origin) is enough for the origin check
	resp, body := bob.raw("POST", "api/keys", map[string]string{"name": "sfs-only"}, func(r *http.Request) {
		r.Header.Set("Sec-Fetch-Site", "same-origin")
		r.Header.Set("X-CSRF-Token", bob.token)
	})
	if resp.StatusCode != 201 {
		t.Fatalf("Sec-Fetch-Site same-origin without Origin: %d %s", resp.StatusCode, body)
	}
}

// TestAdminCanManageAccounts: an admin switches accounts with ?account=,
// creates accounts, adjusts balances (exact decimal amounts), and still
// cannot reach a key through the wrong account.
func TestAdminCanManageAccounts(t *testing.T) {
	e := newEnv(t)
	carolKeyID, _ := e.g.NewKey("carol", "carol-prod")
	alice := e.login("alice")

	var sess struct {
		Admin    bool            `json:"admin"`
		Account  json.RawMessage `json:"account"`
		Accounts []struct {
			ID string `json:"id"`
		} `json:"accounts"`
	}
	alice.must("GET", "api/session", nil, 200, &sess)
	if !sess.Admin || string(sess.Account) != "null" || len(sess.Accounts) != 2 {
		t.Fatalf("alice's session (admin without an own account): %+v %s", sess, sess.Account)
	}
	resp, body := alice.do("GET", "api/keys", nil)
	wantAPIError(t, resp, body, 400, "account_required")
	resp, body = alice.do("GET", "api/keys?account=nope", nil)
	wantAPIError(t, resp, body, 404, "not_found")

	var keys struct {
		Keys []struct{ ID string } `json:"keys"`
	}
	alice.must("GET", "api/keys?account=carol", nil, 200, &keys)
	if len(keys.Keys) != 1 || keys.Keys[0].ID != carolKeyID {
		t.Fatalf("carol's keys as seen by alice: %+v", keys)
	}
	// a key id through the wrong account is not found, and nothing changes
	before := e.dbState()
	resp, body = alice.do("DELETE", "api/keys/"+carolKeyID+"?account=team-b", nil)
	wantAPIError(t, resp, body, 404, "key_not_found")
	if e.dbState() != before {
		t.Fatal("a refused delete changed the database")
	}

	alice.must("POST", "api/accounts", map[string]string{"id": "newco", "name": "New Co"}, 201, nil)
	resp, body = alice.do("POST", "api/accounts", map[string]string{"id": "newco"})
	wantAPIError(t, resp, body, 409, "already_exists")
	resp, body = alice.do("POST", "api/accounts", map[string]string{"id": "Bad Id"})
	wantAPIError(t, resp, body, 400, "invalid_request")

	var adj struct {
		Account struct {
			Balance     string `json:"balance"`
			BalanceNano int64  `json:"balance_nano"`
		} `json:"account"`
	}
	alice.must("POST", "api/balance?account=newco", map[string]string{"amount": "12.345678901", "note": "invoice 7"}, 200, &adj)
	if adj.Account.BalanceNano != 12_345_678_901 || adj.Account.Balance != "12.345678901" {
		t.Fatalf("balance after top-up: %+v", adj)
	}
	for _, bad := range []string{"1e3", "0", "", "0.0000000001", "abc"} {
		resp, body = alice.do("POST", "api/balance?account=newco", map[string]string{"amount": bad})
		wantAPIError(t, resp, body, 400, "invalid_request")
	}
	var created newKey
	alice.must("POST", "api/keys?account=newco", map[string]string{"name": "made-by-admin", "expires_in": "30d"}, 201, &created)
	if created.AccountID != "newco" || created.ExpiresAt == nil {
		t.Fatalf("key created by admin: %+v", created.Key)
	}
	if got := e.chatStatus(created.Secret); got != 200 {
		t.Fatalf("the admin-made key: %d", got)
	}
}
