package e2e

// Billing tests: a real Caddy in process, the official OpenAI Go SDK (or a
// raw HTTP client where bytes matter) as the client, the mock provider as
// the upstream and real SQLite files. Every cost is checked against an
// independent math/big computation from the usage the mock reported for that
// very request (rows are correlated through X-Mock-Request-Id, which the
// mock echoes as X-Request-Id and the gateway stores as request_id). Caddy is
// process-global: none of these run in parallel with other tests.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/openai/openai-go/v3/responses"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// ---------------------------------------------------------------------------
// Prices, the cost oracle and the prompt estimate, computed independently.

// btGuard is the balance_guard block of the billing tests. Prices use all
// nine decimals so that nearly every request's cost needs rounding.
func btGuard(extra string) string {
	return `
		balance_guard {
			price mock-* input 0.123456789 output 0.987654321 cached 0.012345678
			price big-* input 2.5 output 10 cached 1.25
			price emb-* input 0.02 output 0
			price flat-* input 1 output 1
` + extra + `
		}`
}

// btSite is a site block: auth, the guard (with extra options), handleExtra
// directives, and a reverse proxy to the mock.
func btSite(upstream, guardExtra, handleExtra string) string {
	return `
	handle /v1/* {
		api_key_auth
` + handleExtra + btGuard(guardExtra) + `
		reverse_proxy ` + upstream + ` {
			header_up Authorization "Bearer provider-secret"
		}
	}`
}

// btRate is a price in nano-units per 1M tokens.
type btRate struct{ in, out, cached int64 }

func btRateOf(t testing.TB, model string) btRate {
	switch {
	case strings.HasPrefix(model, "mock-"):
		return btRate{123_456_789, 987_654_321, 12_345_678}
	case strings.HasPrefix(model, "big-"):
		return btRate{2_500_000_000, 10_000_000_000, 1_250_000_000}
	case strings.HasPrefix(model, "emb-"):
		return btRate{20_000_000, 0, 20_000_000}
	case strings.HasPrefix(model, "flat-"):
		return btRate{1_000_000_000, 1_000_000_000, 1_000_000_000}
	}
	t.Fatalf("no test price for model %q", model)
	return btRate{}
}

// btCost is ceil((uncached*in + cached*cachedPrice + completion*out) / 1e6)
// in math/big.
func btCost(r btRate, prompt, completion, cached int64) int64 {
	if cached > prompt {
		cached = prompt
	}
	sum := new(big.Int).Mul(big.NewInt(prompt-cached), big.NewInt(r.in))
	sum.Add(sum, new(big.Int).Mul(big.NewInt(cached), big.NewInt(r.cached)))
	sum.Add(sum, new(big.Int).Mul(big.NewInt(completion), big.NewInt(r.out)))
	q, rem := new(big.Int).QuoRem(sum, big.NewInt(1_000_000), new(big.Int))
	if rem.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	return q.Int64()
}

// btCeil4 is the documented estimate of tokens in n characters.
func btCeil4(n int) int64 { return int64((n + 3) / 4) }

// btPromptEstimate is the documented prompt estimate of a request body:
// ceil(characters of all string values under messages, prompt, input,
// instructions, system and tools / 4) + 4 per message (or input item) + 1
// per token id of a prompt or input given as token ids.
func btPromptEstimate(t testing.TB, body []byte) int64 {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("upstream body %q: %v", body, err)
	}
	chars := 0
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			chars += utf8.RuneCountInString(x)
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	for _, k := range []string{"messages", "prompt", "input", "instructions", "system", "tools"} {
		walk(m[k])
	}
	items := 0
	if a, ok := m["messages"].([]any); ok {
		items = len(a)
	} else if _, ok := m["input"].(string); ok {
		items = 1
	} else if a, ok := m["input"].([]any); ok {
		items = len(a)
	}
	// token ids: one token per number of a list (or list of lists)
	ids := 0
	for _, k := range []string{"prompt", "input"} {
		list, _ := m[k].([]any)
		for _, e := range list {
			switch x := e.(type) {
			case float64:
				ids++
			case []any:
				ids += len(x)
			}
		}
	}
	return btCeil4(chars) + 4*int64(items) + int64(ids)
}

// ---------------------------------------------------------------------------
// Clients and admin helpers.

// btSDKHTTP serves the SDK clients: plenty of idle connections for 32
// workers; compression left on, as in a default client.
var btSDKHTTP = &http.Client{
	Timeout: 60 * time.Second,
	Transport: &http.Transport{
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     30 * time.Second,
	},
}

// btRawHTTP is for byte-exact comparisons: it never asks for compression.
var btRawHTTP = &http.Client{
	Timeout:   60 * time.Second,
	Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 128},
}

func btClient(g *gwtest.Gateway, key string) openai.Client {
	return openai.NewClient(
		option.WithBaseURL(g.BaseURL+"/v1/"),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
		option.WithHTTPClient(btSDKHTTP),
	)
}

