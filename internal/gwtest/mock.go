// Package gwtest holds what the project's tests and benchmarks share: a mock
// OpenAI-compatible provider on loopback and an in-process Caddy loaded from a
// Caddyfile on free loopback ports. It is internal: not part of the product.
package gwtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Usage is what the mock reports as token usage.
type Usage struct {
	Prompt     int
	Completion int
	Cached     int
}

// Recorded is one request the mock received.
type Recorded struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// MockProvider speaks enough of the OpenAI API for the gateway's tests:
// chat completions as JSON or SSE (with a usage chunk when
// stream_options.include_usage is set), embeddings and a model list. A model
// named "fail-500" gets a 500 error in the OpenAI shape.
type MockProvider struct {
	URL string

	// Usage returned with every answer.
	Usage Usage
	// Delay between SSE events.
	StreamDelay time.Duration

	server *httptest.Server
	mu     sync.Mutex
	reqs   []Recorded
	count  int
	record bool
}

// NewMockProvider starts a mock provider on 127.0.0.1; it stops with the test.
func NewMockProvider(t testing.TB) *MockProvider {
	m := NewMockProviderServer()
	t.Cleanup(m.Close)
	return m
}

// NewMockProviderServer starts a mock provider that the caller must Close
// (benchmarks and tools that have no testing.TB).
func NewMockProviderServer() *MockProvider {
	m := &MockProvider{Usage: Usage{Prompt: 12, Completion: 5}, record: true}
	m.server = httptest.NewServer(m)
	m.URL = m.server.URL
	return m
}

// Close stops the server.
func (m *MockProvider) Close() { m.server.Close() }

// SetRecording turns keeping request copies on or off (off under load).
func (m *MockProvider) SetRecording(on bool) {
	m.mu.Lock()
	m.record = on
	m.mu.Unlock()
}

// Requests returns copies of the requests received so far.
func (m *MockProvider) Requests() []Recorded {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Recorded(nil), m.reqs...)
}

// Count returns how many requests arrived (recorded or not).
func (m *MockProvider) Count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.count
}

// Reset forgets recorded requests.
func (m *MockProvider) Reset() {
	m.mu.Lock()
	m.reqs, m.count = nil, 0
	m.mu.Unlock()
}

func (m *MockProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	m.mu.Lock()
	m.count++
	if m.record {
		m.reqs = append(m.reqs, Recorded{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
	}
	m.mu.Unlock()

	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/models":
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{
			map[string]any{"id": "mock-model", "object": "model", "created": 1700000000, "owned_by": "mock"},
		}})
	case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
		m.chat(w, body)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/embeddings":
		m.embeddings(w, body)
	default:
		writeJSON(w, http.StatusNotFound, errBody("no route "+r.Method+" "+r.URL.Path, "not_found"))
	}
}

type chatRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (m *MockProvider) usageJSON() map[string]any {
	u := map[string]any{
		"prompt_tokens":     m.Usage.Prompt,
		"completion_tokens": m.Usage.Completion,
		"total_tokens":      m.Usage.Prompt + m.Usage.Completion,
	}
	if m.Usage.Cached > 0 {
		u["prompt_tokens_details"] = map[string]any{"cached_tokens": m.Usage.Cached}
	}
	return u
}

func (m *MockProvider) chat(w http.ResponseWriter, body []byte) {
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, errBody("mock: bad json: "+err.Error(), "invalid_json"))
		return
	}
	if req.Model == "fail-500" {
		writeJSON(w, http.StatusInternalServerError, errBody("mock provider failure", "server_error"))
		return
	}
	const id = "chatcmpl-mock"
	if !req.Stream {
		writeJSON(w, http.StatusOK, map[string]any{
			"id": id, "object": "chat.completion", "created": 1700000000, "model": req.Model,
			"choices": []any{map[string]any{
				"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": "Hello from the mock provider."},
			}},
			"usage": m.usageJSON(),
		})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	send := func(v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "data: %s\n\n", b)
		if flusher != nil {
			flusher.Flush()
		}
		if m.StreamDelay > 0 {
			time.Sleep(m.StreamDelay)
		}
	}
	chunk := func(delta map[string]any, finish any) map[string]any {
		return map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": 1700000000, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}},
		}
	}
	send(chunk(map[string]any{"role": "assistant", "content": ""}, nil))
	for _, piece := range []string{"Hello", " from", " the", " mock."} {
		send(chunk(map[string]any{"content": piece}, nil))
	}
	send(chunk(map[string]any{}, "stop"))
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		send(map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": 1700000000, "model": req.Model,
			"choices": []any{}, "usage": m.usageJSON(),
		})
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
}

func (m *MockProvider) embeddings(w http.ResponseWriter, body []byte) {
	var req struct {
		Model string `json:"model"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, errBody("mock: bad json", "invalid_json"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list", "model": req.Model,
		"data":  []any{map[string]any{"object": "embedding", "index": 0, "embedding": []float64{0.1, 0.2, 0.3}}},
		"usage": map[string]any{"prompt_tokens": m.Usage.Prompt, "total_tokens": m.Usage.Prompt},
	})
}

func errBody(msg, code string) map[string]any {
	return map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error", "param": nil, "code": code}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// HasHeaderValue reports whether any recorded request carried a header whose
// value contains s (used to prove a gateway key never went upstream).
func HasHeaderValue(reqs []Recorded, s string) bool {
	for _, r := range reqs {
		for _, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, s) {
					return true
				}
			}
		}
		if strings.Contains(string(r.Body), s) {
			return true
		}
	}
	return false
}
