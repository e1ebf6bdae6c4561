// Package gwtest holds what the project's tests and benchmarks share: a mock
// OpenAI-compatible provider on loopback and an in-process Caddy loaded from a
// Caddyfile on free loopback ports. It is internal: not part of the product.
package gwtest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Usage is what the mock reports as token usage. Cached is part of Prompt
// and Reasoning part of Completion, as providers report them.
type Usage struct {
	Prompt     int
	Completion int
	Cached     int
	Reasoning  int
}

// Recorded is one request the mock received.
type Recorded struct {
	Method string
	Path   string
	Query  string // the raw query, without "?"
	Header http.Header
	Body   []byte
	// RequestID is the X-Mock-Request-Id the request carried ("" if none).
	RequestID string
}

// Answer is what the mock sent back for one request (kept while recording
// is on).
type Answer struct {
	// RequestID is the X-Mock-Request-Id of the request, echoed to the
	// gateway as X-Request-Id; "" when the request had none.
	RequestID string
	Path      string
	Status    int
	Stream    bool
	// Usage is the usage the answer reported; nil when it reported none
	// (an error, X-Mock-No-Usage, a stream cut before its usage event, a
	// stream whose request did not ask for usage).
	Usage *Usage
	// Text is the generated text sent: the message of a JSON answer, the
	// concatenated deltas of a stream (as far as they were sent).
	Text string
	// Body is every byte written as the response body, before gzip.
	Body []byte
	// Gzip reports that Body was sent gzip-encoded (a stream with the
	// compressor flushed after every event, as a provider would).
	Gzip bool
	// EventTimes are the moments just before each SSE event was written.
	EventTimes []time.Time
	// Aborted reports that the mock cut the connection (X-Mock-Cut).
	Aborted bool
	// WriteFailed reports that a write to the gateway failed (it went away).
	WriteFailed bool
}

// MockProvider speaks enough of the OpenAI API for the gateway's tests:
// chat completions and legacy completions as JSON or SSE (when
// stream_options.include_usage is set, with "usage": null in every chunk
// and a usage chunk at the end, as OpenAI sends; with
// stream_options.continuous_usage_stats too, with the usage so far in every
// chunk instead of null, as vLLM sends), the Responses API as JSON or
// SSE, embeddings, moderations, images and audio (mock_media.go) and a
// model list, and
// it sends OpenAI-Organization, OpenAI-Project and Set-Cookie with every
// answer, as OpenAI does. A model named "fail-500" gets a 500
// error in the OpenAI shape.
//
// Requests can steer the answer with headers (the gateway forwards them):
//
//	X-Mock-Usage: prompt,completion[,cached[,reasoning]]  usage of this answer
//	X-Mock-No-Usage: 1        report no usage at all (JSON or stream)
//	X-Mock-Cut: N             stream N content events, then cut the connection
//	X-Mock-Gzip: 1            gzip a JSON answer whatever Accept-Encoding says
//	X-Mock-Status: 4xx|5xx    answer that status with an OpenAI error body
//	X-Mock-Delay-Ms: N        sleep N ms after each SSE event
//	X-Mock-Wait-Ms: N         sleep N ms before answering at all
//	X-Mock-Request-Id: id     echoed as X-Request-Id; names the Answer
//	X-Mock-Usage-From-Limit: N  report completion tokens = the request's
//	                          output limit (the largest of max_tokens,
//	                          max_completion_tokens, max_output_tokens) × n,
//	                          or N × n when it sets none: a provider that
//	                          generates all it is allowed to
type MockProvider struct {
	URL string

	// Usage returned with every answer that sets no X-Mock-Usage.
	Usage Usage
	// Delay between SSE events, unless X-Mock-Delay-Ms says otherwise.
	StreamDelay time.Duration

	server  *httptest.Server
	mu      sync.Mutex
	reqs    []Recorded
	answers []Answer
	count   int
	record  bool
	// stored are the responses of POST /v1/responses that did not set
	// "store": false, by id (mock_objects.go).
	stored  map[string]*StoredResponse
	nextRsp int
}