// btPost sends a raw POST to the gateway and returns status, headers and body.
func btPost(g *gwtest.Gateway, path, key, body string, headers map[string]string) (int, http.Header, []byte, error) {
	req, err := http.NewRequest("POST", g.BaseURL+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := btRawHTTP.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

type btRow struct {
	ID           int64     `json:"id"`
	CreatedAt    time.Time `json:"created_at"`
	AccountID    string    `json:"account_id"`
	KeyID        string    `json:"key_id"`
	Kind         string    `json:"kind"`
	Amount       int64     `json:"amount_nano"`
	BalanceAfter int64     `json:"balance_after_nano"`
	Note         string    `json:"note"`
	Model        string    `json:"model"`
	Prompt       int64     `json:"prompt_tokens"`
	Completion   int64     `json:"completion_tokens"`
	Cached       int64     `json:"cached_tokens"`
	Reasoning    int64     `json:"reasoning_tokens"`
	Status       int       `json:"status"`
	RequestID    string    `json:"request_id"`
	Estimated    bool      `json:"estimated"`
	Cost         string    `json:"cost"`
}

type btTotal struct {
	Group      string `json:"group"`
	Requests   int64  `json:"requests"`
	Prompt     int64  `json:"prompt_tokens"`
	Completion int64  `json:"completion_tokens"`
	Cached     int64  `json:"cached_tokens"`
	Reasoning  int64  `json:"reasoning_tokens"`
	Estimated  int64  `json:"estimated"`
	CostNano   int64  `json:"cost_nano"`
	Cost       string `json:"cost"`
}

type btUsage struct {
	By     string    `json:"by"`
	Totals []btTotal `json:"totals"`
	Rows   []btRow   `json:"rows"`
}

// btLedger reads GET /ai-gateway/usage with the given query, once nothing
// is in flight: a client can read the end of a stream a moment before the
// gateway settles it.
func btLedger(t *testing.T, g *gwtest.Gateway, query url.Values) btUsage {
	t.Helper()
	btWaitNoHolds(t, g, 10*time.Second)
	if query.Get("limit") == "" {
		query.Set("limit", "10000")
	}
	var u btUsage
	g.MustAdmin("GET", "/ai-gateway/usage?"+query.Encode(), nil, http.StatusOK, &u)
	return u
}

// btUsageRows returns the usage rows, all accounts, by request id.
func btUsageRows(t *testing.T, g *gwtest.Gateway) map[string]btRow {
	t.Helper()
	u := btLedger(t, g, url.Values{"kind": {"usage"}})
	out := make(map[string]btRow, len(u.Rows))
	for _, r := range u.Rows {
		if _, dup := out[r.RequestID]; dup {
			t.Fatalf("two usage rows for request id %q", r.RequestID)
		}
		out[r.RequestID] = r
	}
	return out
}

// btBalance returns an account's balance once nothing is in flight.
func btBalance(t *testing.T, g *gwtest.Gateway, account string) int64 {
	t.Helper()
	btWaitNoHolds(t, g, 10*time.Second)
	var a struct {
		Balance int64 `json:"balance_nano"`
	}
	g.MustAdmin("GET", "/ai-gateway/accounts/"+account, nil, http.StatusOK, &a)
	return a.Balance
}

// btSeries is one sample of Caddy's admin /metrics.
type btSeries struct {
	name   string
	labels map[string]string
	value  float64
}

// btScrape reads http://<admin>/metrics.
func btScrape(t *testing.T, g *gwtest.Gateway) ([]btSeries, string) {
	t.Helper()
	status, body := g.Admin("GET", "/metrics", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", status, body)
	}
	var out []btSeries
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		s := btSeries{name: line[:sp], labels: map[string]string{}, value: v}
		if i := strings.IndexByte(s.name, '{'); i >= 0 {
			for _, kv := range btSplitLabels(s.name[i+1 : len(s.name)-1]) {
				k, val, _ := strings.Cut(kv, "=")
				uq, err := strconv.Unquote(val)
				if err != nil {
					t.Fatalf("metrics label %q: %v", kv, err)
				}
				s.labels[k] = uq
			}
			s.name = s.name[:i]
		}
		out = append(out, s)
	}
	return out, string(body)
}

// btSplitLabels splits `a="x",b="y,z"` at the commas between labels.
func btSplitLabels(s string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// btMetric sums the samples of name whose labels include match; ok is false
// when there is none.
func btMetric(series []btSeries, name string, match map[string]string) (float64, bool) {
	sum, ok := 0.0, false
next:
	for _, s := range series {
		if s.name != name {
			continue
		}
		for k, v := range match {
			if s.labels[k] != v {
				continue next
			}
		}
		sum, ok = sum+s.value, true
	}
	return sum, ok
}

// btAssertNoHolds checks that nothing is held: the holds metric is 0.
func btAssertNoHolds(t *testing.T, g *gwtest.Gateway) {
	t.Helper()
	series, _ := btScrape(t, g)
	n, ok := btMetric(series, "caddy_ai_gateway_holds_in_flight", nil)
	amount, _ := btMetric(series, "caddy_ai_gateway_held_amount", nil)
	if !ok || n != 0 || amount != 0 {
		t.Fatalf("holds in flight %v (reported %v), held amount %v; want 0", n, ok, amount)
	}
}

// btWaitNoHolds polls until no hold is left or the deadline passes.
func btWaitNoHolds(t *testing.T, g *gwtest.Gateway, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		series, _ := btScrape(t, g)
		if n, ok := btMetric(series, "caddy_ai_gateway_holds_in_flight", nil); ok && n == 0 {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("holds still in flight after %v", within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// btEventually polls check until it returns "" or within passes; metrics
// are recorded just after a request's hold is settled.
func btEventually(t *testing.T, within time.Duration, check func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// btWaitAnswers waits until the mock has finished n answers.
func btWaitAnswers(t *testing.T, mock *gwtest.MockProvider, n int) []gwtest.Answer {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		a := mock.Answers()
		if len(a) >= n {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("mock finished %d answers, want %d", len(a), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// btUpstreamBody returns the body the mock received for a request id.
func btUpstreamBody(t *testing.T, reqs []gwtest.Recorded, id string) []byte {
	t.Helper()
	var found []byte
	for _, r := range reqs {
		if r.RequestID == id {
			if found != nil {
				t.Fatalf("request %s reached the mock twice", id)
			}
			found = r.Body
		}
	}
	if found == nil {
		t.Fatalf("request %s never reached the mock", id)
	}
	return found
}

// btCheckError asserts an error of the gateway in the OpenAI shape.
func btCheckError(t *testing.T, status int, h http.Header, body []byte, wantStatus int, typ, code string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status %d, want %d: %s", status, wantStatus, body)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var raw map[string]map[string]any
	if err := json.Unmarshal(body, &raw); err != nil || len(raw) != 1 || len(raw["error"]) != 4 {
		t.Fatalf("not the OpenAI error shape: %s", body)
	}
	e := raw["error"]
	if p, ok := e["param"]; !ok || p != nil {
		t.Fatalf("param must be null: %s", body)
	}
	if e["type"] != typ || e["code"] != code {
		t.Fatalf("type/code %v/%v, want %s/%s: %s", e["type"], e["code"], typ, code, body)
	}
	if m, _ := e["message"].(string); m == "" {
		t.Fatalf("empty message: %s", body)
	}
}

// ---------------------------------------------------------------------------
// TestBillingExactMixed

type btKind int

const (
	btChatJSON btKind = iota
	btChatStream
	btChatStreamUsage
	btChatStreamCancel
	btChatStreamCut
	btChatError
	btStreamError
	btChatNoUsage
	btStreamNoUsage
	btGzip
	btEmbeddings
	btResponses
	btResponsesStream
	btResponsesCut
	btCompletions
	btCompletionsStream
	btNumKinds
)

var btKindNames = [...]string{"chat", "chat-stream", "chat-stream-usage", "chat-stream-cancel", "chat-stream-cut",
	"chat-500", "stream-503", "chat-no-usage", "stream-no-usage", "gzip", "embeddings", "responses",
	"responses-stream", "responses-cut", "completions", "completions-stream"}

func (k btKind) String() string { return btKindNames[k] }

// outcome classes of a request's ledger row
const (
	btExact     = "exact"
	btFree      = "free"
	btEstimated = "estimated"
)

func (k btKind) class() string {
	switch k {
	case btChatError, btStreamError:
		return btFree
	case btChatStreamCancel, btChatStreamCut, btChatNoUsage, btStreamNoUsage, btResponsesCut:
		return btEstimated
	}
	return btExact
}

type btJob struct {
	id     string
	kind   btKind
	key    int
	model  string
	usage  gwtest.Usage
	cut    int
	status int
}

type btKey struct {
	account, id, secret string
	client              openai.Client
}

var btChatMsgs = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")}

// btStreamText is the content of a complete mock stream.
var btStreamText = strings.Join(gwtest.StreamPieces, "")

// btRun performs one job through the SDK and returns what the client saw
// that contradicts the expectation ("" when all is well).
func btRun(ctx context.Context, j btJob, c openai.Client) string {
	u := j.usage
	opts := []option.RequestOption{
		option.WithHeader(gwtest.HeaderRequestID, j.id),
		option.WithHeader(gwtest.HeaderUsage, fmt.Sprintf("%d,%d,%d,%d", u.Prompt, u.Completion, u.Cached, u.Reasoning)),
	}
	chatParams := openai.ChatCompletionNewParams{Model: j.model, Messages: btChatMsgs}
	checkChatUsage := func(got openai.CompletionUsage) string {
		if got.PromptTokens != int64(u.Prompt) || got.CompletionTokens != int64(u.Completion) ||
			got.PromptTokensDetails.CachedTokens != int64(u.Cached) || got.CompletionTokensDetails.ReasoningTokens != int64(u.Reasoning) {
			return fmt.Sprintf("client saw usage %+v, mock sent %+v", got, u)
		}
		return ""
	}
	// streamChat reads a chat stream; it returns the content, the chunks
	// that have a "usage" member (null included) and the stream's error.
	// cancel, if set, is called after the first content chunk.
	streamChat := func(p openai.ChatCompletionNewParams, cancel func(), o ...option.RequestOption) (string, []openai.ChatCompletionChunk, error) {
		s := c.Chat.Completions.NewStreaming(ctx, p, append(opts, o...)...)
		defer s.Close()
		var text strings.Builder
		var usage []openai.ChatCompletionChunk
		for s.Next() {
			ch := s.Current()
			if strings.Contains(ch.RawJSON(), `"usage"`) {
				usage = append(usage, ch)
			}
			if len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
				text.WriteString(ch.Choices[0].Delta.Content)
				if cancel != nil {
					cancel()
					return text.String(), usage, nil
				}
			}
		}
		return text.String(), usage, s.Err()
	}

	switch j.kind {
	case btChatJSON, btGzip:
		o := opts
		if j.kind == btGzip {
			o = append(o, option.WithHeader(gwtest.HeaderGzip, "1"))
		}
		resp, err := c.Chat.Completions.New(ctx, chatParams, o...)
		if err != nil {
			return err.Error()
		}
		if resp.Choices[0].Message.Content != "Hello from the mock provider." {
			return "content " + resp.Choices[0].Message.Content
		}
		return checkChatUsage(resp.Usage)
	case btChatNoUsage:
		resp, err := c.Chat.Completions.New(ctx, chatParams, append(opts, option.WithHeader(gwtest.HeaderNoUsage, "1"))...)
		if err != nil {
			return err.Error()
		}
		if resp.Usage.TotalTokens != 0 || resp.Choices[0].Message.Content == "" {
			return fmt.Sprintf("no-usage answer: %+v", resp)
		}
	case btChatStream, btStreamNoUsage:
		var o []option.RequestOption
		if j.kind == btStreamNoUsage {
			o = append(o, option.WithHeader(gwtest.HeaderNoUsage, "1"))
		}
		text, usage, err := streamChat(chatParams, nil, o...)
		if err != nil {
			return err.Error()
		}
		if text != btStreamText || len(usage) != 0 {
			return fmt.Sprintf("stream text %q, %d usage chunks reached a client that asked for none", text, len(usage))
		}
	case btChatStreamUsage:
		p := chatParams
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		text, usage, err := streamChat(p, nil)
		if err != nil {
			return err.Error()
		}
		// Every chunk has usage, null but in the last one (as OpenAI sends).
		var reported []openai.ChatCompletionChunk
		for _, ch := range usage {
			if !strings.Contains(ch.RawJSON(), `"usage":null`) {
				reported = append(reported, ch)
			}
		}
		if text != btStreamText || len(reported) != 1 || len(usage) != len(gwtest.StreamPieces)+3 {
			return fmt.Sprintf("stream text %q, %d chunks with usage, %d not null", text, len(usage), len(reported))
		}
		return checkChatUsage(reported[0].Usage)
	case btChatStreamCancel:
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ctx = cctx
		text, _, _ := streamChat(chatParams, cancel, option.WithHeader(gwtest.HeaderDelayMs, "40"))
		if text != gwtest.StreamPieces[0] {
			return "first content " + text
		}
	case btChatStreamCut:
		text, _, err := streamChat(chatParams, nil, option.WithHeader(gwtest.HeaderCut, strconv.Itoa(j.cut)))
		if err == nil {
			return "stream cut by the provider ended without an error at the client"
		}
		if want := strings.Join(gwtest.StreamPieces[:j.cut], ""); text != want {
			return fmt.Sprintf("cut stream text %q, want %q", text, want)
		}
	case btChatError:
		_, err := c.Chat.Completions.New(ctx, chatParams, append(opts, option.WithHeader(gwtest.HeaderStatus, strconv.Itoa(j.status)))...)
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != j.status {
			return fmt.Sprintf("want a %d from the provider, got %v", j.status, err)
		}
	case btStreamError:
		_, _, err := streamChat(chatParams, nil, option.WithHeader(gwtest.HeaderStatus, strconv.Itoa(j.status)))
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != j.status {
			return fmt.Sprintf("want a %d from the provider, got %v", j.status, err)
		}
	case btEmbeddings:
		resp, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: openai.EmbeddingModel(j.model),
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"first text", "second"}},
		}, opts...)
		if err != nil {
			return err.Error()
		}
		if resp.Usage.PromptTokens != int64(u.Prompt) || len(resp.Data) != 1 {
			return fmt.Sprintf("embeddings usage %+v", resp.Usage)
		}
	case btResponses:
		resp, err := c.Responses.New(ctx, responses.ResponseNewParams{
			Model: j.model, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hello")},
			MaxOutputTokens: openai.Int(500),
		}, opts...)
		if err != nil {
			return err.Error()
		}
		return btCheckResponseUsage(resp.Usage, u, resp.OutputText())
	case btResponsesStream, btResponsesCut:
		o := opts
		if j.kind == btResponsesCut {
			o = append(o, option.WithHeader(gwtest.HeaderCut, strconv.Itoa(j.cut)))
		}
		s := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model: j.model, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hello")},
		}, o...)
		defer s.Close()
		var text strings.Builder
		var completed *responses.Response
		for s.Next() {
			ev := s.Current()
			switch ev.Type {
			case "response.output_text.delta":
				text.WriteString(ev.Delta)
			case "response.completed":
				r := ev.Response
				completed = &r
			}
		}
		if j.kind == btResponsesCut {
			if s.Err() == nil || completed != nil {
				return "responses stream cut by the provider ended cleanly"
			}
			if want := strings.Join(gwtest.StreamPieces[:j.cut], ""); text.String() != want {
				return fmt.Sprintf("cut text %q, want %q", text.String(), want)
			}
			return ""
		}
		if s.Err() != nil {
			return s.Err().Error()
		}
		if completed == nil {
			return "no response.completed event"
		}
		if text.String() != btStreamText {
			return "responses stream text " + text.String()
		}
		return btCheckResponseUsage(completed.Usage, u, btStreamText)
	case btCompletions:
		resp, err := c.Completions.New(ctx, openai.CompletionNewParams{
			Model:  openai.CompletionNewParamsModel(j.model),
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Say hello")},
		}, opts...)
		if err != nil {
			return err.Error()
		}
		if resp.Choices[0].Text != "Hello from the mock provider." {
			return "completion text " + resp.Choices[0].Text
		}
		return checkChatUsage(resp.Usage)
	case btCompletionsStream:
		s := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{
			Model:     openai.CompletionNewParamsModel(j.model),
			Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("Say hello")},
			MaxTokens: openai.Int(64),
		}, opts...)
		defer s.Close()
		var text strings.Builder
		for s.Next() {
			ch := s.Current()
			if strings.Contains(ch.RawJSON(), `"usage"`) {
				return "the usage chunk the gateway asked for reached the client"
			}
			if len(ch.Choices) > 0 {
				text.WriteString(ch.Choices[0].Text)
			}
		}
		if s.Err() != nil {
			return s.Err().Error()
		}
		if text.String() != btStreamText {
			return "completions stream text " + text.String()
		}
	}
	return ""
}

func btCheckResponseUsage(got responses.ResponseUsage, u gwtest.Usage, text string) string {
	if got.InputTokens != int64(u.Prompt) || got.OutputTokens != int64(u.Completion) ||
		got.InputTokensDetails.CachedTokens != int64(u.Cached) || got.OutputTokensDetails.ReasoningTokens != int64(u.Reasoning) {
		return fmt.Sprintf("client saw responses usage %+v, mock sent %+v", got, u)
	}
	if text == "" {
		return "empty response text"
	}
	return ""
}

