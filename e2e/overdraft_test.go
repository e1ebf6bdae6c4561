package e2e

// No client-chosen overdraft: a request whose worst case the available
// balance does not cover is refused, or, when it set no output limit,
// capped to what the balance covers. Prices are gwtest.Site's: 0.15 and
// 0.60 per 1M tokens, 150 and 600 nano-units a token; default_max_tokens
// is 4096. A chat prompt of one "hi" message is estimated at 6 tokens
// ("user" and "hi" are 6 characters, 2 tokens, plus 4 for the message).

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/metask/caddy-ai-gateway/caddyproxy"
	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

const (
	odIn, odOut = 150, 600 // nano-units a token
	odPrompt    = 6        // estimated tokens of odChat's prompt
	odChat      = `{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}`
)

// odGateway starts a gateway on a mock with an account "acme" of balance
// (a decimal) and returns the mock, the gateway and a key.
func odGateway(t *testing.T, balance string) (*gwtest.MockProvider, *gwtest.Gateway, string) {
	t.Helper()
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(gwtest.Site(mock.URL))
	g.NewAccount("acme", balance)
	_, secret := g.NewKey("acme", "k")
	return mock, g, secret
}

// The row: a balance of 0.0001 and n:128 × max_tokens:16384 (a
// worst case of 1.258 units) is refused with what it asked for and what
// the balance covers, never reaches the provider and leaves the balance as
// it was; so are the same worst cases in the other limit members.
func TestOverdraftRefusesUncoveredLimit(t *testing.T) {
	mock, g, secret := odGateway(t, "0.0001")
	const covers = (100_000 - odPrompt*odIn) / odOut // 165
	cases := []struct{ path, body, says string }{
		{"/v1/chat/completions", `{"model":"mock-model","n":128,"max_tokens":16384,"messages":[{"role":"user","content":"hi"}]}`,
			fmt.Sprintf("requested up to 2,097,152 output tokens (n=128 × max_tokens=16384), the balance covers %d.", covers)},
		{"/v1/chat/completions", `{"model":"mock-model","max_completion_tokens":200,"messages":[{"role":"user","content":"hi"}]}`,
			fmt.Sprintf("requested up to 200 output tokens (max_completion_tokens=200), the balance covers %d.", covers)},
		{"/v1/completions", `{"model":"mock-model","prompt":["a","b"],"n":2,"best_of":3,"max_tokens":100}`,
			"requested up to 600 output tokens (2 prompts × best_of=3 × max_tokens=100), the balance covers 166."},
		{"/v1/responses", `{"model":"mock-model","input":"hi","max_output_tokens":1000}`,
			"requested up to 1,000 output tokens (max_output_tokens=1000), the balance covers 165."},
	}
	for _, tc := range cases {
		s, h, b, err := gwtest.Post(g, tc.path, secret, tc.body, nil)
		if err != nil {
			t.Fatal(err)
		}
		e := gwtest.CheckError(t, s, h, b, http.StatusForbidden, "insufficient_quota", "insufficient_balance")
		if !strings.Contains(e.Error.Message, tc.says) {
			t.Errorf("%s: message %q\ndoes not say %q", tc.body, e.Error.Message, tc.says)
		}
	}
	if n := mock.Count(); n != 0 {
		t.Fatalf("%d refused requests reached the provider", n)
	}
	if b := gwtest.Balance(t, g, "acme"); b != 100_000 {
		t.Fatalf("balance %d, want 100000 untouched", b)
	}
	if rows := gwtest.UsageRows(t, g); len(rows) != 0 {
		t.Fatalf("refusals wrote %d usage rows", len(rows))
	}
}

