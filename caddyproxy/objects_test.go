package caddyproxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// TestObjectRoutes: the stored-response endpoints are a route of their
// own, with the id of the path, only for GET, GET input_items and DELETE
// in canonical spelling.
func TestObjectRoutes(t *testing.T) {
	g := &BalanceGuard{ModelsEndpoint: modelsFromGateway}
	for _, c := range []struct {
		method, target, id string
		op                 objectOp
	}{
		{"GET", "/v1/responses/resp_1", "resp_1", objGet},
		{"GET", "/v1/responses/resp_1?include[]=x", "resp_1", objGet},
		{"DELETE", "/v1/responses/resp_1", "resp_1", objDelete},
		{"GET", "/v1/responses/resp_1/input_items", "resp_1", objInputItems},
		{"GET", "/team/v1/responses/resp-A.b~c:d@e", "resp-A.b~c:d@e", objGet},
		{"GET", "/v1/responses/input_tokens", "input_tokens", objGet},
	} {
		u, _ := url.ParseRequestURI(c.target)
		got := g.routeOf(&http.Request{Method: c.method, URL: u, Header: http.Header{}})
		if got.kind != routeObject || got.objectID != c.id || got.objectOp != c.op {
			t.Errorf("%s %s: %+v", c.method, c.target, got)
		}
	}
	for _, c := range []struct{ method, target string }{
		{"POST", "/v1/responses/resp_1"},
		{"PUT", "/v1/responses/resp_1"},
		{"HEAD", "/v1/responses/resp_1"},
		{"POST", "/v1/responses/resp_1/cancel"},
		{"DELETE", "/v1/responses/resp_1/input_items"},
		{"GET", "/v1/responses/resp_1/input_items/x"},
		{"GET", "/v1/responses/resp_1/"},
		{"GET", "/v1/responses/"},
		{"GET", "/v1/responses//input_items"},
		{"GET", "/v1/responses/resp%2F1"},
		{"GET", "/v1/responses/resp_1%2Finput_items"},
		{"GET", "/v1/responses/.."},
		{"GET", "/v1/responses/resp_1/../resp_2"},
		{"GET", "/v1/Responses/resp_1"},
		{"GET", "/v1/responses/resp_1/Input_Items"},
	} {
		u, _ := url.ParseRequestURI(c.target)
		if got := g.routeOf(&http.Request{Method: c.method, URL: u, Header: http.Header{}}); got.kind != routeRefused {
			t.Errorf("%s %s: %+v, want refused", c.method, c.target, got)
		}
	}
	// endpoint lines cannot take the owner check away
	for _, e := range []Endpoint{
		{Method: "GET", Path: "/v1/responses/resp_1", Free: true},
		{Method: "DELETE", Path: "/v1/Responses/resp_1", Free: true},
		{Method: "GET", Path: "/x/v1/responses/resp_1/input_items", Price: "1"},
	} {
		g := &BalanceGuard{Endpoints: []Endpoint{e}}
		if err := g.provisionEndpoints(); err == nil {
			t.Errorf("endpoint %s %s was accepted", e.Method, e.Path)
		}
	}
	g = &BalanceGuard{Endpoints: []Endpoint{{Method: "POST", Path: "/v1/responses/input_tokens", Free: true}}}
	if err := g.provisionEndpoints(); err != nil {
		t.Errorf("POST /v1/responses/input_tokens: %v", err)
	}
}

// serveResponses sends a POST /v1/responses through the guard to a next
// handler that notes the hold and answers answer (JSON); it returns the
// recorder and the hold seen upstream (-1: never reached).
func (f *guardFixture) serveResponses(t *testing.T, body, answer string, id keystore.Identity) (*httptest.ResponseRecorder, int64) {
	t.Helper()
	held := int64(-1)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		held = f.held(t)
		w.Header().Set("Content-Type", "application/json")
		_, err := w.Write([]byte(answer))
		return err
	})
	rec := httptest.NewRecorder()
	if err := f.g.ServeHTTP(rec, authedRequest("POST", "/v1/responses", body, &id), next); err != nil {
		t.Fatal(err)
	}
	return rec, held
}

// TestContinuationHoldAndRecord: a response's id is recorded with its
// usage, a continuation of it holds those tokens on top of its own
// estimate, and another account's continuation never goes upstream.
func TestContinuationHoldAndRecord(t *testing.T) {
	f := newGuardFixture(t, testPrices, 1_000_000_000)
	const answer = `{"id":"resp_u1","object":"response","status":"completed","usage":{"input_tokens":1000,"output_tokens":500,"total_tokens":1500}}`
	rec, fresh := f.serveResponses(t, `{"model":"m","input":"hi","max_output_tokens":10}`, answer, f.id)
	if rec.Code != http.StatusOK || fresh <= 0 {
		t.Fatalf("fresh: %d %s, held %d", rec.Code, rec.Body, fresh)
	}
	o, err := f.store.Object(t.Context(), "resp_u1")
	if err != nil || o.AccountID != "acme" || o.KeyID != f.id.KeyID || o.InputTokens != 1000 || o.OutputTokens != 500 {
		t.Fatalf("record: %+v, %v", o, err)
	}
	rec, cont := f.serveResponses(t, `{"model":"m","input":"hi","max_output_tokens":10,"previous_response_id":"resp_u1"}`,
		strings.Replace(answer, "resp_u1", "resp_u2", 1), f.id)
	if rec.Code != http.StatusOK || cont-fresh != 1500*1000 { // 1 unit per 1M tokens: 1000 nano a token
		t.Fatalf("continuation: %d %s, held %d, fresh %d: want 1500 tokens more", rec.Code, rec.Body, cont, fresh)
	}

	other := f.id
	other.AccountID = "someone-else"
	rec, held := f.serveResponses(t, `{"model":"m","input":"hi","previous_response_id":"resp_u1"}`, answer, other)
	if rec.Code != http.StatusNotFound || held != -1 || !strings.Contains(rec.Body.String(), `"code":"object_not_found"`) {
		t.Fatalf("other account: %d %s, reached upstream: %v", rec.Code, rec.Body, held != -1)
	}
	// store:false and error answers record nothing
	f.serveResponses(t, `{"model":"m","input":"hi","store":false}`, strings.Replace(answer, "resp_u1", "resp_u3", 1), f.id)
	if _, err := f.store.Object(t.Context(), "resp_u3"); err == nil {
		t.Fatal("a store:false response was recorded")
	}
	var e struct{ Error struct{ Code string } }
	rec, held = f.serveResponses(t, `{"model":"m","input":"hi","background":true}`, answer, f.id)
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	if rec.Code != http.StatusBadRequest || e.Error.Code != "background_not_supported" || held != -1 {
		t.Fatalf("background: %d %s", rec.Code, rec.Body)
	}
	if f.held(t) != 0 {
		t.Fatalf("holds left: %d", f.held(t))
	}
}
