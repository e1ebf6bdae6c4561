package e2e

// Helpers of the billing tests (billing_*_test.go): a real Caddy in
// process, the official OpenAI Go SDK (or a raw HTTP client where bytes
// matter) as the client, the mock provider as the upstream and real SQLite
// files. Every cost is checked against an independent math/big computation
// from the usage the mock reported for that very request (rows are
// correlated through X-Mock-Request-Id, which the mock echoes as
// X-Request-Id and the gateway stores as request_id). Caddy is
// process-global: none of these run in parallel with other tests.
//
// Here are what only the billing tests need: their prices, the cost oracle,
// the prompt estimate and the SDK client. Helpers any test package can use
// (raw posts, the ledger and metrics through the admin API, waiting for
// holds and answers, OpenAI error checks, SSE splitting) are in
// internal/gwtest.

import (
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
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

// btClient is an SDK client of the gateway with key, without retries, on
// btSDKHTTP.
func btClient(g *gwtest.Gateway, key string) openai.Client {
	return openai.NewClient(
		option.WithBaseURL(g.BaseURL+"/v1/"),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
		option.WithHTTPClient(btSDKHTTP),
	)
}

// btChatMsgs is the one user message of the billing tests' chats.
var btChatMsgs = []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")}

// btStreamText is the content of a complete mock stream.
var btStreamText = strings.Join(gwtest.StreamPieces, "")

// btCheckResponseUsage compares the usage a Responses client saw with what
// the mock sent, and wants some text; it returns "" when all is well.
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
