package caddyproxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// answerJSON is a next handler that answers a chat completion with usage.
func answerJSON(prompt, completion int) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		// the provider's own limits (of the operator's account): never passed on
		w.Header().Set("X-Ratelimit-Limit-Requests", "10000")
		w.Header().Set("X-Ratelimit-Remaining-Tokens", "29000000")
		_, err := w.Write([]byte(`{"id": "x", "usage": {"prompt_tokens": ` + strconv.Itoa(prompt) +
			`, "completion_tokens": ` + strconv.Itoa(completion) + `}}`))
		return err
	})
}

// refusedNext fails the test if a refused request reaches the provider.
func refusedNext(t *testing.T) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Error("a request refused by a rate limit reached the next handler")
		return nil
	})
}

type openAIError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

func decodeError(t *testing.T, rec *httptest.ResponseRecorder) openAIError {
	t.Helper()
	var e openAIError
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("answer %d %q is not an OpenAI error: %v", rec.Code, rec.Body, err)
	}
	return e
}

// TestRateLimitRPMAnswers: under a default key rpm of 2, the first two
// requests pass with x-ratelimit-* of the gateway (the provider's removed),
// the third gets the OpenAI 429 with Retry-After, costs nothing and is
// counted in the metrics.
func TestRateLimitRPMAnswers(t *testing.T) {
	f := newGuardFixture(t, testPrices+`, "key_rate_limits": {"rpm": 2}`, 1_000_000_000)
	for i, want := range []string{"1", "0"} {
		rec := httptest.NewRecorder()
		if err := f.g.ServeHTTP(rec, authedRequest("POST", "/v1/chat/completions", chatBody, &f.id), answerJSON(3, 4)); err != nil {
			t.Fatal(err)
		}
		h := rec.Header()
		if rec.Code != 200 || h.Get("X-Ratelimit-Limit-Requests") != "2" || h.Get("X-Ratelimit-Remaining-Requests") != want {
			t.Fatalf("request %d: %d %v, want 200 with limit 2, remaining %s", i+1, rec.Code, h, want)
		}
		if reset, err := time.ParseDuration(h.Get("X-Ratelimit-Reset-Requests")); err != nil || reset <= 59*time.Second || reset > time.Minute {
			t.Fatalf("request %d: reset %q, want just under 1m0s", i+1, h.Get("X-Ratelimit-Reset-Requests"))
		}
		if h.Get("X-Ratelimit-Remaining-Tokens") != "" || h.Get("X-Ratelimit-Limit-Tokens") != "" {
			t.Fatalf("request %d: token headers %v without a token limit (the provider's leaked)", i+1, h)
		}
	}
	before := f.balance(t)
	rec := httptest.NewRecorder()
	if err := f.g.ServeHTTP(rec, authedRequest("POST", "/v1/chat/completions", chatBody, &f.id), refusedNext(t)); err != nil {
		t.Fatal(err)
	}
	e := decodeError(t, rec)
	h := rec.Header()
	if rec.Code != http.StatusTooManyRequests || e.Error.Type != "requests" || e.Error.Code != "rate_limit_exceeded" || e.Error.Param != nil {
		t.Fatalf("third request: %d %s", rec.Code, rec.Body)
	}
	wantMsg := "Rate limit reached for key " + f.id.KeyID + " on requests per min (RPM): Limit 2, Used 2, Requested 1. Please try again in "
	if !strings.HasPrefix(e.Error.Message, wantMsg) {
		t.Fatalf("message %q, want it to start with %q", e.Error.Message, wantMsg)
	}
	ms, err := strconv.ParseInt(h.Get("Retry-After-Ms"), 10, 64)
	if err != nil || ms <= 59_000 || ms > 60_000 || h.Get("Retry-After") != "60" {
		t.Fatalf("Retry-After %q, Retry-After-Ms %q, want 60 and just under 60000", h.Get("Retry-After"), h.Get("Retry-After-Ms"))
	}
	if !strings.HasSuffix(e.Error.Message, "Please try again in "+(time.Duration(ms)*time.Millisecond).String()+".") {
		t.Fatalf("message %q does not announce the Retry-After-Ms %d", e.Error.Message, ms)
	}
	if h.Get("X-Ratelimit-Remaining-Requests") != "0" || h.Get("X-Ratelimit-Limit-Requests") != "2" {
		t.Fatalf("429 headers %v", h)
	}
	if f.held(t) != 0 || f.balance(t) != before {
		t.Fatalf("the refusal held %d or charged %d", f.held(t), before-f.balance(t))
	}
	var m dto.Metric
	if err := f.g.metrics.rateLimited.WithLabelValues("rpm", "key").Write(&m); err != nil || m.GetCounter().GetValue() < 1 {
		t.Fatalf("rate_limited_total{rpm,key} = %v, %v", m.GetCounter().GetValue(), err)
	}
}