// Mock request headers.
const (
	HeaderUsage   = "X-Mock-Usage"
	HeaderNoUsage = "X-Mock-No-Usage"
	HeaderCut     = "X-Mock-Cut"
	HeaderGzip    = "X-Mock-Gzip"
	HeaderStatus  = "X-Mock-Status"
	// HeaderErrorUsage "1" puts the usage into the error body of HeaderStatus.
	HeaderErrorUsage = "X-Mock-Error-Usage"
	HeaderDelayMs    = "X-Mock-Delay-Ms"
	HeaderWaitMs     = "X-Mock-Wait-Ms"
	HeaderRequestID  = "X-Mock-Request-Id"
	// HeaderUsageFromLimit: see MockProvider.
	HeaderUsageFromLimit = "X-Mock-Usage-From-Limit"
)

// Response headers the mock sends with every answer.
const (
	MockOrganization = "org-mock-provider"
	MockProject      = "proj_mock_provider"
	MockCookie       = "__cf_bm=mock-provider-cookie; path=/; HttpOnly"
)

// StreamPieces are the content deltas of every streamed answer, in order;
// JSON answers carry their concatenation as the message.
var StreamPieces = []string{"Hello", " from", " the", " mock."}

// jsonText is the message of JSON chat, completions and responses answers.
const jsonText = "Hello from the mock provider."

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

// SetRecording turns keeping request and answer copies on or off (off
// under load).
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

// Answers returns the answers completed so far (a cut or failed answer is
// complete once its handler returned), in the order they completed.
func (m *MockProvider) Answers() []Answer {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Answer(nil), m.answers...)
}

// AnswerFor returns the answer to the request whose X-Mock-Request-Id was id.
func (m *MockProvider) AnswerFor(id string) (Answer, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.answers) - 1; i >= 0; i-- {
		if m.answers[i].RequestID == id {
			return m.answers[i], true
		}
	}
	return Answer{}, false
}

// Count returns how many requests arrived (recorded or not).
func (m *MockProvider) Count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.count
}

// Reset forgets recorded requests and answers.
func (m *MockProvider) Reset() {
	m.mu.Lock()
	m.reqs, m.answers, m.count = nil, nil, 0
	m.mu.Unlock()
}

// opts are the per-request steering headers.
type opts struct {
	usage   Usage
	noUsage bool
	cut     int // content events before the cut; -1: no cut
	gzip    bool
	status  int
	delay   time.Duration
	wait    time.Duration
}

// parseUsage reads "prompt,completion[,cached[,reasoning]]".
func parseUsage(s string) (Usage, error) {
	parts := strings.Split(s, ",")
	if len(parts) < 2 || len(parts) > 4 {
		return Usage{}, fmt.Errorf("%s %q: want prompt,completion[,cached[,reasoning]]", HeaderUsage, s)
	}
	var n [4]int
	for i, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v < 0 {
			return Usage{}, fmt.Errorf("%s %q: %q is not a count", HeaderUsage, s, p)
		}
		n[i] = v
	}
	return Usage{Prompt: n[0], Completion: n[1], Cached: n[2], Reasoning: n[3]}, nil
}

