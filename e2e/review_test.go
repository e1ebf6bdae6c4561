package e2e

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// TestAllowlistWhateverTheContentType: a key limited to one model cannot
// reach another model on a free or operator-listed endpoint by sending its
// JSON body under a Content-Type that is not JSON (text/plain, or curl's
// default application/x-www-form-urlencoded): a provider may read it as
// JSON anyway. Found by the outsider review.
func TestAllowlistWhateverTheContentType(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(epSite(mock.URL, "\n\t\t\tendpoint POST /v1/custom/thing free"))
	g.NewAccount("acme", "10")
	keyID, key := g.NewKey("acme", "limited")
	g.MustAdmin("PATCH", "/ai-gateway/keys/"+keyID, map[string]any{"allowed_models": []string{"mock-mini"}}, http.StatusOK, nil)
	body := `{"model":"mock-model","input":"x"}`
	for _, path := range []string{"/v1/moderations", "/v1/custom/thing"} {
		for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "application/octet-stream"} {
			status, h, b := postTyped(t, g, path, key, ct, []byte(body), nil)
			gwtest.CheckError(t, status, h, b, http.StatusForbidden, "invalid_request_error", "model_not_allowed")
		}
	}
	if mock.Count() != 0 {
		t.Fatalf("the provider saw %d requests for a model outside the allowlist", mock.Count())
	}
	// the allowed model still goes through, and a body that is not JSON
	// names no model
	if status, _, b := postTyped(t, g, "/v1/moderations", key, "text/plain", []byte(`{"model":"mock-mini","input":"x"}`), nil); status != http.StatusOK {
		t.Fatalf("allowed model as text/plain: %d %s", status, b)
	}
	if status, _, b := postTyped(t, g, "/v1/custom/thing", key, "application/octet-stream", []byte("\x00\x01binary"), nil); status == http.StatusForbidden {
		t.Fatalf("a body that is not JSON names no model: %d %s", status, b)
	}
}

// TestModelInAnotherLetterCaseRefused: {"model":"cheap","Model":"dear"}
// is billed as "cheap" by a parser that matches names exactly but served
// as "dear" by one that matches them in any case (Go's encoding/json, used
// by Ollama and others), so it is refused like a repeated member, on every
// metered endpoint, before it reaches the provider.
func TestModelInAnotherLetterCaseRefused(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(epSite(mock.URL, mediaGuard))
	g.NewAccount("acme", "10")
	_, key := g.NewKey("acme", "k")
	for path, body := range map[string]string{
		"/v1/chat/completions":   `{"model":"mock-mini","Model":"mock-model","messages":[{"role":"user","content":"hi"}]}`,
		"/v1/embeddings":         `{"model":"mock-mini","MODEL":"mock-model","input":"hi"}`,
		"/v1/responses":          `{"model":"mock-mini","input":"hi","MAX_OUTPUT_TOKENS":100000}`,
		"/v1/images/generations": `{"model":"dall-e-2","Model":"dall-e-3","prompt":"a cat","size":"1024x1024"}`,
		"/v1/audio/speech":       `{"model":"tts-1","Input":"a much longer text","input":"hi","voice":"alloy"}`,
		"/v1/chat/completions#k": `{"model":"mock-mini","max_to\u212aens":5,"messages":[]}`,
	} {
		path = strings.TrimSuffix(path, "#k")
		status, h, b, err := gwtest.Post(g, path, key, body, nil)
		if err != nil {
			t.Fatal(err)
		}
		gwtest.CheckError(t, status, h, b, http.StatusBadRequest, "invalid_request_error", "invalid_json")
		if !strings.Contains(string(b), "only in letter case") {
			t.Errorf("%s: the refusal does not say why: %s", path, b)
		}
	}
	if mock.Count() != 0 {
		t.Fatalf("the provider saw %d requests", mock.Count())
	}
}

// TestUnreachableProviderAnswersInOpenAIShape: the handle_errors block of
// Caddyfile.example turns reverse_proxy's empty 502 for a provider that
// cannot be reached into the OpenAI error shape, and the request costs
// nothing.
func TestUnreachableProviderAnswersInOpenAIShape(t *testing.T) {
	example, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	s := string(example)
	i := strings.Index(s, "\thandle_errors 502 503 504 {")
	if i < 0 {
		t.Fatal("Caddyfile.example has no handle_errors 502 503 504 block")
	}
	block := s[i : i+strings.Index(s[i:], "\n\t}\n")+4]
	g := gwtest.New(t)
	g.LoadSite(block + gwtest.Site("http://127.0.0.1:1"))
	g.NewAccount("acme", "1")
	_, key := g.NewKey("acme", "k")
	resp, body := gwtest.RawPost(t, g, []string{"Bearer " + key})
	gwtest.CheckOpenAIError(t, resp, body, http.StatusBadGateway, "server_error", "upstream_unavailable", "nothing was charged")
	if bal := gwtest.Balance(t, g, "acme"); bal != 1_000_000_000 {
		t.Fatalf("balance %d after an unreachable provider, want 1.00", bal)
	}
}

