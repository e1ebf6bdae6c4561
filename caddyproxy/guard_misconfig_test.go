package caddyproxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
)

// TestUnauthenticatedRequestIsRefusedAndLoggedOnce: without api_key_auth
// ahead of it the guard answers 500 gateway_misconfigured in the OpenAI
// error shape, never passes the request on, logs an error with the fix at
// the first such request only (later ones at debug level), and counts
// every one.
func TestUnauthenticatedRequestIsRefusedAndLoggedOnce(t *testing.T) {
	f := newGuardFixture(t, testPrices, 1_000_000_000)
	core, logs := observer.New(zapcore.DebugLevel)
	f.g.logger = zap.New(core)
	before := misconfiguredCount(t, f.g)

	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Error("an unauthenticated request was passed on")
		return nil
	})
	for _, r := range []*http.Request{
		authedRequest("POST", "/v1/chat/completions", chatBody, nil),
		authedRequest("GET", "/v1/models", "", nil),
		authedRequest("POST", "/v1/images/generations", `{"model": "m"}`, nil),
	} {
		rec := httptest.NewRecorder()
		if err := f.g.ServeHTTP(rec, r, next); err != nil {
			t.Fatal(err)
		}
		var body openaiwire.ErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s %s: answer is not an OpenAI error: %v: %s", r.Method, r.URL.Path, err, rec.Body)
		}
		if rec.Code != http.StatusInternalServerError || body.Error.Code != openaiwire.CodeGatewayMisconfig || body.Error.Type != openaiwire.TypeServerError {
			t.Errorf("%s %s: answer %d %+v, want 500 %s", r.Method, r.URL.Path, rec.Code, body.Error, openaiwire.CodeGatewayMisconfig)
		}
	}

	errs := logs.FilterLevelExact(zapcore.ErrorLevel).All()
	if len(errs) != 1 {
		t.Fatalf("%d error logs, want 1: %v", len(errs), errs)
	}
	fields := errs[0].ContextMap()
	if fix, _ := fields["fix"].(string); !strings.Contains(fix, "api_key_auth") || !strings.Contains(fix, "before balance_guard") {
		t.Errorf("the error log gives no usable fix: %v", fields)
	}
	if fields["uri"] != "/v1/chat/completions" {
		t.Errorf("the error log does not name the first request: %v", fields)
	}
	if n := logs.FilterLevelExact(zapcore.DebugLevel).Len(); n != 2 {
		t.Errorf("%d debug logs for the later requests, want 2", n)
	}
	if got := misconfiguredCount(t, f.g) - before; got != 3 {
		t.Errorf("counted %v misconfigured refusals, want 3", got)
	}
	if h := f.held(t); h != 0 {
		t.Errorf("%d held", h)
	}
}

// misconfiguredCount reads rejected_total{reason="misconfigured"}.
func misconfiguredCount(t *testing.T, g *BalanceGuard) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(g.metrics.rejected); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == "misconfigured" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