// TestRateLimitTPMCorrectedBySettlement: the token estimate (prompt +
// max_tokens) counts at admission, the usage the provider reports replaces
// it at settlement, so a second request fits once the first has settled
// small, but not while it is in flight.
func TestRateLimitTPMCorrectedBySettlement(t *testing.T) {
	f := newGuardFixture(t, testPrices+`, "key_rate_limits": {"tpm": 1500}`, 1_000_000_000)
	body := `{"model": "m", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}`
	// est = prompt estimate (6) + 1000
	var inFlight *httptest.ResponseRecorder
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		inFlight = httptest.NewRecorder()
		if err := f.g.ServeHTTP(inFlight, authedRequest("POST", "/v1/chat/completions", body, &f.id), refusedNext(t)); err != nil {
			return err
		}
		return answerJSON(3, 4).ServeHTTP(w, r)
	})
	rec := httptest.NewRecorder()
	if err := f.g.ServeHTTP(rec, authedRequest("POST", "/v1/chat/completions", body, &f.id), next); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 200 || rec.Header().Get("X-Ratelimit-Limit-Tokens") != "1500" || rec.Header().Get("X-Ratelimit-Remaining-Tokens") != "494" {
		t.Fatalf("first: %d %v, want 200, 1500 - 1006 = 494 tokens remaining", rec.Code, rec.Header())
	}
	if e := decodeError(t, inFlight); inFlight.Code != 429 || e.Error.Type != "tokens" ||
		!strings.Contains(e.Error.Message, "on tokens per min (TPM): Limit 1500, Used 1006, Requested 1006.") {
		t.Fatalf("second while the first is in flight: %d %s", inFlight.Code, inFlight.Body)
	}
	rec = httptest.NewRecorder()
	if err := f.g.ServeHTTP(rec, authedRequest("POST", "/v1/chat/completions", body, &f.id), answerJSON(1, 1)); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 200 || rec.Header().Get("X-Ratelimit-Remaining-Tokens") != strconv.Itoa(1500-7-1006) {
		t.Fatalf("after the first settled at 7 tokens: %d %v", rec.Code, rec.Header())
	}
	// more tokens than the limit: never admitted, and the SDKs are told not to retry
	big := `{"model": "m", "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}]}`
	rec = httptest.NewRecorder()
	if err := f.g.ServeHTTP(rec, authedRequest("POST", "/v1/chat/completions", big, &f.id), refusedNext(t)); err != nil {
		t.Fatal(err)
	}
	if e := decodeError(t, rec); rec.Code != 429 || rec.Header().Get("X-Should-Retry") != "false" || rec.Header().Get("Retry-After") != "" ||
		!strings.HasPrefix(e.Error.Message, "Request too large for key "+f.id.KeyID+" on tokens per min (TPM): Limit 1500, Requested 2006.") {
		t.Fatalf("too large: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
}

// TestRateLimitConcurrencyReleasedOnEveryPath: with a concurrency of 1, a
// second request is refused while the first is in flight, whichever way
// the first ends (answer, upstream error, handler error, client gone
// mid-stream, panic in a later handler), and admitted right after.
func TestRateLimitConcurrencyReleasedOnEveryPath(t *testing.T) {
	cases := []struct {
		name      string
		next      func(w http.ResponseWriter) error
		wantPanic bool
	}{
		{"answer with usage", func(w http.ResponseWriter) error {
			_, err := w.Write([]byte(`{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}`))
			return err
		}, false},
		{"upstream 500", func(w http.ResponseWriter) error {
			w.WriteHeader(http.StatusInternalServerError)
			return nil
		}, false},
		{"handler error before any response", func(http.ResponseWriter) error {
			return caddyhttp.Error(http.StatusBadGateway, errors.New("dial failed"))
		}, false},
		{"client gone mid-stream", func(w http.ResponseWriter) error {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = w.Write([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"hel\"}}]}\n\n"))
			return caddyhttp.Error(statusClientClosed, context.Canceled)
		}, false},
		{"panic in a later handler", func(http.ResponseWriter) error { panic(http.ErrAbortHandler) }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newGuardFixture(t, testPrices+`, "key_rate_limits": {"concurrency": 1}`, 1_000_000_000)
			var second *httptest.ResponseRecorder
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				second = httptest.NewRecorder()
				if err := f.g.ServeHTTP(second, authedRequest("POST", "/v1/chat/completions", chatBody, &f.id), refusedNext(t)); err != nil {
					t.Error(err)
				}
				return tc.next(w)
			})
			panicked := func() (p bool) {
				defer func() { p = recover() != nil }()
				_ = f.g.ServeHTTP(httptest.NewRecorder(), authedRequest("POST", "/v1/chat/completions", chatBody, &f.id), next)
				return false
			}()
			if panicked != tc.wantPanic {
				t.Fatalf("panicked %v", panicked)
			}
			e := decodeError(t, second)
			if second.Code != 429 || e.Error.Type != "requests" || second.Header().Get("Retry-After") != "1" || second.Header().Get("Retry-After-Ms") != "1000" ||
				e.Error.Message != "Rate limit reached for key "+f.id.KeyID+" on requests in flight (concurrency): Limit 1, Used 1, Requested 1. Please try again in 1s." {
				t.Fatalf("second request while the first was in flight: %d %v %s", second.Code, second.Header(), second.Body)
			}
			rec := httptest.NewRecorder()
			if err := f.g.ServeHTTP(rec, authedRequest("POST", "/v1/chat/completions", chatBody, &f.id), answerJSON(1, 1)); err != nil || rec.Code != 200 {
				t.Fatalf("after the first ended: %v %d %s", err, rec.Code, rec.Body)
			}
			if u, _ := f.store.KeyRateUsage(context.Background(), f.id.KeyID); len(u) != 1 || u[0].Used != 0 || !u[0].Default {
				t.Fatalf("usage %+v, want concurrency 0 in flight (a default)", u)
			}
		})
	}
}