// The official SDK gets the refusal as an *openai.Error with the status,
// type and code.
func TestOverdraftRefusalThroughSDK(t *testing.T) {
	mock, g, secret := odGateway(t, "0.0001")
	c := gwtest.Client(g, secret)
	_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:     "mock-model",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		N:         openai.Int(128),
		MaxTokens: openai.Int(16384),
	})
	e := gwtest.APIErrorOf(t, err)
	if e.StatusCode != http.StatusForbidden || e.Type != "insufficient_quota" || e.Code != "insufficient_balance" ||
		!strings.Contains(e.Message, "n=128 × max_tokens=16384") {
		t.Fatalf("SDK error %d %q %q: %s", e.StatusCode, e.Type, e.Code, e.Message)
	}
	if mock.Count() != 0 {
		t.Fatal("the refused request reached the provider")
	}
}

// A request without an output limit on a balance below its default hold
// goes upstream with the limit the balance covers, says so in a header and
// in the ledger, and is charged exactly its usage: JSON through the SDK,
// and a stream, whose body also gets include_usage.
func TestOverdraftCapsUnlimitedRequest(t *testing.T) {
	mock, g, secret := odGateway(t, "0.001")
	const capped = (1_000_000 - odPrompt*odIn) / odOut // 1665
	hdr := map[string]string{gwtest.HeaderUsage: fmt.Sprintf("%d,0", odPrompt), gwtest.HeaderUsageFromLimit: "4096"}

	var resp *http.Response
	c := gwtest.Client(g, secret)
	_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "mock-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}, option.WithHeader(gwtest.HeaderUsage, hdr[gwtest.HeaderUsage]), option.WithHeader(gwtest.HeaderUsageFromLimit, "4096"),
		option.WithHeader(gwtest.HeaderRequestID, "od-json"), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Get(caddyproxy.HeaderMaxTokensCapped); got != fmt.Sprint(capped) {
		t.Fatalf("%s: %q, want %d", caddyproxy.HeaderMaxTokensCapped, got, capped)
	}
	up := string(gwtest.UpstreamBody(t, mock.Requests(), "od-json"))
	if !strings.HasSuffix(up, fmt.Sprintf(`,"max_completion_tokens":%d}`, capped)) || strings.Count(up, "max_") != 1 {
		t.Fatalf("upstream body %s, want the cap appended", up)
	}
	row := gwtest.UsageRows(t, g)["od-json"]
	cost := int64(odPrompt*odIn + capped*odOut)
	if -row.Amount != cost || row.Completion != capped || row.Estimated ||
		row.Note != fmt.Sprintf("output capped by the balance: max_completion_tokens=%d sent upstream", capped) {
		t.Fatalf("row %+v, want cost %d for %d completion tokens and the cap note", row, cost, capped)
	}
	if b := gwtest.Balance(t, g, "acme"); b != 1_000_000-cost {
		t.Fatalf("balance %d, want %d", b, 1_000_000-cost)
	}

	// The stream gets what is left: 100 nano-units cover no token after
	// the prompt's 900, so top up 0.0001 first.
	g.MustAdmin("POST", "/ai-gateway/accounts/acme/balance", map[string]string{"amount": "0.0001"}, http.StatusOK, nil)
	left := gwtest.Balance(t, g, "acme")
	streamCap := (left - odPrompt*odIn) / odOut
	hdr[gwtest.HeaderRequestID] = "od-stream"
	body := strings.Replace(odChat, `"messages"`, `"stream":true,"messages"`, 1)
	s, h, b, err := gwtest.Post(g, "/v1/chat/completions", secret, body, hdr)
	if err != nil || s != http.StatusOK || h.Get(caddyproxy.HeaderMaxTokensCapped) != fmt.Sprint(streamCap) {
		t.Fatalf("stream: %v %d %q %s", err, s, h.Get(caddyproxy.HeaderMaxTokensCapped), b)
	}
	up = string(gwtest.UpstreamBody(t, mock.Requests(), "od-stream"))
	if !strings.Contains(up, `"include_usage":true`) || !strings.HasSuffix(up, fmt.Sprintf(`,"max_completion_tokens":%d}`, streamCap)) {
		t.Fatalf("upstream stream body %s", up)
	}
	if row := gwtest.UsageRows(t, g)["od-stream"]; row.Completion != streamCap || -row.Amount != odPrompt*odIn+streamCap*odOut {
		t.Fatalf("stream row %+v", row)
	}
}

