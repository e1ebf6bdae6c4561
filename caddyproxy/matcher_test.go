package caddyproxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestMatchModelCaddyfileAndJSON(t *testing.T) {
	var m MatchModel
	d := caddyfile.NewTestDispenser("ai_model gpt-* o3*\nai_model deepseek-*")
	if err := m.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if strings.Join(m, " ") != "gpt-* o3* deepseek-*" {
		t.Fatalf("patterns %q", m)
	}
	b, _ := json.Marshal(m)
	var back MatchModel
	if err := json.Unmarshal(b, &back); err != nil || len(back) != 3 || string(b) != `["gpt-*","o3*","deepseek-*"]` {
		t.Fatalf("JSON %s: %v", b, err)
	}
	for _, bad := range []string{"ai_model", "ai_model x {\n\ty\n}"} {
		var m MatchModel
		if err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	for _, bad := range []MatchModel{{}, {""}, {"[oops"}} {
		if err := bad.Provision(caddy.Context{}); err == nil {
			t.Errorf("%q: provisioned", bad)
		}
	}
}

// request builds a request with the context Caddy gives handlers: the
// variables map (for the body cache) and a replacer.
func request(method, ctype, body string) *http.Request {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, "/v1/chat/completions", rd)
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	ctx := context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{})
	ctx = context.WithValue(ctx, caddy.ReplacerCtxKey, caddy.NewReplacer())
	return r.WithContext(ctx)
}

func TestMatchModelReadsOnceAndRestores(t *testing.T) {
	m := MatchModel{"gpt-*"}
	other := MatchModel{"claude-*"}
	body := `{"model":"gpt-4o","messages":[]}`
	r := request("POST", "application/json", body)
	if ok, err := other.MatchWithError(r); ok || err != nil {
		t.Fatalf("claude-*: %v %v", ok, err)
	}
	// the first matcher cached the body: the second does not read r.Body
	r.Body = io.NopCloser(errReader{})
	r2 := r.Clone(r.Context())
	if ok, err := m.MatchWithError(r2); !ok || err != nil {
		t.Fatalf("gpt-*: %v %v", ok, err)
	}
	b, _ := getBody(r)
	if got, _ := io.ReadAll(b); string(got) != body {
		t.Fatalf("GetBody gives %q", got)
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if v, _ := repl.Get("ai_gateway.model"); v != "gpt-4o" {
		t.Fatalf("{ai_gateway.model} = %v", v)
	}

	// the body ReadBody restored is intact for the next handler
	r = request("POST", "", body)
	if ok, _ := m.MatchWithError(r); !ok {
		t.Fatal("no content type: no match")
	}
	if got, _ := io.ReadAll(r.Body); string(got) != body || r.ContentLength != int64(len(body)) {
		t.Fatalf("restored body %q (%d)", got, r.ContentLength)
	}

	for _, c := range []struct{ method, ctype, body string }{
		{"GET", "", ""}, {"DELETE", "application/json", `{"model":"gpt-4o"}`},
		{"POST", "multipart/form-data; boundary=x", "--x--"}, {"POST", "text/plain", `{"model":"gpt-4o"}`},
		{"POST", "application/json", `{"messages":[]}`},
	} {
		if ok, err := m.MatchWithError(request(c.method, c.ctype, c.body)); ok || err != nil {
			t.Errorf("%s %s %q: %v %v", c.method, c.ctype, c.body, ok, err)
		}
	}
	for _, c := range []struct {
		body   string
		status int
	}{{"", 400}, {"nope", 400}, {`{"model":1}`, 400}, {`{"model":"gpt-4o"}{}`, 400}} {
		_, err := m.MatchWithError(request("POST", "application/json", c.body))
		var he caddyhttp.HandlerError
		var re *openaiwire.RequestError
		if !errors.As(err, &he) || he.StatusCode != c.status || !errors.As(err, &re) || re.Code != openaiwire.CodeInvalidJSON {
			t.Errorf("%q: %v", c.body, err)
		}
	}
	// over the limit, and over request_body's MaxBytesReader
	r = request("POST", "application/json", `{"model":"gpt-4o","x":"`+strings.Repeat("a", 100)+`"}`)
	r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, 50)
	_, err := m.MatchWithError(r)
	var re *openaiwire.RequestError
	if !errors.As(err, &re) || re.Status != http.StatusRequestEntityTooLarge || re.Code != openaiwire.CodeRequestTooLarge || !strings.Contains(re.Message, "50 bytes") {
		t.Fatalf("over max_size: %v", err)
	}
}

// getBody calls r.GetBody.
func getBody(r *http.Request) (io.ReadCloser, error) {
	if r.GetBody == nil {
		return nil, errors.New("no GetBody")
	}
	return r.GetBody()
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("read twice") }
