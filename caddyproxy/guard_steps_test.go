package caddyproxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/metask/caddy-ai-gateway/caddyauth"
	"github.com/metask/caddy-ai-gateway/keystore"
	"github.com/metask/caddy-ai-gateway/management"
)

// testPrices is a guard config with one priced model: 1 unit per 1M tokens
// either way, so a request's cost in nano-units is 1000 per token.
const testPrices = `"prices": [{"model": "m", "input": "1", "output": "1"}]`

// guardConfig is a whole Caddy config: the ai_gateway app on a database in
// dir and one server whose only handler is a balance_guard with guardJSON
// (the members of its object, without braces).
func guardConfig(t *testing.T, dir, guardJSON string) *caddy.Config {
	t.Helper()
	raw := `{
		"admin": {"disabled": true},
		"apps": {
			"ai_gateway": {"database": ` + jsonString(filepath.Join(dir, "gw.db")) + `},
			"http": {"servers": {"t": {"listen": ["127.0.0.1:0"], "routes": [
				{"handle": [{"handler": "balance_guard"` + prefixComma(guardJSON) + `}]}
			]}}}
		}
	}`
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("config: %v\n%s", err, raw)
	}
	return &cfg
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func prefixComma(s string) string {
	if s == "" {
		return ""
	}
	return ", " + s
}

// guardFixture is a provisioned guard (not serving: no listener is opened),
// its store and an identity of an account with a balance.
type guardFixture struct {
	g     *BalanceGuard
	store *keystore.Store
	id    keystore.Identity
}

// newGuardFixture provisions guardJSON as in guardConfig and opens an
// account "acme" with balance (nano-units) and one key.
func newGuardFixture(t *testing.T, guardJSON string, balance int64) *guardFixture {
	t.Helper()
	cctx, err := caddy.ProvisionContext(guardConfig(t, t.TempDir(), guardJSON))
	if err != nil {
		t.Fatalf("provisioning: %v", err)
	}
	app, err := cctx.App("http")
	if err != nil {
		t.Fatalf("http app: %v", err)
	}
	g := app.(*caddyhttp.App).Servers["t"].Routes[0].Handlers[0].(*BalanceGuard)
	ga, err := management.LoadApp(cctx)
	if err != nil {
		t.Fatalf("ai_gateway app: %v", err)
	}
	// The config is never run: start its store here, and release it (the
	// last reference closes it) when the test ends.
	if err := ga.Start(); err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	t.Cleanup(func() { _ = ga.Cleanup() })
	store := ga.Store()

	ctx := context.Background()
	if _, err := store.CreateAccount(ctx, "acme", "Acme"); err != nil {
		t.Fatal(err)
	}
	if balance != 0 {
		if _, _, err := store.AdjustBalance(ctx, "acme", balance, "top-up"); err != nil {
			t.Fatal(err)
		}
	}
	_, plaintext, err := store.CreateKey(ctx, "acme", "k", keystore.KeyPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := store.Authenticate(ctx, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	return &guardFixture{g: g, store: store, id: id}
}

// authedRequest is a request as api_key_auth leaves it: with the caller's
// identity in Caddy's variables (unless id is nil) and a replacer.
func authedRequest(method, target, body string, id *keystore.Identity) *http.Request {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	vars := map[string]any{}
	if id != nil {
		vars[caddyauth.IdentityVar] = *id
	}
	ctx := context.WithValue(r.Context(), caddyhttp.VarsCtxKey, vars)
	ctx = context.WithValue(ctx, caddy.ReplacerCtxKey, caddy.NewReplacer())
	return r.WithContext(ctx)
}

// held is what the store holds on acme for requests in flight.
func (f *guardFixture) held(t *testing.T) int64 {
	t.Helper()
	_, held, err := f.store.Available("acme")
	if err != nil {
		t.Fatal(err)
	}
	return held
}

func (f *guardFixture) balance(t *testing.T) int64 {
	t.Helper()
	b, _, err := f.store.Balance("acme")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const chatBody = `{"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}`

// TestServeHTTPEndsEveryHoldOnce drives a metered request down each way out
// of ServeHTTP and checks that the hold is there while the request is
// upstream and gone afterwards, and what was charged.
func TestServeHTTPEndsEveryHoldOnce(t *testing.T) {
	const balance = 1_000_000_000 // 1 unit
	cases := []struct {
		name       string
		next       func(w http.ResponseWriter) error
		wantErr    bool
		wantPanic  bool
		wantCharge int64
	}{
		{
			name: "answer with usage",
			next: func(w http.ResponseWriter) error {
				w.Header().Set("Content-Type", "application/json")
				_, err := w.Write([]byte(`{"id": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}`))
				return err
			},
			wantCharge: 7 * 1000,
		},
		{
			name: "upstream error status without usage",
			next: func(w http.ResponseWriter) error {
				w.WriteHeader(http.StatusBadGateway)
				return nil
			},
		},
		{
			name: "handler error before any response",
			next: func(http.ResponseWriter) error {
				return caddyhttp.Error(http.StatusBadGateway, errors.New("dial failed"))
			},
			wantErr: true,
		},
		{
			name:    "client gone before the response",
			next:    func(http.ResponseWriter) error { return caddyhttp.Error(statusClientClosed, context.Canceled) },
			wantErr: true,
		},
		{
			name:      "panic in a later handler",
			next:      func(http.ResponseWriter) error { panic(http.ErrAbortHandler) },
			wantPanic: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newGuardFixture(t, testPrices, balance)
			var heldUpstream int64
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				heldUpstream = f.held(t)
				return tc.next(w)
			})
			var err error
			panicked := func() (p bool) {
				defer func() { p = recover() != nil }()
				err = f.g.ServeHTTP(httptest.NewRecorder(), authedRequest("POST", "/v1/chat/completions", chatBody, &f.id), next)
				return false
			}()
			if panicked != tc.wantPanic {
				t.Fatalf("panicked %v, want %v", panicked, tc.wantPanic)
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want one: %v", err, tc.wantErr)
			}
			if heldUpstream <= 0 {
				t.Errorf("nothing held while the request was upstream")
			}
			if h := f.held(t); h != 0 {
				t.Errorf("%d still held after the request", h)
			}
			if got := balance - f.balance(t); got != tc.wantCharge {
				t.Errorf("charged %d, want %d", got, tc.wantCharge)
			}
		})
	}
}

