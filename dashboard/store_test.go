package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// bareDashboard is a dashboard on a store of its own, outside any config.
func bareDashboard(t *testing.T) *Dashboard {
	t.Helper()
	s, err := keystore.Open(context.Background(), keystore.Options{Path: filepath.Join(t.TempDir(), "own.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	d := &Dashboard{app: fixedStore{s}, currency: "USD", logger: zap.NewNop(), admins: map[string]bool{"alice": true}}
	d.page = template.Must(template.ParseFS(assetsFS, "assets/index.html"))
	d.denied = template.Must(template.ParseFS(assetsFS, "assets/denied.html"))
	return d
}

// fixedStore is a storeSource with a store opened by the test.
type fixedStore struct{ s *keystore.Store }

func (f fixedStore) Store() *keystore.Store { return f.s }
func (f fixedStore) WaitStore(context.Context) (*keystore.Store, error) {
	return f.s, nil
}

// ask sends GET api/session as user, and the page, and returns both.
func ask(t *testing.T, d *Dashboard, user string) (api, page *httptest.ResponseRecorder) {
	t.Helper()
	api = httptest.NewRecorder()
	if err := d.serveAPI(api, httptest.NewRequest(http.MethodGet, "/api/session", nil), d.session(user), "session"); err != nil {
		t.Fatal(err)
	}
	page = httptest.NewRecorder()
	if err := d.servePage(page, httptest.NewRequest(http.MethodGet, "/", nil), d.session(user)); err != nil {
		t.Fatal(err)
	}
	return api, page
}

func errorCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("answer %d is not an error: %s", rec.Code, rec.Body)
	}
	return body.Error.Code
}

// wantStoreUnavailable: the API answers 503 store_unavailable and the page
// says the store is unavailable, never "No account yet".
func wantStoreUnavailable(t *testing.T, d *Dashboard, user string) {
	t.Helper()
	api, page := ask(t, d, user)
	if api.Code != http.StatusServiceUnavailable || errorCode(t, api) != "store_unavailable" {
		t.Errorf("%s: API answered %d %s, want 503 store_unavailable", user, api.Code, api.Body)
	}
	if page.Code != http.StatusServiceUnavailable || strings.Contains(page.Body.String(), "No account yet") {
		t.Errorf("%s: page answered %d:\n%s", user, page.Code, page.Body)
	}
}

// TestMissingAccountOnAnswerableStore: with the store in order, a user
// without an account is still told to ask the operator (403 no_account).
func TestMissingAccountOnAnswerableStore(t *testing.T) {
	d := bareDashboard(t)
	api, page := ask(t, d, "bob")
	if api.Code != http.StatusForbidden || errorCode(t, api) != "no_account" {
		t.Errorf("API answered %d %s, want 403 no_account", api.Code, api.Body)
	}
	if page.Code != http.StatusForbidden || !strings.Contains(page.Body.String(), "No account yet") {
		t.Errorf("page answered %d:\n%s", page.Code, page.Body)
	}
}

// TestClosedStoreIsNotNoAccount: a closed store knows no account; the
// dashboard must say the store is unavailable, not that the user has no
// account.
func TestClosedStoreIsNotNoAccount(t *testing.T) {
	d := bareDashboard(t)
	if _, err := d.st().CreateAccount(context.Background(), "bob", "Bob"); err != nil {
		t.Fatal(err)
	}
	if err := d.st().Close(); err != nil {
		t.Fatal(err)
	}
	wantStoreUnavailable(t, d, "carol")
	// an admin without an account of her own is not offered "create the
	// first account" either
	api := httptest.NewRecorder()
	if err := d.serveAPI(api, httptest.NewRequest(http.MethodGet, "/api/session", nil), d.session("alice"), "session"); err != nil {
		t.Fatal(err)
	}
	if api.Code != http.StatusServiceUnavailable || errorCode(t, api) != "store_unavailable" {
		t.Errorf("admin: API answered %d %s, want 503 store_unavailable", api.Code, api.Body)
	}
}

// TestSwitchedStoreIsNotNoAccount: after a reload switched the gateway to
// another database, a dashboard still holding the old store must not tell
// users they have no account.
func TestSwitchedStoreIsNotNoAccount(t *testing.T) {
	d := bareDashboard(t)
	cfg := fmt.Sprintf(`{"admin":{"disabled":true},"apps":{"ai_gateway":{"database":%q}}}`,
		filepath.Join(t.TempDir(), "running.db"))
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	wantStoreUnavailable(t, d, "bob")
}

// TestClosedStoreOnEveryRoute: with the store closed, the admins' routes
// that need no account (accounts, audit) and the account holders' answer
// 503 store_unavailable too.
func TestClosedStoreOnEveryRoute(t *testing.T) {
	d := bareDashboard(t)
	if _, err := d.st().CreateAccount(context.Background(), "bob", "Bob"); err != nil {
		t.Fatal(err)
	}
	if err := d.st().Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ user, path string }{
		{"alice", "accounts"}, {"alice", "audit"}, {"bob", "audit"}, {"bob", "usage/log"}, {"bob", "keys"},
	} {
		rec := httptest.NewRecorder()
		if err := d.serveAPI(rec, httptest.NewRequest(http.MethodGet, "/api/"+c.path, nil), d.session(c.user), c.path); err != nil {
			t.Fatal(err)
		}
		if rec.Code != http.StatusServiceUnavailable || errorCode(t, rec) != "store_unavailable" {
			t.Errorf("%s GET api/%s: %d %s, want 503 store_unavailable", c.user, c.path, rec.Code, rec.Body)
		}
	}
}