func TestBillingExactMixed(t *testing.T) {
	const (
		n           = 1000
		concurrency = 32
		topup       = "1000"
		topupNano   = 1000 * 1_000_000_000
	)
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))

	var keys []btKey
	accounts := []string{"acct-a", "acct-b", "acct-c"}
	for i, a := range accounts {
		g.NewAccount(a, topup)
		for j := 0; j <= i; j++ { // 1, 2 and 3 keys
			id, secret := g.NewKey(a, fmt.Sprintf("key-%d", j))
			keys = append(keys, btKey{account: a, id: id, secret: secret, client: btClient(g, secret)})
		}
	}

	rng := rand.New(rand.NewPCG(20261125, 1))
	jobs := make([]btJob, n)
	for i := range jobs {
		j := btJob{id: fmt.Sprintf("bt-%04d", i), kind: btKind(i % int(btNumKinds)), key: rng.IntN(len(keys))}
		p := 1 + rng.IntN(6000)
		c := rng.IntN(3000)
		j.usage = gwtest.Usage{Prompt: p, Completion: c}
		if rng.IntN(2) == 0 {
			j.usage.Cached = rng.IntN(p + 1)
		}
		if c > 0 && rng.IntN(3) == 0 {
			j.usage.Reasoning = rng.IntN(c + 1)
		}
		j.cut = rng.IntN(len(gwtest.StreamPieces))
		j.status = []int{500, 502, 429, 400}[rng.IntN(4)]
		if j.kind == btStreamError {
			j.status = 503
		}
		switch j.kind {
		case btEmbeddings:
			j.model = "emb-small"
		case btResponses, btResponsesStream, btResponsesCut:
			j.model = []string{"mock-resp", "big-resp"}[rng.IntN(2)]
		case btCompletions, btCompletionsStream:
			j.model = "mock-instruct"
		default:
			j.model = []string{"mock-chat", "big-chat", "mock-mini"}[rng.IntN(3)]
		}
		jobs[i] = j
	}
	rng.Shuffle(len(jobs), func(a, b int) { jobs[a], jobs[b] = jobs[b], jobs[a] })

	start := time.Now()
	var (
		mu       sync.Mutex
		problems []string
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				j := jobs[i]
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if p := btRun(ctx, j, keys[j.key].client); p != "" {
					mu.Lock()
					problems = append(problems, fmt.Sprintf("%s (%s): %s", j.id, j.kind, p))
					mu.Unlock()
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests in %v", n, time.Since(start))
	for i, p := range problems {
		if i == 20 {
			t.Errorf("... and %d more", len(problems)-20)
			break
		}
		t.Errorf("client: %s", p)
	}

	answers := btWaitAnswers(t, mock, n)
	byAnswer := map[string]gwtest.Answer{}
	for _, a := range answers {
		byAnswer[a.RequestID] = a
	}
	reqs := mock.Requests()
	if len(reqs) != n || len(byAnswer) != n {
		t.Fatalf("mock saw %d requests (%d distinct answers), want %d", len(reqs), len(byAnswer), n)
	}
	btWaitNoHolds(t, g, 5*time.Second)
	rows := btUsageRows(t, g)
	if len(rows) != n {
		t.Fatalf("%d usage rows, want one per request: %d", len(rows), n)
	}

	counts := map[string]int{}
	cancelRaced := 0
	for _, j := range jobs {
		row, ok := rows[j.id]
		if !ok {
			t.Errorf("%s (%s): no ledger row with this request id", j.id, j.kind)
			continue
		}
		ans := byAnswer[j.id]
		key := keys[j.key]
		r := btRateOf(t, j.model)
		fail := func(format string, args ...any) {
			t.Errorf("%s (%s): %s\nrow %+v\nmock usage %+v", j.id, j.kind, fmt.Sprintf(format, args...), row, ans.Usage)
		}
		if row.AccountID != key.account || row.KeyID != key.id || row.Model != j.model || row.Kind != "usage" {
			fail("row belongs to %s/%s/%s, want %s/%s/%s", row.AccountID, row.KeyID, row.Model, key.account, key.id, j.model)
			continue
		}
		class := j.kind.class()
		if j.kind == btChatStreamCancel && !row.Estimated && ans.Usage != nil && !ans.WriteFailed {
			// The whole stream got through before the cancel reached the
			// gateway: then it is billed exactly, like any complete stream.
			class = btExact
			cancelRaced++
		}
		counts[class]++
		switch class {
		case btExact:
			if ans.Usage == nil {
				fail("the mock reported no usage")
				continue
			}
			rep := *ans.Usage
			want := btCost(r, int64(rep.Prompt), int64(rep.Completion), int64(rep.Cached))
			if row.Prompt != int64(rep.Prompt) || row.Completion != int64(rep.Completion) ||
				row.Cached != int64(rep.Cached) || row.Reasoning != int64(rep.Reasoning) {
				fail("tokens differ from what the mock reported")
			}
			if -row.Amount != want {
				fail("cost %d, want %d", -row.Amount, want)
			}
			if row.Estimated || row.Note != "" || row.Status != http.StatusOK {
				fail("exact row flagged estimated=%v note=%q status=%d", row.Estimated, row.Note, row.Status)
			}
		case btFree:
			if row.Amount != 0 || row.Prompt != 0 || row.Completion != 0 || row.Estimated || row.Status != j.status {
				fail("a provider error must cost nothing and keep its status %d", j.status)
			}
			if ans.Usage != nil || ans.Status != j.status {
				fail("mock answered %d with usage %v", ans.Status, ans.Usage)
			}
		case btEstimated:
			if !row.Estimated {
				fail("not flagged estimated")
				continue
			}
			wantPrompt := btPromptEstimate(t, btUpstreamBody(t, reqs, j.id))
			var wantNote string
			lo, hi := int64(-1), int64(-1)
			switch j.kind {
			case btChatStreamCut, btResponsesCut:
				wantNote = "estimated: stream cut before usage arrived"
				lo = btCeil4(utf8.RuneCountInString(ans.Text))
				hi = lo
				if !ans.Aborted {
					fail("mock did not cut")
				}
			case btStreamNoUsage:
				wantNote = "estimated: stream ended without usage"
				lo = btCeil4(utf8.RuneCountInString(btStreamText))
				hi = lo
			case btChatNoUsage:
				wantNote = "estimated: response had no usage"
				lo = btCeil4(utf8.RuneCount(ans.Body))
				hi = lo
			case btChatStreamCancel:
				wantNote = "estimated: stream cut before usage arrived"
				lo = btCeil4(utf8.RuneCountInString(gwtest.StreamPieces[0]))
				hi = btCeil4(utf8.RuneCountInString(btStreamText))
			}
			if ans.Usage != nil && j.kind != btChatStreamCancel {
				fail("mock reported usage, yet the row is estimated")
			}
			if row.Note != wantNote {
				fail("note %q, want %q", row.Note, wantNote)
			}
			if row.Prompt != wantPrompt || row.Completion < lo || row.Completion > hi || row.Cached != 0 || row.Reasoning != 0 {
				fail("estimate: prompt %d (want %d), completion %d (want %d..%d)", row.Prompt, wantPrompt, row.Completion, lo, hi)
			}
			if want := btCost(r, row.Prompt, row.Completion, 0); -row.Amount != want {
				fail("estimated cost %d, want %d", -row.Amount, want)
			}
			if row.Status != http.StatusOK {
				fail("status %d", row.Status)
			}
		}
	}
	t.Logf("rows: %v; cancels that completed before the cancel arrived: %d", counts, cancelRaced)
	if counts[btEstimated] == 0 || counts[btFree] == 0 || counts[btExact] == 0 {
		t.Fatalf("the mix lacks a class: %v", counts)
	}

	// Balances: top-up plus the sum of the ledger, exactly.
	for _, a := range accounts {
		full := btLedger(t, g, url.Values{"account": {a}})
		var all, usage, estimated int64
		var nUsage int64
		for _, r := range full.Rows {
			all += r.Amount
			if r.Kind == "usage" {
				usage += r.Amount
				nUsage++
				if r.Estimated {
					estimated++
				}
			}
		}
		bal := btBalance(t, g, a)
		if bal != topupNano+usage || bal != all {
			t.Errorf("%s: balance %d, top-up + usage %d, sum of ledger %d", a, bal, topupNano+usage, all)
		}
		if len(full.Rows) == 0 || full.Rows[0].BalanceAfter != bal {
			t.Errorf("%s: newest row's balance_after differs from the balance %d", a, bal)
		}
		// Rows come newest first; each balance_after is the previous one
		// plus the row's amount, starting from zero.
		var run int64
		for i := len(full.Rows) - 1; i >= 0; i-- {
			r := full.Rows[i]
			run += r.Amount
			if r.BalanceAfter != run {
				t.Errorf("%s: row %d has balance_after %d, the running sum is %d", a, r.ID, r.BalanceAfter, run)
				break
			}
		}
		if len(full.Totals) != 1 || full.Totals[0].CostNano != -usage || full.Totals[0].Requests != nUsage ||
			full.Totals[0].Estimated != estimated {
			t.Errorf("%s: totals %+v; want cost %d over %d requests, %d estimated", a, full.Totals, -usage, nUsage, estimated)
		}
		if again := btBalance(t, g, a); again != bal {
			t.Errorf("%s: balance moved after everything settled: %d then %d", a, bal, again)
		}
	}
	btAssertNoHolds(t, g)
}

// ---------------------------------------------------------------------------

// TestOverspendBound: 100 concurrent requests on a balance for 10. Prices
// are 1 per 1M tokens (1000 nano-units a token); every request uses 1000
// prompt + 1000 completion tokens, so costs C = 2,000,000 nano, and holds
// H = cost(7 estimated prompt + 2000 max_tokens) = 2,007,000 >= C.
//
// What is guaranteed: a request is refused only when balance - holds <= 0,
// i.e. when Σcost(settled) + Σhold(in flight) >= B0, so n·H >= B0 and at
// least ceil(B0/H) = 10 are admitted. And B - H = B0 - 2.007M·n + 0.007M·s
// after n admissions and s <= n settlements, which for the 11th admission
// would need 20M - 20.07M + 0.007M·s > 0, s > 10: impossible. So exactly 10
// are admitted, whatever the interleaving, and the final balance is
// B0 - 10·C = 0 >= -(C) (the documented bound: overdraft < one request).
func TestOverspendBound(t *testing.T) {
	const (
		C      = int64(2_000_000)
		B0     = 10 * C
		maxTok = 2000
		total  = 100
	)
	mock := gwtest.NewMockProvider(t)
	mock.Usage = gwtest.Usage{Prompt: 1000, Completion: 1000}
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("tight", "0.02")
	_, secret := g.NewKey("tight", "k")
	body := fmt.Sprintf(`{"model":"flat-model","max_tokens":%d,"stream":true,"messages":[{"role":"user","content":"Hello"}]}`, maxTok)
	hold := btCost(btRateOf(t, "flat-model"), btPromptEstimate(t, []byte(body))+maxTok, 0, 0)
	if hold != 2_007_000 || hold < C || btCost(btRateOf(t, "flat-model"), 1000, 1000, 0) != C {
		t.Fatalf("test arithmetic: hold %d, cost %d", hold, C)
	}
	if B0 != btBalance(t, g, "tight") {
		t.Fatal("top-up")
	}

	type result struct {
		status int
		h      http.Header
		body   []byte
		err    error
	}
	results := make([]result, total)
	var wg sync.WaitGroup
	startGate := make(chan struct{})
	for i := 0; i < total; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startGate
			// The streams last ~300 ms so that they are all in flight together.
			s, h, b, err := btPost(g, "/v1/chat/completions", secret, body, map[string]string{
				gwtest.HeaderDelayMs: "50", gwtest.HeaderRequestID: fmt.Sprintf("os-%03d", i)})
			results[i] = result{s, h, b, err}
		}()
	}
	close(startGate)
	wg.Wait()

	admitted, refused := 0, 0
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Fatalf("request %d: %v", i, r.err)
		case r.status == http.StatusOK:
			admitted++
			if !bytes.Contains(r.body, []byte("data: [DONE]")) || bytes.Contains(r.body, []byte(`"usage"`)) {
				t.Fatalf("request %d: incomplete stream or usage chunk leaked: %s", i, r.body)
			}
		case r.status == http.StatusForbidden:
			refused++
			btCheckError(t, r.status, r.h, r.body, http.StatusForbidden, "insufficient_quota", "insufficient_balance")
		default:
			t.Fatalf("request %d: status %d: %s", i, r.status, r.body)
		}
	}
	btWaitNoHolds(t, g, 5*time.Second)
	final := btBalance(t, g, "tight")
	charged := B0 - final
	t.Logf("admitted %d, refused %d, charged %d, final balance %d", admitted, refused, charged, final)
	if admitted+refused != total {
		t.Fatalf("admitted %d + refused %d != %d", admitted, refused, total)
	}
	if mock.Count() != admitted {
		t.Fatalf("mock saw %d requests, %d were admitted; a refused request must never reach it", mock.Count(), admitted)
	}
	minAdmitted := int((B0 + hold - 1) / hold)
	if admitted < minAdmitted {
		t.Fatalf("admitted %d < ceil(B0/hold) = %d: refused while the balance was not held", admitted, minAdmitted)
	}
	if charged >= B0+C || final <= -C {
		t.Fatalf("overspent: charged %d on a balance of %d (bound: < balance + one request's %d)", charged, B0, C)
	}
	if admitted != 10 || final != 0 {
		t.Fatalf("admitted %d with final balance %d; the admission rule allows exactly 10 (see the comment)", admitted, final)
	}
	rows := btUsageRows(t, g)
	if len(rows) != admitted {
		t.Fatalf("%d usage rows for %d admitted requests", len(rows), admitted)
	}
	var sum int64
	for id, r := range rows {
		if -r.Amount != C || r.Estimated || r.Prompt != 1000 || r.Completion != 1000 {
			t.Fatalf("row %s: %+v", id, r)
		}
		sum += -r.Amount
	}
	if sum != charged {
		t.Fatalf("ledger charged %d, balance moved by %d", sum, charged)
	}
}