func (m *MockProvider) optsOf(r *http.Request) (opts, error) {
	o := opts{usage: m.Usage, cut: -1, delay: m.StreamDelay}
	h := r.Header
	if v := h.Get(HeaderUsage); v != "" {
		u, err := parseUsage(v)
		if err != nil {
			return o, err
		}
		o.usage = u
	}
	o.noUsage = h.Get(HeaderNoUsage) == "1"
	o.gzip = h.Get(HeaderGzip) == "1"
	for _, f := range []struct {
		name string
		dst  *int
		min  int
	}{{HeaderCut, &o.cut, 0}, {HeaderStatus, &o.status, 400}} {
		if v := h.Get(f.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < f.min || (f.name == HeaderStatus && n > 599) {
				return o, fmt.Errorf("%s %q is not valid", f.name, v)
			}
			*f.dst = n
		}
	}
	for _, f := range []struct {
		name string
		dst  *time.Duration
	}{{HeaderDelayMs, &o.delay}, {HeaderWaitMs, &o.wait}} {
		if v := h.Get(f.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return o, fmt.Errorf("%s %q is not valid", f.name, v)
			}
			*f.dst = time.Duration(n) * time.Millisecond
		}
	}
	return o, nil
}

// usageFromLimit applies X-Mock-Usage-From-Limit (v, "" when absent): the
// completion tokens reported become the request's output limit (or v when
// it sets none) times its n.
func (o *opts) usageFromLimit(v string, body []byte) error {
	if v == "" {
		return nil
	}
	fallback, err := strconv.Atoi(v)
	if err != nil || fallback < 0 {
		return fmt.Errorf("%s %q is not valid", HeaderUsageFromLimit, v)
	}
	var req struct {
		MaxTokens           int `json:"max_tokens"`
		MaxCompletionTokens int `json:"max_completion_tokens"`
		MaxOutputTokens     int `json:"max_output_tokens"`
		N                   int `json:"n"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return fmt.Errorf("%s: body: %w", HeaderUsageFromLimit, err)
	}
	limit := max(req.MaxTokens, req.MaxCompletionTokens, req.MaxOutputTokens)
	if limit == 0 {
		limit = fallback
	}
	o.usage.Completion = limit * max(req.N, 1)
	return nil
}

// answerWriter writes one answer and keeps what it wrote.
type answerWriter struct {
	w    http.ResponseWriter
	o    opts
	a    *Answer
	fl   http.Flusher
	zw   *gzip.Writer    // a stream gzipped under X-Mock-Gzip, flushed per event
	done <-chan struct{} // the request's context: the gateway went away
}

// sleep waits d, or less if the gateway goes away.
func (aw *answerWriter) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-aw.done:
	}
}

func (aw *answerWriter) write(p []byte) {
	aw.a.Body = append(aw.a.Body, p...)
	var w io.Writer = aw.w
	if aw.zw != nil {
		w = aw.zw
	}
	if _, err := w.Write(p); err != nil {
		aw.a.WriteFailed = true
	}
}

// json answers status with v as its JSON body (gzipped under X-Mock-Gzip).
func (aw *answerWriter) json(status int, v any) {
	b, _ := json.Marshal(v)
	b = append(b, '\n')
	aw.a.Status = status
	aw.w.Header().Set("Content-Type", "application/json")
	if aw.o.gzip {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(b)
		_ = zw.Close()
		aw.a.Body = append(aw.a.Body, b...)
		aw.a.Gzip = true
		aw.w.Header().Set("Content-Encoding", "gzip")
		aw.w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
		aw.w.WriteHeader(status)
		if _, err := aw.w.Write(buf.Bytes()); err != nil {
			aw.a.WriteFailed = true
		}
		return
	}
	aw.w.WriteHeader(status)
	aw.write(b)
}

// startStream sends the headers of an event stream.
func (aw *answerWriter) startStream() {
	aw.a.Stream, aw.a.Status = true, http.StatusOK
	h := aw.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	if aw.o.gzip {
		// as a provider that ignores Accept-Encoding: identity would
		h.Set("Content-Encoding", "gzip")
		aw.zw = gzip.NewWriter(aw.w)
		aw.a.Gzip = true
	}
	aw.w.WriteHeader(http.StatusOK)
	aw.fl, _ = aw.w.(http.Flusher)
	if aw.fl != nil {
		aw.fl.Flush() // the headers go out at once, as a real provider's do
	}
}

// event sends one SSE event (name may be empty), flushes and, unless it is
// the last event, sleeps the stream delay.
func (aw *answerWriter) event(name string, v any) { aw.sendEvent(name, v, false) }

func (aw *answerWriter) sendEvent(name string, v any, last bool) {
	var b []byte
	if s, ok := v.(string); ok {
		b = []byte(s)
	} else {
		b, _ = json.Marshal(v)
	}
	var buf bytes.Buffer
	if name != "" {
		fmt.Fprintf(&buf, "event: %s\n", name)
	}
	fmt.Fprintf(&buf, "data: %s\n\n", b)
	aw.a.EventTimes = append(aw.a.EventTimes, time.Now())
	aw.write(buf.Bytes())
	if aw.zw != nil {
		if last {
			_ = aw.zw.Close()
		} else {
			_ = aw.zw.Flush()
		}
	}
	if aw.fl != nil {
		aw.fl.Flush()
	}
	if !last {
		aw.sleep(aw.o.delay)
	}
}

// cutAfter reports whether the stream must be cut now that n content events
// were sent, and cuts it.
func (aw *answerWriter) cutAfter(n int) {
	if aw.o.cut >= 0 && n >= aw.o.cut {
		aw.a.Aborted = true
		panic(http.ErrAbortHandler)
	}
}

// usage returns the usage to report, or nil under X-Mock-No-Usage, and
// records it in the answer.
func (aw *answerWriter) usage() *Usage {
	if aw.o.noUsage {
		return nil
	}
	u := aw.o.usage
	aw.a.Usage = &u
	return &u
}

// ServeHTTP records the request, applies the X-Mock-* headers (a bad one is
// a 400) and answers as the route of the path's end does.
func (m *MockProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	reqID := r.Header.Get(HeaderRequestID)
	a := &Answer{RequestID: reqID, Path: r.URL.Path}
	if m.recordRequest(r, body, reqID) {
		defer m.recordAnswer(a)
	}
	if reqID != "" {
		w.Header().Set("X-Request-Id", reqID)
	}
	// as OpenAI sends them (and its CDN the cookie): the gateway must not
	// pass them on to its clients
	w.Header().Set("OpenAI-Organization", MockOrganization)
	w.Header().Set("OpenAI-Project", MockProject)
	w.Header().Set("Set-Cookie", MockCookie)
	o, err := m.optsOf(r)
	if err == nil {
		err = o.usageFromLimit(r.Header.Get(HeaderUsageFromLimit), body)
	}
	aw := &answerWriter{w: w, o: o, a: a, done: r.Context().Done()}
	if err != nil {
		aw.o.gzip = false
		aw.json(http.StatusBadRequest, errBody("mock: "+err.Error(), "bad_mock_header"))
		return
	}
	aw.sleep(o.wait)
	if o.status != 0 {
		aw.errorStatus(r.Header.Get(HeaderErrorUsage) == "1")
		return
	}
	m.route(aw, r, body)
}

// recordRequest counts the request and, when recording, keeps it; it
// reports whether the mock is recording.
func (m *MockProvider) recordRequest(r *http.Request, body []byte, reqID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.count++
	if m.record {
		m.reqs = append(m.reqs, Recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body, RequestID: reqID})
	}
	return m.record
}

// recordAnswer keeps the answer as it is when the handler returns.
func (m *MockProvider) recordAnswer(a *Answer) {
	m.mu.Lock()
	m.answers = append(m.answers, *a)
	m.mu.Unlock()
}

// errorStatus answers the status of X-Mock-Status with an OpenAI error,
// with usage under X-Mock-Error-Usage.
func (aw *answerWriter) errorStatus(withUsage bool) {
	typ := "invalid_request_error"
	if aw.o.status >= 500 {
		typ = "server_error"
	}
	body := errBodyType(fmt.Sprintf("mock provider answers %d", aw.o.status), typ, "mock_status")
	if withUsage {
		body["usage"] = chatUsageJSON(aw.o.usage)
		aw.a.Usage = &aw.o.usage
	}
	aw.json(aw.o.status, body)
}

// route answers by the path's end, so the mock stands in for providers that
// mount the API elsewhere (Azure's /openai/deployments/{name}/…, Gemini's
// /v1beta/openai/…).
func (m *MockProvider) route(aw *answerWriter, r *http.Request, body []byte) {
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(p, "/models"):
		aw.json(http.StatusOK, map[string]any{"object": "list", "data": []any{
			map[string]any{"id": "mock-model", "object": "model", "created": 1700000000, "owned_by": "mock"},
		}})
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/chat/completions"):
		m.chat(aw, body, false)
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/completions"):
		m.chat(aw, body, true)
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/responses"):
		m.responses(aw, body)
	case m.storedRoute(aw, r, p):
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/embeddings"):
		m.embeddings(aw, body)
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/moderations"):
		aw.json(http.StatusOK, map[string]any{"id": "modr-mock", "model": "omni-moderation-latest", "results": []any{
			map[string]any{"flagged": false, "categories": map[string]any{}, "category_scores": map[string]any{}},
		}})
	case r.Method == http.MethodPost && (strings.HasSuffix(p, "/images/generations") || strings.HasSuffix(p, "/images/edits") || strings.HasSuffix(p, "/images/variations")):
		m.images(aw, r, body)
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/audio/speech"):
		m.speech(aw, r, body)
	case r.Method == http.MethodPost && (strings.HasSuffix(p, "/audio/transcriptions") || strings.HasSuffix(p, "/audio/translations")):
		m.transcription(aw, r, body)
	default:
		aw.json(http.StatusNotFound, errBody("no route "+r.Method+" "+r.URL.Path, "not_found"))
	}
}

type chatRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage         bool `json:"include_usage"`
		ContinuousUsageStats bool `json:"continuous_usage_stats"`
	} `json:"stream_options"`
}

// chatUsageJSON renders usage the way chat and completions report it.
func chatUsageJSON(u Usage) map[string]any {
	out := map[string]any{
		"prompt_tokens":     u.Prompt,
		"completion_tokens": u.Completion,
		"total_tokens":      u.Prompt + u.Completion,
	}
	if u.Cached > 0 {
		out["prompt_tokens_details"] = map[string]any{"cached_tokens": u.Cached}
	}
	if u.Reasoning > 0 {
		out["completion_tokens_details"] = map[string]any{"reasoning_tokens": u.Reasoning}
	}
	return out
}

// chat answers /v1/chat/completions, or /v1/completions when legacy.
func (m *MockProvider) chat(aw *answerWriter, body []byte, legacy bool) {
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		aw.json(http.StatusBadRequest, errBody("mock: bad json: "+err.Error(), "invalid_json"))
		return
	}
	if req.Model == "fail-500" {
		aw.json(http.StatusInternalServerError, errBody("mock provider failure", "server_error"))
		return
	}
	id, object := "chatcmpl-mock", "chat.completion"
	if legacy {
		id, object = "cmpl-mock", "text_completion"
	}
	if !req.Stream {
		chatJSON(aw, req, id, object, legacy)
		return
	}
	if legacy {
		object = "text_completion"
	} else {
		object = "chat.completion.chunk"
	}
	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage && !aw.o.noUsage
	cs := &chatStream{aw: aw, req: req, id: id, object: object, legacy: legacy,
		includeUsage: includeUsage, continuous: includeUsage && req.StreamOptions.ContinuousUsageStats}
	cs.send()
}

// chatJSON answers a chat or completions request that is not a stream.
func chatJSON(aw *answerWriter, req chatRequest, id, object string, legacy bool) {
	var choice map[string]any
	if legacy {
		choice = map[string]any{"index": 0, "text": jsonText, "logprobs": nil, "finish_reason": "stop"}
	} else {
		choice = map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": jsonText}}
	}
	resp := map[string]any{
		"id": id, "object": object, "created": 1700000000, "model": req.Model,
		"choices": []any{choice},
	}
	if u := aw.usage(); u != nil {
		resp["usage"] = chatUsageJSON(*u)
	}
	aw.a.Text = jsonText
	aw.json(http.StatusOK, resp)
}

// chatStream is one chat or completions stream being answered.
type chatStream struct {
	aw                       *answerWriter
	req                      chatRequest
	id, object               string
	legacy                   bool
	includeUsage, continuous bool
	pieces                   int // content pieces sent so far
}

// send writes the stream: a role chunk (chat only), the content pieces
// (cut where X-Mock-Cut says), the finish chunk, the usage chunk if the
// request asked for it, and [DONE].
func (cs *chatStream) send() {
	aw := cs.aw
	aw.startStream()
	if !cs.legacy {
		aw.event("", cs.chunk(map[string]any{"role": "assistant", "content": ""}, "", nil))
	}
	for i, piece := range StreamPieces {
		aw.cutAfter(i)
		aw.event("", cs.chunk(map[string]any{"content": piece}, piece, nil))
		aw.a.Text += piece
	}
	aw.cutAfter(len(StreamPieces))
	aw.event("", cs.chunk(map[string]any{}, "", "stop"))
	if cs.req.StreamOptions != nil && cs.req.StreamOptions.IncludeUsage {
		if u := aw.usage(); u != nil {
			aw.event("", map[string]any{
				"id": cs.id, "object": cs.object, "created": 1700000000, "model": cs.req.Model,
				"choices": []any{}, "usage": chatUsageJSON(*u),
			})
		}
	}
	aw.sendEvent("", "[DONE]", true)
}

// chunk is one chunk of the stream, with usage null (or, asked for
// continuous_usage_stats, the usage so far) when the request asked for it.
func (cs *chatStream) chunk(delta map[string]any, text string, finish any) map[string]any {
	choice := map[string]any{"index": 0, "finish_reason": finish}
	if cs.legacy {
		choice["text"] = text
		choice["logprobs"] = nil
	} else {
		choice["delta"] = delta
	}
	c := map[string]any{
		"id": cs.id, "object": cs.object, "created": 1700000000, "model": cs.req.Model,
		"choices": []any{choice},
	}
	if text != "" {
		cs.pieces++
	}
	switch {
	case cs.continuous:
		c["usage"] = chatUsageJSON(Usage{Prompt: cs.aw.o.usage.Prompt, Completion: min(cs.pieces, cs.aw.o.usage.Completion)})
	case cs.includeUsage:
		c["usage"] = nil
	}
	return c
}

// responsesRequest is what the mock reads of a /v1/responses request.
type responsesRequest struct {
	Model              string `json:"model"`
	Stream             bool   `json:"stream"`
	Store              *bool  `json:"store"`
	PreviousResponseID string `json:"previous_response_id"`
}

// responses answers /v1/responses, and keeps the response (even a stream
// cut by X-Mock-Cut) unless the request says store: false.
func (m *MockProvider) responses(aw *answerWriter, body []byte) {
	var req responsesRequest
	if err := json.Unmarshal(body, &req); err != nil {
		aw.json(http.StatusBadRequest, errBody("mock: bad json: "+err.Error(), "invalid_json"))
		return
	}
	if req.PreviousResponseID != "" && !m.hasStored(req.PreviousResponseID) {
		aw.json(http.StatusNotFound, errBody("Previous response with id '"+req.PreviousResponseID+"' not found.", "previous_response_not_found"))
		return
	}
	ra := &responsesAnswer{aw: aw, req: req, respID: m.newResponseID(), msgID: "msg_mock"}
	defer func() {
		if req.Store == nil || *req.Store {
			m.keepResponse(ra.respID, req.Model, body, aw.a)
		}
	}()
	if !req.Stream {
		aw.a.Text = jsonText
		aw.json(http.StatusOK, ra.response("completed", jsonText, aw.usage()))
		return
	}
	ra.send()
}

// responsesAnswer is one /v1/responses answer being written.
type responsesAnswer struct {
	aw            *answerWriter
	req           responsesRequest
	respID, msgID string
	seq           int // sequence number of the next stream event
}

// responsesUsageJSON renders usage the way the Responses API reports it.
func responsesUsageJSON(u Usage) map[string]any {
	return map[string]any{
		"input_tokens": u.Prompt, "output_tokens": u.Completion, "total_tokens": u.Prompt + u.Completion,
		"input_tokens_details":  map[string]any{"cached_tokens": u.Cached},
		"output_tokens_details": map[string]any{"reasoning_tokens": u.Reasoning},
	}
}

// response is the response object with status; a completed one holds one
// message with text. Its usage is u, or null when u is nil.
func (ra *responsesAnswer) response(status string, text string, u *Usage) map[string]any {
	out := map[string]any{
		"id": ra.respID, "object": "response", "created_at": 1700000000, "status": status,
		"model": ra.req.Model, "output": []any{}, "usage": nil,
	}
	if status == "completed" {
		out["output"] = []any{map[string]any{
			"type": "message", "id": ra.msgID, "status": "completed", "role": "assistant",
			"content": []any{map[string]any{"type": "output_text", "text": text, "annotations": []any{}}},
		}}
	}
	if u != nil {
		out["usage"] = responsesUsageJSON(*u)
	}
	return out
}

// event sends v as a stream event of type typ with the next sequence
// number.
func (ra *responsesAnswer) event(typ string, v map[string]any) {
	v["type"] = typ
	v["sequence_number"] = ra.seq
	ra.seq++
	ra.aw.event(typ, v)
}

// send writes the stream: response.created, the text deltas (cut where
// X-Mock-Cut says), response.output_text.done and, last,
// response.completed with the usage.
func (ra *responsesAnswer) send() {
	aw := ra.aw
	aw.startStream()
	ra.event("response.created", map[string]any{"response": ra.response("in_progress", "", nil)})
	for i, piece := range StreamPieces {
		aw.cutAfter(i)
		ra.event("response.output_text.delta", map[string]any{
			"item_id": ra.msgID, "output_index": 0, "content_index": 0, "delta": piece,
		})
		aw.a.Text += piece
	}
	aw.cutAfter(len(StreamPieces))
	ra.event("response.output_text.done", map[string]any{
		"item_id": ra.msgID, "output_index": 0, "content_index": 0, "text": aw.a.Text,
	})
	v := map[string]any{"type": "response.completed", "sequence_number": ra.seq,
		"response": ra.response("completed", aw.a.Text, aw.usage())}
	aw.sendEvent("response.completed", v, true)
}

func (m *MockProvider) embeddings(aw *answerWriter, body []byte) {
	var req struct {
		Model string `json:"model"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		aw.json(http.StatusBadRequest, errBody("mock: bad json", "invalid_json"))
		return
	}
	resp := map[string]any{
		"object": "list", "model": req.Model,
		"data": []any{map[string]any{"object": "embedding", "index": 0, "embedding": []float64{0.1, 0.2, 0.3}}},
	}
	if u := aw.usage(); u != nil {
		// Embeddings have no completion: what is reported is the prompt.
		u.Completion, u.Cached, u.Reasoning = 0, 0, 0
		resp["usage"] = map[string]any{"prompt_tokens": u.Prompt, "total_tokens": u.Prompt}
	}
	aw.json(http.StatusOK, resp)
}

func errBody(msg, code string) map[string]any {
	return errBodyType(msg, "invalid_request_error", code)
}

func errBodyType(msg, typ, code string) map[string]any {
	return map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": code}}
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