// odResult is one concurrent request's outcome.
type odResult struct {
	status int
	h      http.Header
	body   []byte
	err    error
}

// TestOverdraftConcurrentBound: 50 requests without an output limit at
// once on a balance that covers 3 default holds. The mock generates all it
// is allowed (completion = the limit sent, 4096 without one) and reports
// a prompt of 20 tokens, 14 more than estimated: an overrun of 2,100
// nano-units a request, the only way past the hold here. So the documented
// bound, final >= −Σ overruns of the requests in flight at the last
// admission, gives final >= −admitted × 2,100. Every refused request got
// the 403 and never reached the provider, every capped one carried its cap
// upstream, and the ledger adds up to the balance.
func TestOverdraftConcurrentBound(t *testing.T) {
	const (
		total    = 50
		b0       = 7_500_000 // 3 holds of 2,458,500 and 124,500 more
		reported = 20
		overrun  = (reported - odPrompt) * odIn
	)
	mock, g, secret := odGateway(t, "0.0075")
	results := make([]odResult, total)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range total {
		wg.Go(func() {
			<-start
			s, h, b, err := gwtest.Post(g, "/v1/chat/completions", secret, odChat, map[string]string{
				gwtest.HeaderUsage: fmt.Sprintf("%d,0", reported), gwtest.HeaderUsageFromLimit: "4096",
				gwtest.HeaderWaitMs: "300", gwtest.HeaderRequestID: fmt.Sprintf("odc-%02d", i)})
			results[i] = odResult{s, h, b, err}
		})
	}
	close(start)
	wg.Wait()

	reqs := mock.Requests()
	rows := gwtest.UsageRows(t, g)
	admitted, capped := 0, 0
	var charged int64
	for i, r := range results {
		id := fmt.Sprintf("odc-%02d", i)
		if r.err != nil {
			t.Fatalf("%s: %v", id, r.err)
		}
		if r.status == http.StatusForbidden {
			gwtest.CheckError(t, r.status, r.h, r.body, http.StatusForbidden, "insufficient_quota", "insufficient_balance")
			for _, q := range reqs {
				if q.RequestID == id {
					t.Fatalf("%s was refused but reached the provider", id)
				}
			}
			continue
		}
		if r.status != http.StatusOK {
			t.Fatalf("%s: status %d: %s", id, r.status, r.body)
		}
		admitted++
		limit := int64(4096)
		up := string(gwtest.UpstreamBody(t, reqs, id))
		if c := r.h.Get(caddyproxy.HeaderMaxTokensCapped); c != "" {
			capped++
			if !strings.HasSuffix(up, `,"max_completion_tokens":`+c+`}`) {
				t.Fatalf("%s: capped at %s, upstream body %s", id, c, up)
			}
			_, _ = fmt.Sscan(c, &limit)
		} else if up != odChat {
			t.Fatalf("%s: not capped, yet the upstream body changed: %s", id, up)
		}
		row := rows[id]
		if want := int64(reported*odIn) + limit*odOut; -row.Amount != want {
			t.Fatalf("%s: charged %d, want %d", id, -row.Amount, want)
		}
		charged += -row.Amount
	}
	final := gwtest.Balance(t, g, "acme")
	bound := int64(admitted) * overrun
	t.Logf("admitted %d (%d capped), refused %d, final balance %d, bound −%d", admitted, capped, total-admitted, final, bound)
	if mock.Count() != admitted || len(rows) != admitted {
		t.Fatalf("provider saw %d requests, ledger has %d rows, %d admitted", mock.Count(), len(rows), admitted)
	}
	if final != b0-charged {
		t.Fatalf("final balance %d != %d − %d charged", final, b0, charged)
	}
	if final < -bound {
		t.Fatalf("final balance %d below the bound −%d", final, bound)
	}
	if admitted < 3 || admitted > 4 || capped > 1 {
		t.Fatalf("admitted %d, %d capped: 3 full holds fit, and one capped request with what is left", admitted, capped)
	}
}