// ---------------------------------------------------------------------------

// btReceived is when a client saw each event of a stream, and its end.
type btReceived struct {
	at  []time.Time
	end time.Time
	err error
}

// btTimeEvents reads a stream to its end, noting when each event arrived.
func btTimeEvents[T any](s *ssestream.Stream[T]) btReceived {
	defer s.Close()
	var r btReceived
	for s.Next() {
		r.at = append(r.at, time.Now())
	}
	r.end, r.err = time.Now(), s.Err()
	return r
}

// TestStreamingIsNotBuffered: with 300 ms between the mock's events, every
// event reaches the SDK before the mock even starts writing the next one,
// for chat streams with and without the client's include_usage (the latter
// goes through the usage-chunk filter), completions and Responses streams.
func TestStreamingIsNotBuffered(t *testing.T) {
	const delay = 300 * time.Millisecond
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")
	c := btClient(g, secret)

	hdr := func(id string) []option.RequestOption {
		return []option.RequestOption{
			option.WithHeader(gwtest.HeaderRequestID, id),
			option.WithHeader(gwtest.HeaderDelayMs, strconv.Itoa(int(delay/time.Millisecond))),
		}
	}
	variants := map[string]func(id string) btReceived{
		"chat-filtered": func(id string) btReceived {
			return btTimeEvents(c.Chat.Completions.NewStreaming(context.Background(),
				openai.ChatCompletionNewParams{Model: "mock-model", Messages: btChatMsgs}, hdr(id)...))
		},
		"chat-include-usage": func(id string) btReceived {
			return btTimeEvents(c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
				Model: "mock-model", Messages: btChatMsgs,
				StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
			}, hdr(id)...))
		},
		"completions": func(id string) btReceived {
			return btTimeEvents(c.Completions.NewStreaming(context.Background(), openai.CompletionNewParams{
				Model: "mock-instruct", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hi")},
			}, hdr(id)...))
		},
		"responses": func(id string) btReceived {
			return btTimeEvents(c.Responses.NewStreaming(context.Background(), responses.ResponseNewParams{
				Model: "mock-resp", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")},
			}, hdr(id)...))
		},
	}
	got := map[string]btReceived{}
	starts := map[string]time.Time{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, f := range variants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			r := f("nb-" + name)
			mu.Lock()
			got[name], starts[name] = r, start
			mu.Unlock()
		}()
	}
	wg.Wait()
	btWaitAnswers(t, mock, len(variants))
	for name, r := range got {
		if r.err != nil {
			t.Fatalf("%s: %v", name, r.err)
		}
		ans, ok := mock.AnswerFor("nb-" + name)
		if !ok {
			t.Fatalf("%s: no answer recorded", name)
		}
		sent := ans.EventTimes
		// Every event the SDK yields (all but a usage chunk the gateway drops
		// and the final [DONE]) must arrive before the mock writes the next.
		if len(r.at) < 5 || len(r.at) > len(sent) {
			t.Fatalf("%s: client got %d events, mock sent %d", name, len(r.at), len(sent))
		}
		for i, at := range r.at {
			if i+1 == len(sent) {
				break // the mock's last event: nothing to compare with
			}
			if !at.Before(sent[i+1]) {
				t.Errorf("%s: event %d reached the client %v after the mock began sending event %d: the gateway buffers",
					name, i, at.Sub(sent[i+1]), i+1)
			}
		}
		first := r.at[0].Sub(starts[name])
		totalDur := r.end.Sub(starts[name])
		t.Logf("%s: first event after %v, whole stream %v", name, first, totalDur)
		if first >= 250*time.Millisecond || totalDur < 900*time.Millisecond {
			t.Errorf("%s: first event after %v (want < 250ms), stream took %v (want > 900ms)", name, first, totalDur)
		}
	}
	btWaitNoHolds(t, g, 5*time.Second)
}

// ---------------------------------------------------------------------------

// btSplitEvents splits an SSE body into its events (each with its blank line).
func btSplitEvents(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := bytes.Index(b, []byte("\n\n"))
		if i < 0 {
			out = append(out, b)
			break
		}
		out = append(out, b[:i+2])
		b = b[i+2:]
	}
	return out
}

// TestStreamUsageChunkRemoved compares raw bytes: what the client receives
// is exactly what the mock sends for the client's own body. Without the
// client's include_usage, the upstream body had include_usage injected (and
// nothing else changed), so the mock sent "usage": null in every chunk (or,
// asked for continuous_usage_stats, the usage so far, as vLLM does) and a
// usage-only chunk at the end: the gateway billed from that and removed all
// of it. With the client's include_usage, the client gets what the mock
// sent, unchanged.
func TestStreamUsageChunkRemoved(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	mock.Usage = gwtest.Usage{Prompt: 31, Completion: 17, Cached: 8, Reasoning: 3}
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")

	cases := []struct {
		name, path, body string
		clientAsked      bool
	}{
		{"chat", "/v1/chat/completions",
			`{"model":"mock-model", "stream":true, "messages":[{"role":"user","content":"Hi there"}],"temperature":0.5}`, false},
		{"chat-null-options", "/v1/chat/completions",
			`{"stream_options":null,"model":"mock-model","stream":true,"messages":[{"role":"user","content":"x"}]}`, false},
		{"chat-other-option", "/v1/chat/completions",
			`{"model":"mock-model","stream":true,"stream_options":{"include_obfuscation":false},"messages":[{"role":"user","content":"x"}]}`, false},
		{"chat-continuous-usage", "/v1/chat/completions",
			`{"model":"mock-model","stream":true,"stream_options":{"continuous_usage_stats":true},"messages":[{"role":"user","content":"x"}]}`, false},
		{"completions", "/v1/completions", `{"model":"mock-instruct","stream":true,"prompt":"Say hi"}`, false},
		{"completions-continuous-usage", "/v1/completions",
			`{"model":"mock-instruct","stream":true,"stream_options":{"continuous_usage_stats":true},"prompt":"Say hi"}`, false},
		{"chat-client-asked", "/v1/chat/completions",
			`{"model":"mock-model","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hi"}]}`, true},
		{"chat-continuous-client-asked", "/v1/chat/completions",
			`{"model":"mock-model","stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true},"messages":[{"role":"user","content":"Hi"}]}`, true},
		{"completions-client-asked", "/v1/completions",
			`{"model":"mock-instruct","stream":true,"stream_options":{"include_usage":true},"prompt":"Say hi"}`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := "ucr-" + c.name
			status, h, got, err := btPost(g, c.path, secret, c.body, map[string]string{gwtest.HeaderRequestID: id})
			if err != nil || status != http.StatusOK {
				t.Fatalf("status %d, err %v: %s", status, err, got)
			}
			if h.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("Content-Type %q", h.Get("Content-Type"))
			}
			ans, ok := mock.AnswerFor(id)
			if !ok {
				t.Fatal("no answer recorded")
			}
			up := btUpstreamBody(t, mock.Requests(), id)

			// The mock's bytes, fetched again directly: the mock is
			// deterministic, and its record is what it sent.
			direct := func(body []byte) []byte {
				req, _ := http.NewRequest("POST", mock.URL+c.path, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := btRawHTTP.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return b
			}
			if d := direct(up); !bytes.Equal(d, ans.Body) {
				t.Fatalf("the mock's record differs from a direct call:\n%s\n%s", ans.Body, d)
			}
			// What the client would have received without the gateway.
			want := direct([]byte(c.body))

			// What the mock sent carries usage in every event but [DONE].
			events := btSplitEvents(ans.Body)
			usageEvents := 0
			for _, ev := range events[:len(events)-1] {
				switch {
				case bytes.Contains(ev, []byte(`"choices":[]`)) && bytes.Contains(ev, []byte(`"usage":{`)):
					usageEvents++
				case !bytes.Contains(ev, []byte(`,"usage":null}`)) && !bytes.Contains(ev, []byte(`,"usage":{"completion_tokens":`)):
					t.Fatalf("mock sent an event without usage: %s", ev)
				}
			}
			if usageEvents != 1 || string(events[len(events)-1]) != "data: [DONE]\n\n" {
				t.Fatalf("mock sent %d usage chunks: %s", usageEvents, ans.Body)
			}
			if bytes.Contains(want, []byte(`"usage"`)) == !c.clientAsked {
				t.Fatalf("without the gateway the client would get usage: %v:\n%s", c.clientAsked, want)
			}
			if c.clientAsked {
				if !bytes.Equal(want, ans.Body) {
					t.Fatal("the mock answers the client's body differently from the upstream body")
				}
				if !bytes.Equal(up, []byte(c.body)) {
					t.Fatalf("upstream body changed although the client asked for usage:\n%s\n%s", c.body, up)
				}
			} else {
				var upMap, clientMap map[string]any
				if err := json.Unmarshal(up, &upMap); err != nil {
					t.Fatal(err)
				}
				_ = json.Unmarshal([]byte(c.body), &clientMap)
				so, _ := upMap["stream_options"].(map[string]any)
				if so["include_usage"] != true {
					t.Fatalf("include_usage not injected upstream: %s", up)
				}
				delete(so, "include_usage")
				cso, _ := clientMap["stream_options"].(map[string]any)
				if len(so) != len(cso) {
					t.Fatalf("other stream_options changed: %s", up)
				}
				delete(upMap, "stream_options")
				delete(clientMap, "stream_options")
				a, _ := json.Marshal(upMap)
				b, _ := json.Marshal(clientMap)
				if !bytes.Equal(a, b) {
					t.Fatalf("injection changed more than stream_options:\n%s\n%s", c.body, up)
				}
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("client bytes\n%q\nwant (the mock's answer to the client's own body)\n%q", got, want)
			}
			rows := btUsageRows(t, g)
			r := rows[id]
			if r.Prompt != 31 || r.Completion != 17 || r.Cached != 8 || r.Reasoning != 3 || r.Estimated ||
				-r.Amount != btCost(btRateOf(t, "mock-"), 31, 17, 8) {
				t.Fatalf("row %+v", r)
			}
		})
	}
	btAssertNoHolds(t, g)
}