// TestServeHTTPRefusalsHoldNothing: a request refused at admission never
// reaches the next handler and leaves nothing held or charged.
func TestServeHTTPRefusalsHoldNothing(t *testing.T) {
	f := newGuardFixture(t, testPrices, 1_000_000_000)
	for _, tc := range []struct{ name, body, code string }{
		{"not JSON", `{"model": `, "invalid_json"},
		{"model without a price", `{"model": "other"}`, "model_not_priced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
				t.Error("a refused request reached the next handler")
				return nil
			})
			if err := f.g.ServeHTTP(rec, authedRequest("POST", "/v1/chat/completions", tc.body, &f.id), next); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(rec.Body.String(), `"code":"`+tc.code+`"`) {
				t.Errorf("answer %d %s, want code %s", rec.Code, rec.Body, tc.code)
			}
			if h := f.held(t); h != 0 {
				t.Errorf("%d held after a refusal", h)
			}
		})
	}
	if b := f.balance(t); b != 1_000_000_000 {
		t.Errorf("balance %d after refusals, want it untouched", b)
	}
}

// TestAdmissionEndReleasesUnforwarded: a hold whose request never went on
// (prepare refused it, or something panicked before forward) is released
// by end, and a panic is passed on.
func TestAdmissionEndReleasesUnforwarded(t *testing.T) {
	f := newGuardFixture(t, testPrices, 1_000_000_000)
	for _, panics := range []bool{false, true} {
		hold, err := f.store.ReserveFor(f.id, 5000)
		if err != nil {
			t.Fatal(err)
		}
		if f.held(t) != 5000 {
			t.Fatalf("held %d, want 5000", f.held(t))
		}
		adm := &admission{id: f.id, hold: hold}
		recovered := func() (rec any) {
			defer func() { rec = recover() }()
			func() (err error) {
				defer adm.end(&err)
				if panics {
					panic("before forward")
				}
				return errors.New("refused in prepare")
			}()
			return nil
		}()
		if (recovered != nil) != panics {
			t.Errorf("panics %v: recovered %v", panics, recovered)
		}
		if h := f.held(t); h != 0 {
			t.Errorf("panics %v: %d still held", panics, h)
		}
	}
	if b := f.balance(t); b != 1_000_000_000 {
		t.Errorf("balance %d, want it untouched (nothing forwarded)", b)
	}
}

// TestServeHTTPUnmeteredAndCatalog: requests to a free endpoint pass with
// nothing held or charged, GET /v1/models is answered by the guard, and an
// endpoint the guard does not know is refused without being passed on.
func TestServeHTTPUnmeteredAndCatalog(t *testing.T) {
	f := newGuardFixture(t, testPrices, 1_000_000_000)
	passed := false
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		passed = true
		if h := f.held(t); h != 0 {
			t.Errorf("%d held for an unmetered request", h)
		}
		w.WriteHeader(http.StatusOK)
		return nil
	})
	if err := f.g.ServeHTTP(httptest.NewRecorder(), authedRequest("POST", "/v1/moderations", `{"model": "m", "input": "x"}`, &f.id), next); err != nil {
		t.Fatal(err)
	}
	if !passed {
		t.Error("a request to a free endpoint did not reach the next handler")
	}

	passed = false
	rec := httptest.NewRecorder()
	if err := f.g.ServeHTTP(rec, authedRequest("POST", "/v1/fine_tuning/jobs", `{"model": "m"}`, &f.id), next); err != nil {
		t.Fatal(err)
	}
	if passed || rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), `"endpoint_not_allowed"`) {
		t.Errorf("POST /v1/fine_tuning/jobs: passed on %v, answer %d %s", passed, rec.Code, rec.Body)
	}

	passed = false
	rec = httptest.NewRecorder()
	if err := f.g.ServeHTTP(rec, authedRequest("GET", "/v1/models", "", &f.id), next); err != nil {
		t.Fatal(err)
	}
	if passed || rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"id":"m"`) {
		t.Errorf("GET /v1/models: passed on %v, answer %d %s", passed, rec.Code, rec.Body)
	}
	if b := f.balance(t); b != 1_000_000_000 {
		t.Errorf("balance %d, want it untouched", b)
	}
}

// TestServeHTTPInsufficientBalance: an account with nothing left is refused
// before anything is held.
func TestServeHTTPInsufficientBalance(t *testing.T) {
	f := newGuardFixture(t, testPrices, 0)
	rec := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Error("a request without balance reached the next handler")
		return nil
	})
	if err := f.g.ServeHTTP(rec, authedRequest("POST", "/v1/chat/completions", chatBody, &f.id), next); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "insufficient_balance") {
		t.Errorf("answer %d %s, want 403 insufficient_balance", rec.Code, rec.Body)
	}
	if h := f.held(t); h != 0 {
		t.Errorf("%d held", h)
	}
}