// TestAllowlistBodiesTheGatewayCannotRead: for a key limited to some
// models, a free or listed endpoint refuses a body it cannot read for its
// model (compressed, or meant as JSON but not valid JSON that a lenient
// parser might still read), and reads one behind a byte-order mark.
// Found by the second outsider review.
func TestAllowlistBodiesTheGatewayCannotRead(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(epSite(mock.URL, ""))
	g.NewAccount("acme", "10")
	keyID, key := g.NewKey("acme", "limited")
	g.MustAdmin("PATCH", "/ai-gateway/keys/"+keyID, map[string]any{"allowed_models": []string{"mock-mini"}}, http.StatusOK, nil)
	cases := []struct {
		name, ct, enc, body string
		status              int
		code                string
	}{
		{"gzip", "application/json", "gzip", "\x1f\x8b\x08\x00", http.StatusBadRequest, "unsupported_content_encoding"},
		{"BOM", "application/json", "", "\xef\xbb\xbf{\"model\":\"mock-model\"}", http.StatusForbidden, "model_not_allowed"},
		{"trailing comma", "application/json", "", `{"model":"mock-model",}`, http.StatusBadRequest, "invalid_json"},
		{"single quotes", "text/plain", "", `{'model':'mock-model'}`, http.StatusBadRequest, "invalid_json"},
	}
	for _, c := range cases {
		h := map[string]string{}
		if c.enc != "" {
			h["Content-Encoding"] = c.enc
		}
		status, _, b := postTyped(t, g, "/v1/moderations", key, c.ct, []byte(c.body), h)
		if status != c.status || !strings.Contains(string(b), `"code":"`+c.code+`"`) {
			t.Errorf("%s: %d %s, want %d %s", c.name, status, b, c.status, c.code)
		}
	}
	if mock.Count() != 0 {
		t.Fatalf("the provider saw %d requests", mock.Count())
	}
}

// TestItemReferenceRefused: an input item of type item_reference names an
// item the provider stored with some response, of any account; the gateway
// cannot tie it to the caller, so it is refused like an unknown object.
func TestItemReferenceRefused(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(gwtest.Site(mock.URL))
	g.NewAccount("acme", "10")
	_, key := g.NewKey("acme", "k")
	body := `{"model":"mock-model","input":[{"type":"item_reference","id":"msg_of_someone_else"}]}`
	status, h, b, err := gwtest.Post(g, "/v1/responses", key, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	gwtest.CheckError(t, status, h, b, http.StatusNotFound, "invalid_request_error", "object_not_found")
	// a message that only talks about item references is not one
	ok := `{"model":"mock-model","input":[{"role":"user","content":"what is an item_reference?"}]}`
	if status, _, b, _ := gwtest.Post(g, "/v1/responses", key, ok, nil); status != http.StatusOK {
		t.Fatalf("a plain input mentioning item_reference: %d %s", status, b)
	}
	if mock.Count() != 1 {
		t.Fatalf("the provider saw %d requests, want 1", mock.Count())
	}
}

// TestFieldNamesInAnotherLetterCase: form fields and query parameters named
// like "model" in another case are refused, as JSON members are, since a
// provider that matches names in any case could read them instead.
func TestFieldNamesInAnotherLetterCase(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(epSite(mock.URL, mediaGuard))
	g.NewAccount("acme", "10")
	_, key := g.NewKey("acme", "k")
	status, _, b := postTyped(t, g, "/v1/images/generations", key, "application/x-www-form-urlencoded",
		[]byte("model=dall-e-2&Model=dall-e-3&prompt=cat&size=1024x1024"), nil)
	if status != http.StatusBadRequest || !strings.Contains(string(b), "only in letter case") {
		t.Errorf("form: %d %s", status, b)
	}
	ct, body := multipartBody(t, map[string]string{"model": "dall-e-2", "MODEL": "dall-e-3", "prompt": "cat"}, "image", "a.png", []byte("png"))
	status, _, b = postTyped(t, g, "/v1/images/edits", key, ct, body, nil)
	if status != http.StatusBadRequest || !strings.Contains(string(b), "only in letter case") {
		t.Errorf("multipart: %d %s", status, b)
	}
	status, _, b, _ = gwtest.Post(g, "/v1/chat/completions?MODEL=mock-model", key, `{"model":"mock-mini","messages":[]}`, nil)
	if status != http.StatusBadRequest || !strings.Contains(string(b), "only in letter case") {
		t.Errorf("query: %d %s", status, b)
	}
	if mock.Count() != 0 {
		t.Fatalf("the provider saw %d requests", mock.Count())
	}
}