// ---------------------------------------------------------------------------

// TestInvalidJSONNeverForwarded: bodies that are not one JSON object (or
// have a field of the wrong type) get 400 invalid_json, unknown models 400
// model_not_priced, oversized bodies 413; none reaches the provider, none is
// charged, none leaves a hold.
func TestInvalidJSONNeverForwarded(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	// request_body applies only to /v1/embeddings; the guard itself caps
	// bodies at 2KB everywhere. handle_errors is the README's snippet that
	// gives request_body's own 413 the OpenAI shape.
	g.LoadSite(`
	@emb path /v1/embeddings
	request_body @emb {
		max_size 300B
	}
	handle_errors 413 {
		header Content-Type application/json
		respond <<JSON
			{"error":{"message":"The request body is larger than this gateway accepts.","type":"invalid_request_error","param":null,"code":"request_too_large"}}
			JSON 413
	}` + btSite(mock.URL, "max_request_body 2KB\n\t\tmodels_endpoint upstream", ""))
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")
	before := btBalance(t, g, "acme")
	metricsBefore, _ := btScrape(t, g)

	for _, path := range []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"} {
		for _, body := range []string{`{`, `[]`, `{"model":5}`, ``, `null`, `"x"`, `{"model":"mock-model"} {}`,
			`{"model":"mock-model","stream":"yes"}`, `{"model":"mock-model","max_tokens":-1}`,
			`{"model":"mock-model","stream":true,"stream_options":[]}`,
			// a repeated member the gateway reads: a provider might read the
			// other copy than the one billed
			`{"model":"mock-model","model":"flat-model"}`, `{"model":"mock-model","n":1,"n":50}`} {
			status, h, b, err := btPost(g, path, secret, body, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Run(path+" "+body, func(t *testing.T) {
				btCheckError(t, status, h, b, http.StatusBadRequest, "invalid_request_error", "invalid_json")
			})
		}
		status, h, b, _ := btPost(g, path, secret, `{"model":"gpt-unpriced","messages":[]}`, nil)
		btCheckError(t, status, h, b, http.StatusBadRequest, "invalid_request_error", "model_not_priced")
		if !bytes.Contains(b, []byte("gpt-unpriced")) {
			t.Fatalf("model_not_priced does not name the model: %s", b)
		}
		status, h, b, _ = btPost(g, path, secret, `{"messages":[]}`, nil)
		btCheckError(t, status, h, b, http.StatusBadRequest, "invalid_request_error", "model_not_priced")
	}
	// Spellings of a metered path that a lenient provider might route are
	// metered too, not passed through free.
	for _, path := range []string{"/v1/Chat/Completions", "/v1/chat/completions;x"} {
		status, h, b, _ := btPost(g, path, secret, `{"model":"gpt-unpriced","messages":[]}`, nil)
		btCheckError(t, status, h, b, http.StatusBadRequest, "invalid_request_error", "model_not_priced")
	}
	big := `{"model":"mock-model","messages":[{"role":"user","content":"` + strings.Repeat("a", 3000) + `"}]}`
	status, h, b, _ := btPost(g, "/v1/chat/completions", secret, big, nil)
	btCheckError(t, status, h, b, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large")
	// request_body refuses a declared Content-Length over max_size itself,
	// before any handler of ours runs (shaped by handle_errors); a chunked
	// body of unknown length reaches the guard, whose read hits the limit:
	// 413 in the OpenAI shape.
	mid := `{"model":"emb-small","input":"` + strings.Repeat("a", 500) + `"}`
	status, h, b, _ = btPost(g, "/v1/embeddings", secret, mid, nil)
	btCheckError(t, status, h, b, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large")
	// (a body that is not a *strings.Reader has no known length: chunked)
	req, _ := http.NewRequest("POST", g.BaseURL+"/v1/embeddings", io.MultiReader(strings.NewReader(mid)))
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := btRawHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	btCheckError(t, resp.StatusCode, resp.Header, b, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large")
	if !bytes.Contains(b, []byte("300 bytes")) {
		t.Fatalf("413 does not name request_body's limit: %s", b)
	}

	if n := mock.Count(); n != 0 {
		t.Fatalf("mock saw %d requests; refused bodies must never be forwarded", n)
	}
	if rows := btUsageRows(t, g); len(rows) != 0 {
		t.Fatalf("%d usage rows for refused requests", len(rows))
	}
	if after := btBalance(t, g, "acme"); after != before {
		t.Fatalf("balance moved from %d to %d", before, after)
	}
	btAssertNoHolds(t, g)
	series, _ := btScrape(t, g)
	for reason, want := range map[string]float64{"invalid_json": 48, "model_not_priced": 10, "request_too_large": 2} {
		v, _ := btMetric(series, "caddy_ai_gateway_rejected_total", map[string]string{"reason": reason})
		v0, _ := btMetric(metricsBefore, "caddy_ai_gateway_rejected_total", map[string]string{"reason": reason})
		if v-v0 != want {
			t.Errorf("rejected_total{reason=%s} grew by %v, want %v", reason, v-v0, want)
		}
	}

	// The same bodies, well-formed, do go through: the limits above are not
	// refusing everything.
	status, _, b, _ = btPost(g, "/v1/embeddings", secret, `{"model":"emb-small","input":"hello"}`, nil)
	if status != http.StatusOK || mock.Count() != 1 {
		t.Fatalf("valid request: %d %s", status, b)
	}
	// Requests that are not metered pass without a ledger row (with
	// models_endpoint upstream, GET /v1/models goes to the provider).
	req, _ = http.NewRequest("GET", g.BaseURL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err = btRawHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || mock.Count() != 2 {
		t.Fatalf("GET /v1/models: %d", resp.StatusCode)
	}
	if rows := btUsageRows(t, g); len(rows) != 1 {
		t.Fatalf("%d usage rows, want only the embeddings one", len(rows))
	}
}

// ---------------------------------------------------------------------------

// TestProviderErrorCostsNothing: an upstream error status, JSON or for a
// stream request, is passed on unchanged and costs 0, with a ledger row that
// keeps the status.
func TestProviderErrorCostsNothing(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	// /dead/v1/* proxies to a loopback port nobody listens on.
	dead := fmt.Sprintf("127.0.0.1:%d", gwtest.FreePort(t))
	g.LoadSite(btSite(mock.URL, "", "") + `
	handle /dead/v1/* {
		api_key_auth` + btGuard("") + `
		reverse_proxy ` + dead + `
	}`)
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")
	before := btBalance(t, g, "acme")
	c := btClient(g, secret)

	// No answer at all: Caddy's 502, a free row with Caddy's request id.
	status, _, b, err := btPost(g, "/dead/v1/chat/completions", secret, `{"model":"big-model","messages":[]}`, nil)
	if err != nil || status != http.StatusBadGateway {
		t.Fatalf("dead upstream: %d %v %s", status, err, b)
	}
	u := btLedger(t, g, url.Values{"kind": {"usage"}})
	if len(u.Rows) != 1 || u.Rows[0].Amount != 0 || u.Rows[0].Status != http.StatusBadGateway || u.Rows[0].Estimated {
		t.Fatalf("dead upstream rows %+v; want one free 502", u.Rows)
	}
	deadRow := u.Rows[0].RequestID
	btAssertNoHolds(t, g)

	statuses := []int{400, 401, 404, 429, 500, 502, 503}
	for _, st := range statuses {
		id := fmt.Sprintf("pe-%d", st)
		_, err := c.Chat.Completions.New(context.Background(),
			openai.ChatCompletionNewParams{Model: "big-model", Messages: btChatMsgs, MaxTokens: openai.Int(100)},
			option.WithHeader(gwtest.HeaderStatus, strconv.Itoa(st)), option.WithHeader(gwtest.HeaderRequestID, id),
			option.WithHeader(gwtest.HeaderUsage, "1000,1000"))
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != st || apiErr.Code != "mock_status" {
			t.Fatalf("%d: client got %v; want the provider's error", st, err)
		}
		// a stream request answered with an error
		sid := id + "-stream"
		status, _, b, _ := btPost(g, "/v1/chat/completions", secret, `{"model":"big-model","stream":true,"messages":[]}`,
			map[string]string{gwtest.HeaderStatus: strconv.Itoa(st), gwtest.HeaderRequestID: sid})
		if status != st || !bytes.Contains(b, []byte(`"mock_status"`)) {
			t.Fatalf("stream %d: got %d %s", st, status, b)
		}
	}
	// An error that does report usage is billed by it, like any answer.
	status, _, b, _ = btPost(g, "/v1/chat/completions", secret, `{"model":"big-model","messages":[]}`,
		map[string]string{gwtest.HeaderStatus: "400", gwtest.HeaderErrorUsage: "1", gwtest.HeaderUsage: "29,31",
			gwtest.HeaderRequestID: "error-with-usage"})
	if status != http.StatusBadRequest || !bytes.Contains(b, []byte(`"usage"`)) {
		t.Fatalf("error with usage: %d %s", status, b)
	}
	rows := btUsageRows(t, g)
	delete(rows, deadRow)
	withUsage := rows["error-with-usage"]
	delete(rows, "error-with-usage")
	if cost := btCost(btRateOf(t, "big-model"), 29, 31, 0); -withUsage.Amount != cost || withUsage.Estimated ||
		withUsage.Status != http.StatusBadRequest || withUsage.Prompt != 29 || withUsage.Completion != 31 {
		t.Fatalf("error with usage: row %+v, want cost %d", withUsage, cost)
	}
	before -= btCost(btRateOf(t, "big-model"), 29, 31, 0)
	if len(rows) != 2*len(statuses) {
		t.Fatalf("%d rows, want %d", len(rows), 2*len(statuses))
	}
	for id, r := range rows {
		var st int
		fmt.Sscanf(id, "pe-%d", &st)
		if r.Amount != 0 || r.Status != st || r.Estimated || r.Prompt != 0 || r.Completion != 0 || r.Note != "" {
			t.Fatalf("row %s: %+v; a provider error must cost nothing", id, r)
		}
	}
	if after := btBalance(t, g, "acme"); after != before {
		t.Fatalf("balance moved from %d to %d", before, after)
	}
	btAssertNoHolds(t, g)
}

// TestUsageMissingIsEstimatedAndFlagged: a 2xx answer without usage is
// charged the documented estimate and flagged, with a note saying why.
func TestUsageMissingIsEstimatedAndFlagged(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")
	metricsBefore, _ := btScrape(t, g)

	type tc struct {
		name, path, body string
		headers          map[string]string
		note             string
		chars            func(a gwtest.Answer) int
	}
	body := func(a gwtest.Answer) int { return utf8.RuneCount(a.Body) }
	text := func(a gwtest.Answer) int { return utf8.RuneCountInString(a.Text) }
	cases := []tc{
		{"chat-json", "/v1/chat/completions", `{"model":"mock-model","messages":[{"role":"user","content":"Write a long poem about caddies"}]}`,
			map[string]string{gwtest.HeaderNoUsage: "1"}, "estimated: response had no usage", body},
		{"responses-json", "/v1/responses", `{"model":"big-model","input":[{"role":"user","content":"hi"},{"role":"user","content":"again"}],"instructions":"be brief"}`,
			map[string]string{gwtest.HeaderNoUsage: "1"}, "estimated: response had no usage", body},
		{"chat-stream", "/v1/chat/completions", `{"model":"mock-model","stream":true,"messages":[{"role":"system","content":"sys"},{"role":"user","content":"héllo"}]}`,
			map[string]string{gwtest.HeaderNoUsage: "1"}, "estimated: stream ended without usage", text},
		{"responses-stream", "/v1/responses", `{"model":"mock-model","stream":true,"input":"hi"}`,
			map[string]string{gwtest.HeaderNoUsage: "1"}, "estimated: stream ended without usage", text},
		{"chat-stream-cut", "/v1/chat/completions", `{"model":"mock-model","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}`,
			map[string]string{gwtest.HeaderCut: "3"}, "estimated: stream cut before usage arrived", text},
		{"completions-stream-cut-at-once", "/v1/completions", `{"model":"mock-model","stream":true,"prompt":"x"}`,
			map[string]string{gwtest.HeaderCut: "0"}, "estimated: stream cut before usage arrived", text},
		// embeddings output is vectors, not completion tokens: the prompt only
		{"embeddings-json", "/v1/embeddings", `{"model":"mock-model","input":["one text","and another one"]}`,
			map[string]string{gwtest.HeaderNoUsage: "1"}, "estimated: response had no usage", func(gwtest.Answer) int { return 0 }},
		// usage no amount can hold (a broken provider) is not taken at its word
		{"usage-out-of-range", "/v1/chat/completions", `{"model":"mock-model","messages":[{"role":"user","content":"x"}]}`,
			map[string]string{gwtest.HeaderUsage: "3000000000000000000,3000000000000000000"},
			"estimated: reported usage out of range (prompt 3000000000000000000, completion 3000000000000000000 tokens)", body},
	}
	for _, c := range cases {
		id := "um-" + c.name
		c.headers[gwtest.HeaderRequestID] = id
		status, _, _, err := btPost(g, c.path, secret, c.body, c.headers)
		if err == nil && status != http.StatusOK {
			t.Fatalf("%s: status %d", c.name, status)
		}
	}
	btWaitAnswers(t, mock, len(cases))
	rows := btUsageRows(t, g)
	var sum int64
	for _, c := range cases {
		id := "um-" + c.name
		r, ok := rows[id]
		if !ok {
			t.Fatalf("%s: no row", c.name)
		}
		a, _ := mock.AnswerFor(id)
		if (a.Usage != nil) != (c.headers[gwtest.HeaderUsage] != "") {
			t.Fatalf("%s: mock usage %+v", c.name, a.Usage)
		}
		wantPrompt := btPromptEstimate(t, []byte(c.body))
		wantCompletion := btCeil4(c.chars(a))
		model := "mock-model"
		if strings.HasPrefix(c.body, `{"model":"big`) {
			model = "big-model"
		}
		wantCost := btCost(btRateOf(t, model), wantPrompt, wantCompletion, 0)
		if !r.Estimated || r.Note != c.note || r.Prompt != wantPrompt || r.Completion != wantCompletion ||
			-r.Amount != wantCost || r.Status != http.StatusOK {
			t.Errorf("%s: row %+v\nwant estimated, note %q, prompt %d, completion %d, cost %d",
				c.name, r, c.note, wantPrompt, wantCompletion, wantCost)
		}
		if wantCost == 0 {
			t.Errorf("%s: test case charges nothing", c.name)
		}
		sum += wantCost
	}
	u := btLedger(t, g, url.Values{"account": {"acme"}, "kind": {"usage"}})
	if len(u.Totals) != 1 || u.Totals[0].Estimated != int64(len(cases)) || u.Totals[0].CostNano != sum {
		t.Fatalf("totals %+v, want %d estimated costing %d", u.Totals, len(cases), sum)
	}
	v0, _ := btMetric(metricsBefore, "caddy_ai_gateway_estimated_charges_total", nil)
	btEventually(t, 5*time.Second, func() string {
		series, _ := btScrape(t, g)
		v, _ := btMetric(series, "caddy_ai_gateway_estimated_charges_total", nil)
		if v-v0 != float64(len(cases)) {
			return fmt.Sprintf("estimated_charges_total grew by %v, want %d", v-v0, len(cases))
		}
		return ""
	})
	btAssertNoHolds(t, g)
}

// TestGzipProviderResponse: a provider that gzips its JSON although the
// gateway asked for identity is still metered exactly, and the client gets
// the body intact (the SDK, which accepts gzip, decodes it; a raw client
// gets the provider's gzip bytes unchanged).
func TestGzipProviderResponse(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")
	c := btClient(g, secret)

	resp, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: "mock-model", Messages: btChatMsgs},
		option.WithHeader(gwtest.HeaderGzip, "1"), option.WithHeader(gwtest.HeaderUsage, "1234,567,89,12"),
		option.WithHeader(gwtest.HeaderRequestID, "gz-sdk"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Choices[0].Message.Content != "Hello from the mock provider." || resp.Usage.PromptTokens != 1234 {
		t.Fatalf("SDK got %+v", resp)
	}
	status, h, raw, err := btPost(g, "/v1/embeddings", secret, `{"model":"emb-small","input":"hi"}`,
		map[string]string{gwtest.HeaderGzip: "1", gwtest.HeaderUsage: "777,0", gwtest.HeaderRequestID: "gz-raw"})
	if err != nil || status != http.StatusOK || h.Get("Content-Encoding") != "gzip" {
		t.Fatalf("raw: %d %v %v", status, err, h)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("client body is not gzip: %v", err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := mock.AnswerFor("gz-raw")
	if !a.Gzip || !bytes.Equal(plain, a.Body) {
		t.Fatalf("client body %s differs from the mock's %s", plain, a.Body)
	}
	for _, up := range mock.Requests() {
		if up.Header.Get("Accept-Encoding") != "identity" {
			t.Fatalf("upstream Accept-Encoding %q, want identity", up.Header.Get("Accept-Encoding"))
		}
	}
	// A stream gzipped although the gateway asked for identity is decoded on
	// the way: the client gets it plain, each event at once, without the
	// usage the gateway asked for; the usage is billed.
	req, _ := http.NewRequest("POST", g.BaseURL+"/v1/chat/completions",
		strings.NewReader(`{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"Hello"}]}`))
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range map[string]string{gwtest.HeaderGzip: "1", gwtest.HeaderUsage: "40,12",
		gwtest.HeaderDelayMs: "300", gwtest.HeaderRequestID: "gz-stream"} {
		req.Header.Set(k, v)
	}
	sresp, err := btRawHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	if sresp.StatusCode != http.StatusOK || sresp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("gzip stream: %d, headers %v", sresp.StatusCode, sresp.Header)
	}
	br := bufio.NewReader(sresp.Body)
	first, err := br.ReadString('\n')
	firstAt := time.Now()
	if err != nil || !strings.HasPrefix(first, "data: {") {
		t.Fatalf("first line %q: %v", first, err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	streamed := first + string(rest)
	a, _ = mock.AnswerFor("gz-stream")
	if !a.Gzip || len(a.EventTimes) < 2 || !firstAt.Before(a.EventTimes[1]) {
		t.Fatalf("first event reached the client at %v, the mock sent the second at %v (gzip %v)", firstAt, a.EventTimes, a.Gzip)
	}
	if strings.Contains(streamed, "usage") || !strings.HasSuffix(streamed, "data: [DONE]\n\n") ||
		!strings.Contains(streamed, `"content":" mock."`) {
		t.Fatalf("client stream:\n%s", streamed)
	}
	rows := btUsageRows(t, g)
	if r := rows["gz-stream"]; r.Prompt != 40 || r.Completion != 12 || r.Estimated || -r.Amount != btCost(btRateOf(t, "mock-"), 40, 12, 0) {
		t.Fatalf("gzip stream row %+v", r)
	}
	if r := rows["gz-sdk"]; r.Prompt != 1234 || r.Completion != 567 || r.Cached != 89 || r.Reasoning != 12 || r.Estimated ||
		-r.Amount != btCost(btRateOf(t, "mock-"), 1234, 567, 89) {
		t.Fatalf("gzip chat row %+v", r)
	}
	if r := rows["gz-raw"]; r.Prompt != 777 || r.Completion != 0 || r.Estimated || -r.Amount != btCost(btRateOf(t, "emb-"), 777, 0, 0) {
		t.Fatalf("gzip embeddings row %+v", r)
	}
}

// TestResponsesAndEmbeddingsMetered: Responses API (JSON and stream, with
// cached and reasoning tokens) and embeddings are charged exactly.
func TestResponsesAndEmbeddingsMetered(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme", "100")
	_, secret := g.NewKey("acme", "k")
	c := btClient(g, secret)
	ctx := context.Background()

	resp, err := c.Responses.New(ctx, responses.ResponseNewParams{
		Model: "big-model", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Hello")},
		Instructions: openai.String("Be brief"), MaxOutputTokens: openai.Int(300),
	}, option.WithHeader(gwtest.HeaderUsage, "5000,900,4000,600"), option.WithHeader(gwtest.HeaderRequestID, "re-json"))
	if err != nil {
		t.Fatal(err)
	}
	if msg := btCheckResponseUsage(resp.Usage, gwtest.Usage{Prompt: 5000, Completion: 900, Cached: 4000, Reasoning: 600}, resp.OutputText()); msg != "" {
		t.Fatal(msg)
	}
	s := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{
		Model: "mock-model", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Hello")},
	}, option.WithHeader(gwtest.HeaderUsage, "321,123,21,3"), option.WithHeader(gwtest.HeaderRequestID, "re-stream"))
	var completed bool
	for s.Next() {
		if ev := s.Current(); ev.Type == "response.completed" {
			completed = ev.Response.Usage.InputTokens == 321
		}
	}
	if s.Err() != nil || !completed {
		t.Fatalf("responses stream: %v, completed with usage %v", s.Err(), completed)
	}
	s.Close()
	emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "emb-large", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b", "c"}},
	}, option.WithHeader(gwtest.HeaderUsage, "999999,0"), option.WithHeader(gwtest.HeaderRequestID, "re-emb"))
	if err != nil || emb.Usage.PromptTokens != 999999 {
		t.Fatalf("embeddings: %v %+v", err, emb)
	}

	rows := btUsageRows(t, g)
	want := map[string][5]int64{ // prompt, completion, cached, reasoning, cost
		"re-json":   {5000, 900, 4000, 600, btCost(btRateOf(t, "big-"), 5000, 900, 4000)},
		"re-stream": {321, 123, 21, 3, btCost(btRateOf(t, "mock-"), 321, 123, 21)},
		"re-emb":    {999999, 0, 0, 0, btCost(btRateOf(t, "emb-"), 999999, 0, 0)},
	}
	var sum int64
	for id, w := range want {
		r := rows[id]
		if got := [5]int64{r.Prompt, r.Completion, r.Cached, r.Reasoning, -r.Amount}; got != w || r.Estimated || r.Status != 200 {
			t.Errorf("%s: row %v (estimated %v), want %v", id, got, r.Estimated, w)
		}
		sum += w[4]
	}
	if bal := btBalance(t, g, "acme"); bal != 100_000_000_000-sum {
		t.Fatalf("balance %d, want %d", bal, 100_000_000_000-sum)
	}
	// The upstream Responses request is unchanged (no include_usage there).
	for _, r := range mock.Requests() {
		if r.Path == "/v1/responses" && bytes.Contains(r.Body, []byte("stream_options")) {
			t.Fatalf("stream_options injected into a Responses request: %s", r.Body)
		}
	}
	btAssertNoHolds(t, g)
}

// TestClientCancelReleasesHold: a client that goes away mid-stream, or
// before the provider answered at all, releases its hold at once, long
// before the provider would have finished.
func TestClientCancelReleasesHold(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")
	c := btClient(g, secret)

	// Mid-stream: 400 ms between events, so the stream would last ~2.4 s.
	ctx, cancel := context.WithCancel(context.Background())
	s := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "big-model", Messages: btChatMsgs},
		option.WithHeader(gwtest.HeaderDelayMs, "400"), option.WithHeader(gwtest.HeaderRequestID, "cc-stream"))
	for s.Next() {
		if ch := s.Current(); len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
			break
		}
	}
	series, _ := btScrape(t, g)
	if n, _ := btMetric(series, "caddy_ai_gateway_holds_in_flight", nil); n != 1 {
		t.Fatalf("holds in flight mid-stream: %v, want 1", n)
	}
	cancel()
	s.Close()
	if took := btWaitNoHolds(t, g, 300*time.Millisecond); took > 300*time.Millisecond {
		t.Fatalf("hold released after %v", took)
	}

	// Before the answer: the provider waits 1.5 s before answering at all.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	_, err := c.Chat.Completions.New(ctx2, openai.ChatCompletionNewParams{Model: "big-model", Messages: btChatMsgs},
		option.WithHeader(gwtest.HeaderWaitMs, "1500"), option.WithHeader(gwtest.HeaderRequestID, "cc-wait"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the client's deadline, got %v", err)
	}
	took := btWaitNoHolds(t, g, 500*time.Millisecond)
	t.Logf("hold of the unanswered request released %v after the client gave up", took)

	rows := btUsageRows(t, g)
	r := rows["cc-stream"]
	wantPrompt := int64(7) // "user" + "Hello": ceil(9/4) + 4
	if !r.Estimated || r.Note != "estimated: stream cut before usage arrived" || r.Prompt != wantPrompt ||
		r.Completion < 2 || r.Completion > 5 || -r.Amount != btCost(btRateOf(t, "big-"), r.Prompt, r.Completion, 0) {
		t.Fatalf("cancelled stream row %+v", r)
	}
	// The provider never answered, so the row carries a gateway request id.
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rows))
	}
	var w btRow
	for id, row := range rows {
		if id != "cc-stream" {
			w = row
		}
	}
	// The provider had the request, so it is charged the prompt estimate.
	if !w.Estimated || w.Note != "estimated: client left before the response" || w.Status != 499 ||
		w.Prompt != wantPrompt || w.Completion != 0 || -w.Amount != btCost(btRateOf(t, "big-"), wantPrompt, 0, 0) ||
		w.Amount == 0 || !strings.HasPrefix(w.RequestID, "gw-") {
		t.Fatalf("unanswered request row %+v; want the prompt estimate, status 499", w)
	}
	if bal := btBalance(t, g, "acme"); bal != 10_000_000_000+r.Amount+w.Amount {
		t.Fatalf("balance %d", bal)
	}
}

