package e2e

// Helpers of the billing tests (billing_*_test.go): a real Caddy in
// process, the official OpenAI Go SDK (or a raw HTTP client where bytes
// matter) as the client, the mock provider as the upstream and real SQLite
// files. Every cost is checked against an independent math/big computation
// from the usage the mock reported for that very request (rows are
// correlated through X-Mock-Request-Id, which the mock echoes as
// X-Request-Id and the gateway stores as request_id). Caddy is
// process-global: none of these run in parallel with other tests.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/openai/openai-go/v3/responses"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

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

var btChatMsgs = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")}

// btStreamText is the content of a complete mock stream.
var btStreamText = strings.Join(gwtest.StreamPieces, "")

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