// TestRateLimitScopesAndModels: the account default spans keys, a model
// limit matches the provider's model (after aliases), and the refusal
// names the scope.
func TestRateLimitScopesAndModels(t *testing.T) {
	f := newGuardFixture(t, testPrices+`, "aliases": {"fast": "m"}, "account_rate_limits": {"rpm": 3}, "model_rate_limits": [{"model": "m*", "rpm": 2}]`, 1_000_000_000)
	ctx := context.Background()
	_, pt, err := f.store.CreateKey(ctx, "acme", "other", keystore.KeyPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := f.store.Authenticate(ctx, pt)
	fast := `{"model": "fast", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}`
	for i, id := range []keystore.Identity{f.id, other} {
		rec := httptest.NewRecorder()
		if err := f.g.ServeHTTP(rec, authedRequest("POST", "/v1/chat/completions", fast, &id), answerJSON(1, 1)); err != nil || rec.Code != 200 {
			t.Fatalf("request %d: %v %d %s", i, err, rec.Code, rec.Body)
		}
	}
	rec := httptest.NewRecorder()
	_ = f.g.ServeHTTP(rec, authedRequest("POST", "/v1/chat/completions", chatBody, &other), refusedNext(t))
	if e := decodeError(t, rec); rec.Code != 429 || !strings.HasPrefix(e.Error.Message, "Rate limit reached for model m* on requests per min (RPM): Limit 2, Used 2,") {
		t.Fatalf("model limit: %d %s", rec.Code, rec.Body)
	}
	// a request without a model-limited model counts on the account only
	rec = httptest.NewRecorder()
	if err := f.g.ServeHTTP(rec, authedRequest("GET", "/v1/models", "", &f.id), refusedNext(t)); err != nil || rec.Code != 200 {
		t.Fatalf("catalog: %v %d", err, rec.Code)
	}
	if u := f.store.ModelRateUsage(); len(u) != 1 || u[0].Used != 2 {
		t.Fatalf("model usage %+v", u)
	}
	if u, _ := f.store.AccountRateUsage("acme"); len(u) != 1 || u[0].Used != 2 || !u[0].Default {
		t.Fatalf("account usage %+v, want 2 of 3 (the refused request counts nowhere)", u)
	}
}

// TestRateLimitConfigErrors: bad limits fail the config load.
func TestRateLimitConfigErrors(t *testing.T) {
	for _, tc := range []struct{ cfg, want string }{
		{`"key_rate_limits": {"rpm": -1}`, "key_rate_limits"},
		{`"model_rate_limits": [{"model": "m", "rpm": 1}, {"model": "m", "tpm": 1}]`, "limited twice"},
		{`"model_rate_limits": [{"model": "m"}]`, "sets no limit"},
		{`"model_rate_limits": [{"model": "[", "rpm": 1}]`, "not a valid model pattern"},
	} {
		g := &BalanceGuard{}
		if err := json.Unmarshal([]byte(`{`+tc.cfg+`}`), g); err != nil {
			t.Fatal(err)
		}
		if err := g.provisionRateLimits(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.cfg, err, tc.want)
		}
	}
}