// TestClientLeavesBeforeSending: a client that gives up while the gateway
// is still trying to reach the provider (here: nothing listens, and
// reverse_proxy keeps retrying) pays nothing, since no provider saw the
// request; its row says 499.
func TestClientLeavesBeforeSending(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // connections to it are refused from now on
	g := gwtest.New(t)
	g.LoadSite(`
	api_key_auth
	` + btGuard("") + `
	reverse_proxy ` + dead + ` {
		lb_try_duration 5s
		lb_try_interval 50ms
	}`)
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	c := btClient(g, secret)
	_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "big-model", Messages: btChatMsgs},
		option.WithMaxRetries(0))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the client's deadline, got %v", err)
	}
	btWaitNoHolds(t, g, 2*time.Second)
	rows := btUsageRows(t, g)
	if len(rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rows))
	}
	for _, r := range rows {
		if r.Amount != 0 || r.Estimated || r.Status != 499 {
			t.Fatalf("row %+v; want free, status 499", r)
		}
	}
	if bal := btBalance(t, g, "acme"); bal != 10_000_000_000 {
		t.Fatalf("balance %d", bal)
	}
}

// ---------------------------------------------------------------------------

// TestUsageAdminAndPlaceholders checks GET /ai-gateway/usage filters and
// groupings against the rows, and the access log: the gateway's fields and
// the {ai_gateway.*} placeholders (through log_append), never the key.
func TestUsageAdminAndPlaceholders(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	accessLog := filepath.Join(g.Dir, "access.log")
	g.LoadSite(`
	log {
		output file ` + accessLog + `
		format json
	}` + btSite(mock.URL, "", `
		log_append placeholder_cost {ai_gateway.cost}
		log_append placeholder_prompt {ai_gateway.tokens.prompt}
		log_append placeholder_model {ai_gateway.model}`))
	g.NewAccount("alpha", "50")
	g.NewAccount("beta", "50")
	k1, s1 := g.NewKey("alpha", "one")
	k2, s2 := g.NewKey("alpha", "two")
	k3, s3 := g.NewKey("beta", "three")
	secrets := map[string]string{k1: s1, k2: s2, k3: s3}

	type sent struct {
		id, key, account, model string
		p, c, cached            int64
	}
	var all []sent
	do := func(batch int) {
		for i, x := range []struct {
			key, account, model string
			p, c, cached        int64
		}{
			{k1, "alpha", "mock-a", 100, 50, 10},
			{k1, "alpha", "big-b", 200, 20, 0},
			{k2, "alpha", "mock-a", 300, 30, 30},
			{k3, "beta", "big-b", 400, 40, 5},
			{k3, "beta", "mock-a", 500, 0, 0},
		} {
			id := fmt.Sprintf("ua-%d-%d", batch, i)
			body := `{"model":"` + x.model + `","messages":[{"role":"user","content":"hi"}]}`
			status, _, b, err := btPost(g, "/v1/chat/completions", secrets[x.key], body, map[string]string{
				gwtest.HeaderRequestID: id, gwtest.HeaderUsage: fmt.Sprintf("%d,%d,%d", x.p, x.c, x.cached)})
			if err != nil || status != 200 {
				t.Fatalf("%s: %d %v %s", id, status, err, b)
			}
			all = append(all, sent{id, x.key, x.account, x.model, x.p, x.c, x.cached})
		}
	}
	do(0)
	time.Sleep(20 * time.Millisecond)
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	do(1)

	costOf := func(s sent) int64 { return btCost(btRateOf(t, s.model), s.p, s.c, s.cached) }
	sumWhere := func(keep func(s sent) bool) btTotal {
		var tot btTotal
		for _, s := range all {
			if keep(s) {
				tot.Requests++
				tot.Prompt += s.p
				tot.Completion += s.c
				tot.Cached += s.cached
				tot.CostNano += costOf(s)
			}
		}
		return tot
	}
	check := func(q url.Values, keep func(s sent) bool) {
		t.Helper()
		u := btLedger(t, g, q)
		want := sumWhere(keep)
		if len(u.Totals) != 1 {
			t.Fatalf("%s: totals %+v", q.Encode(), u.Totals)
		}
		got := u.Totals[0]
		got.Group, got.Cost = "", ""
		if got != want {
			t.Fatalf("%s: totals %+v, want %+v", q.Encode(), got, want)
		}
		n := 0
		for _, r := range u.Rows {
			if r.Kind == "usage" {
				n++
			}
		}
		if int64(n) != want.Requests {
			t.Fatalf("%s: %d usage rows, want %d", q.Encode(), n, want.Requests)
		}
	}
	check(url.Values{}, func(sent) bool { return true })
	check(url.Values{"account": {"alpha"}}, func(s sent) bool { return s.account == "alpha" })
	check(url.Values{"key": {k1}}, func(s sent) bool { return s.key == k1 })
	check(url.Values{"model": {"big-b"}}, func(s sent) bool { return s.model == "big-b" })
	check(url.Values{"account": {"beta"}, "model": {"mock-a"}}, func(s sent) bool { return s.account == "beta" && s.model == "mock-a" })
	check(url.Values{"since": {mid.UTC().Format(time.RFC3339Nano)}}, func(s sent) bool { return strings.HasPrefix(s.id, "ua-1") })
	check(url.Values{"until": {mid.UTC().Format(time.RFC3339Nano)}}, func(s sent) bool { return strings.HasPrefix(s.id, "ua-0") })
	check(url.Values{"since": {"1h"}}, func(sent) bool { return true })
	check(url.Values{"until": {"2000-01-01"}}, func(sent) bool { return false })

	rows := btUsageRows(t, g)
	for by, groupOf := range map[string]func(s sent) string{
		"model":   func(s sent) string { return s.model },
		"key":     func(s sent) string { return s.key },
		"account": func(s sent) string { return s.account },
		"day":     func(s sent) string { return rows[s.id].CreatedAt.UTC().Format("2006-01-02") },
	} {
		u := btLedger(t, g, url.Values{"by": {by}})
		want := map[string]btTotal{}
		for _, s := range all {
			grp := groupOf(s)
			w := sumWhere(func(x sent) bool { return groupOf(x) == grp })
			w.Group = grp
			want[grp] = w
		}
		if len(u.Totals) != len(want) {
			t.Fatalf("by=%s: %d groups, want %d: %+v", by, len(u.Totals), len(want), u.Totals)
		}
		if !sort.SliceIsSorted(u.Totals, func(i, j int) bool { return u.Totals[i].Group < u.Totals[j].Group }) {
			t.Fatalf("by=%s: groups not in order", by)
		}
		for _, got := range u.Totals {
			got.Cost = ""
			if got != want[got.Group] {
				t.Fatalf("by=%s: group %+v, want %+v", by, got, want[got.Group])
			}
		}
	}
	status, b := g.Admin("GET", "/ai-gateway/usage?by=week", nil)
	if status != http.StatusBadRequest {
		t.Fatalf("by=week: %d %s", status, b)
	}

	// The access log: one entry per request with the gateway's fields and
	// the placeholders, which agree with the ledger.
	var entries []map[string]any
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(accessLog)
		entries = entries[:0]
		for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
			var e map[string]any
			if json.Unmarshal(line, &e) == nil {
				entries = append(entries, e)
			}
		}
		if len(entries) >= len(all) || time.Now().After(deadline) {
			for _, s := range secrets {
				for _, part := range []string{s, s[3:23], s[len(s)-20:]} {
					if bytes.Contains(data, []byte(part)) {
						t.Fatal("a gateway key appears in the access log")
					}
				}
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(entries) != len(all) {
		t.Fatalf("%d access log entries, want %d", len(entries), len(all))
	}
	for _, e := range entries {
		req, _ := e["request"].(map[string]any)
		hdrs, _ := req["headers"].(map[string]any)
		ids, _ := hdrs[gwtest.HeaderRequestID].([]any)
		if len(ids) != 1 {
			t.Fatalf("log entry without request id: %v", e)
		}
		r := rows[ids[0].(string)]
		if e["ai_gateway_model"] != r.Model || e["ai_gateway_cost"] != r.Cost ||
			e["ai_gateway_prompt_tokens"] != float64(r.Prompt) || e["ai_gateway_completion_tokens"] != float64(r.Completion) ||
			e["ai_gateway_cached_tokens"] != float64(r.Cached) {
			t.Fatalf("log entry fields %v disagree with row %+v", e, r)
		}
		if e["placeholder_cost"] != r.Cost || e["placeholder_prompt"] != float64(r.Prompt) || e["placeholder_model"] != r.Model {
			t.Fatalf("placeholders %v/%v/%v disagree with row %+v", e["placeholder_cost"], e["placeholder_prompt"], e["placeholder_model"], r)
		}
		if _, ok := e["ai_gateway_estimated"]; ok {
			t.Fatalf("exact charge logged as estimated: %v", e)
		}
	}
	data, _ := os.ReadFile(filepath.Join(g.Dir, "caddy.log"))
	for _, s := range secrets {
		if bytes.Contains(data, []byte(s)) {
			t.Fatal("a gateway key appears in Caddy's log")
		}
	}
}

// ---------------------------------------------------------------------------

// TestMetrics: Caddy's admin /metrics shows the gateway's counters with the
// right values, and no key, account or secret as a label value.
func TestMetrics(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme-metrics", "10")
	g.NewAccount("broke-metrics", "")
	keyID, secret := g.NewKey("acme-metrics", "metrics-key")
	brokeID, brokeSecret := g.NewKey("broke-metrics", "broke-key")

	before, _ := btScrape(t, g)
	val := func(series []btSeries, name string, labels map[string]string) float64 {
		v, _ := btMetric(series, name, labels)
		return v
	}
	post := func(key, body string, h map[string]string) int {
		status, _, b, err := btPost(g, "/v1/chat/completions", key, body, h)
		if err != nil {
			t.Fatal(err)
		}
		_ = b
		return status
	}
	chatBody := `{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}`
	for i := 0; i < 3; i++ {
		if s := post(secret, chatBody, map[string]string{gwtest.HeaderUsage: "1000,200,100,50"}); s != 200 {
			t.Fatalf("status %d", s)
		}
	}
	if s := post(secret, `{"model":"big-model","messages":[]}`, map[string]string{gwtest.HeaderStatus: "502"}); s != 502 {
		t.Fatalf("status %d", s)
	}
	if s := post(secret, chatBody, map[string]string{gwtest.HeaderNoUsage: "1"}); s != 200 {
		t.Fatalf("status %d", s)
	}
	if s := post("sk-wrong", chatBody, nil); s != 401 {
		t.Fatalf("status %d", s)
	}
	if s := post("", chatBody, nil); s != 401 {
		t.Fatalf("status %d", s)
	}
	if s := post(brokeSecret, chatBody, nil); s != 403 {
		t.Fatalf("status %d", s)
	}
	if s := post(secret, `[]`, nil); s != 400 {
		t.Fatalf("status %d", s)
	}
	var after []btSeries
	var text string
	btEventually(t, 5*time.Second, func() string {
		after, text = btScrape(t, g)
		got := val(after, "caddy_ai_gateway_requests_total", nil) - val(before, "caddy_ai_gateway_requests_total", nil)
		if got != 5 {
			return fmt.Sprintf("requests_total grew by %v, want 5", got)
		}
		return ""
	})
	delta := func(name string, labels map[string]string) float64 {
		return val(after, name, labels) - val(before, name, labels)
	}
	mockLabel := map[string]string{"model": "mock-*"}
	estTokens := float64(btPromptEstimate(t, []byte(chatBody)))
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"caddy_ai_gateway_requests_total", map[string]string{"model": "mock-*", "code": "2xx"}, 4},
		{"caddy_ai_gateway_requests_total", map[string]string{"model": "big-*", "code": "5xx"}, 1},
		{"caddy_ai_gateway_tokens_total", map[string]string{"model": "mock-*", "kind": "prompt"}, 3000 + estTokens},
		{"caddy_ai_gateway_tokens_total", map[string]string{"model": "mock-*", "kind": "completion"}, 600 + 13}, // ceil(runes of the JSON body / 4) below
		{"caddy_ai_gateway_tokens_total", map[string]string{"model": "mock-*", "kind": "cached"}, 300},
		{"caddy_ai_gateway_tokens_total", map[string]string{"model": "mock-*", "kind": "reasoning"}, 150},
		{"caddy_ai_gateway_estimated_charges_total", mockLabel, 1},
		{"caddy_ai_gateway_auth_failures_total", nil, 2},
		{"caddy_ai_gateway_rejected_total", map[string]string{"reason": "insufficient_balance"}, 1},
		{"caddy_ai_gateway_rejected_total", map[string]string{"reason": "invalid_json"}, 1},
		{"caddy_ai_gateway_holds_in_flight", nil, 0},
	}
	// the estimated completion: ceil(runes of the no-usage JSON body / 4)
	for _, a := range mock.Answers() {
		if a.Usage == nil && a.Status == 200 {
			checks[3].want = 600 + float64(btCeil4(utf8.RuneCount(a.Body)))
		}
	}
	for _, c := range checks {
		got := delta(c.name, c.labels)
		if c.name == "caddy_ai_gateway_holds_in_flight" {
			got = val(after, c.name, nil)
			if _, ok := btMetric(after, c.name, nil); !ok {
				t.Errorf("%s missing", c.name)
			}
		}
		if got != c.want {
			t.Errorf("%s%v: %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// cost_total is in currency units (a float for metrics only).
	var wantCost int64
	for _, r := range btUsageRows(t, g) {
		wantCost -= r.Amount
	}
	gotCost := delta("caddy_ai_gateway_cost_total", nil)
	if diff := gotCost - float64(wantCost)/1e9; diff > 1e-12 || diff < -1e-12 {
		t.Errorf("cost_total grew by %v, ledger charged %v", gotCost, float64(wantCost)/1e9)
	}
	reasons := map[string]bool{}
	for _, s := range after {
		if s.name == "caddy_ai_gateway_auth_failures_total" {
			reasons[s.labels["reason"]] = true
		}
	}
	if len(reasons) < 2 {
		t.Errorf("auth failures not split by reason: %v", reasons)
	}
	for _, s := range after {
		if !strings.HasPrefix(s.name, "caddy_ai_gateway_") {
			continue
		}
		for k, v := range s.labels {
			for _, bad := range []string{keyID, brokeID, secret, brokeSecret, "acme-metrics", "broke-metrics", "sk-wrong", "mock-model", "big-model"} {
				if strings.Contains(v, bad) {
					t.Errorf("%s has label %s=%q: label values must be bounded by the config", s.name, k, v)
				}
			}
		}
	}
	if strings.Contains(text, secret[3:20]) {
		t.Error("a key appears in /metrics")
	}
}

// TestRequestIDFallbackIsRaceFree: when the provider sends no request id the
// row carries one the gateway made up, distinct per request. Under -race an
// earlier version failed here: it used Caddy's request UUID, which Caddy
// creates lazily in the request's vars, and settlement created it after
// reverse_proxy had returned, while a dial the transport started for that
// request could still be reading those vars on another goroutine.
func TestRequestIDFallbackIsRaceFree(t *testing.T) {
	const rounds, concurrency = 12, 64
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme", "100")
	_, secret := g.NewKey("acme", "k")
	body := `{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}`
	for round := 0; round < rounds; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, concurrency)
		for i := 0; i < concurrency; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// A fresh client each time: cold connection pools make the
				// gateway's transport dial while other requests finish.
				req, _ := http.NewRequest("POST", g.BaseURL+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+secret)
				req.Header.Set("Content-Type", "application/json")
				resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	rows := btUsageRows(t, g)
	if len(rows) != rounds*concurrency {
		t.Fatalf("%d rows with distinct request ids, want %d", len(rows), rounds*concurrency)
	}
	for id := range rows {
		if len(id) != len("gw-")+16 || !strings.HasPrefix(id, "gw-") {
			t.Fatalf("request id %q is not a gateway request id (gw- and 16 hex digits)", id)
		}
	}
}

// ---------------------------------------------------------------------------

// TestHoldCoversEveryCompletion: the hold counts the output limit once per
// completion the request asks for (n, best_of, batched prompts), and a limit
// too large for any amount is held at the largest hold instead of failing as
// if the store were down. Each hold is read from the admin API while the
// mock sits on the request.
func TestHoldCoversEveryCompletion(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	mock.Usage = gwtest.Usage{Prompt: 10, Completion: 20}
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme", "100")
	_, secret := g.NewKey("acme", "k")
	flat := btRateOf(t, "flat-model")

	cases := []struct {
		name, path, body string
		completion       int64 // output tokens held
		hold             int64 // 0: btCost(prompt estimate, completion)
	}{
		{"chat n", "/v1/chat/completions",
			`{"model":"flat-model","n":3,"max_tokens":100,"messages":[{"role":"user","content":"Hello"}]}`, 300, 0},
		{"completions best_of and a batch", "/v1/completions",
			`{"model":"flat-model","prompt":["a b c","d"],"n":2,"best_of":3,"max_tokens":50}`, 2 * 3 * 50, 0},
		{"completions token ids", "/v1/completions",
			`{"model":"flat-model","prompt":[1,2,3,4,5,6,7,8],"max_tokens":10}`, 10, 0},
		{"huge max_tokens", "/v1/chat/completions",
			`{"model":"flat-model","max_tokens":9223372036854775807,"messages":[{"role":"user","content":"Hello"}]}`, 0, keystore.MaxAmount},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.hold
			if want == 0 {
				want = btCost(flat, btPromptEstimate(t, []byte(tc.body)), tc.completion, 0)
			}
			id := fmt.Sprintf("hc-%d", i)
			type result struct {
				status int
				body   []byte
			}
			done := make(chan result, 1)
			go func() {
				s, _, b, err := btPost(g, tc.path, secret, tc.body, map[string]string{
					gwtest.HeaderWaitMs: "600", gwtest.HeaderRequestID: id})
				if err != nil {
					b = []byte(err.Error())
				}
				done <- result{s, b}
			}()
			var held int64
			btEventually(t, 500*time.Millisecond, func() string {
				var a struct {
					HeldNano int64 `json:"held_nano"`
				}
				g.MustAdmin("GET", "/ai-gateway/accounts/acme", nil, http.StatusOK, &a)
				held = a.HeldNano
				if held == 0 {
					return "nothing held yet"
				}
				return ""
			})
			if held != want {
				t.Errorf("held %d, want %d", held, want)
			}
			r := <-done
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			row := btUsageRows(t, g)[id]
			if row.Estimated || -row.Amount != btCost(flat, 10, 20, 0) {
				t.Fatalf("row %+v; want the mock's usage", row)
			}
		})
	}
}
