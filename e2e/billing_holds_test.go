package e2e

// Holds: what a request reserves before it is answered, the overdraft bound
// that follows, and the release of a hold when the client leaves.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// TestOverspendBound: 100 concurrent requests on a balance for 10. Prices
// are 1 per 1M tokens (1000 nano-units a token); every request uses 1000
// prompt + 1000 completion tokens, so costs C = 2,000,000 nano, and holds
// H = cost(7 estimated prompt + 2000 max_tokens) = 2,007,000 >= C.
//
// What is guaranteed: a request is admitted only when the available
// balance B - holds covers its hold H, and refused only when it does not,
// i.e. when Σcost(settled) + Σhold(in flight) > B0 - H, so (n+1)·H > B0 and
// at least floor(B0/H) = 9 are admitted. And B - holds = B0 - 2.007M·n +
// 0.007M·s after n admissions and s <= n settlements, which for the 10th
// admission would need 20M - 18.063M + 0.007M·s >= 2.007M, s >= 10:
// impossible. So exactly 9 are admitted, whatever the interleaving, and the
// final balance is B0 - 9·C = 2,000,000 >= 0 (the documented bound: no
// overdraft when no request costs more than its hold).
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
	if B0 != gwtest.Balance(t, g, "tight") {
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
			s, h, b, err := gwtest.Post(g, "/v1/chat/completions", secret, body, map[string]string{
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
			gwtest.CheckError(t, r.status, r.h, r.body, http.StatusForbidden, "insufficient_quota", "insufficient_balance")
		default:
			t.Fatalf("request %d: status %d: %s", i, r.status, r.body)
		}
	}
	gwtest.WaitNoHolds(t, g, 5*time.Second)
	final := gwtest.Balance(t, g, "tight")
	charged := B0 - final
	t.Logf("admitted %d, refused %d, charged %d, final balance %d", admitted, refused, charged, final)
	if admitted+refused != total {
		t.Fatalf("admitted %d + refused %d != %d", admitted, refused, total)
	}
	if mock.Count() != admitted {
		t.Fatalf("mock saw %d requests, %d were admitted; a refused request must never reach it", mock.Count(), admitted)
	}
	minAdmitted := int(B0 / hold)
	if admitted < minAdmitted {
		t.Fatalf("admitted %d < floor(B0/hold) = %d: refused while the balance covered the hold", admitted, minAdmitted)
	}
	if charged > B0 || final < 0 {
		t.Fatalf("overspent: charged %d on a balance of %d (bound: 0 when no request costs more than its hold)", charged, B0)
	}
	if admitted != 9 || final != 2_000_000 {
		t.Fatalf("admitted %d with final balance %d; the admission rule allows exactly 9 (see the comment)", admitted, final)
	}
	rows := gwtest.UsageRows(t, g)
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

// TestHoldCoversEveryCompletion: the hold counts the output limit once per
// completion the request asks for (n, best_of, batched prompts), and a limit
// too large for any amount is held at the largest hold, which no balance
// covers: it is refused for the balance, not as if the store were down.
// Each hold is read from the admin API while the mock sits on the request.
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
				s, _, b, err := gwtest.Post(g, tc.path, secret, tc.body, map[string]string{
					gwtest.HeaderWaitMs: "600", gwtest.HeaderRequestID: id})
				if err != nil {
					b = []byte(err.Error())
				}
				done <- result{s, b}
			}()
			var held int64
			gwtest.Eventually(t, 500*time.Millisecond, func() string {
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
			row := gwtest.UsageRows(t, g)[id]
			if row.Estimated || -row.Amount != btCost(flat, 10, 20, 0) {
				t.Fatalf("row %+v; want the mock's usage", row)
			}
		})
	}
	t.Run("huge max_tokens", func(t *testing.T) {
		before := mock.Count()
		s, h, b, err := gwtest.Post(g, "/v1/chat/completions", secret,
			`{"model":"flat-model","max_tokens":9223372036854775807,"messages":[{"role":"user","content":"Hello"}]}`, nil)
		if err != nil {
			t.Fatal(err)
		}
		e := gwtest.CheckError(t, s, h, b, http.StatusForbidden, "insufficient_quota", "insufficient_balance")
		if want := "could cost up to " + keystore.FormatAmount(keystore.MaxAmount); !strings.Contains(e.Error.Message, want) {
			t.Fatalf("message %q does not contain %q", e.Error.Message, want)
		}
		if mock.Count() != before {
			t.Fatal("the refused request reached the provider")
		}
	})
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
	series, _ := gwtest.Scrape(t, g)
	if n, _ := gwtest.Metric(series, "caddy_ai_gateway_holds_in_flight", nil); n != 1 {
		t.Fatalf("holds in flight mid-stream: %v, want 1", n)
	}
	cancel()
	s.Close()
	// The stream has at least four events (1.6 s) to go: a release
	// within 1.2 s can only come from the client leaving, not from the
	// stream ending (a tighter bound flaked on a loaded machine).
	if took := gwtest.WaitNoHolds(t, g, 1200*time.Millisecond); took > 1200*time.Millisecond {
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
	// The provider answers 1.5 s after the request, 1.3 s from here: a
	// release before that comes from the client giving up.
	took := gwtest.WaitNoHolds(t, g, time.Second)
	t.Logf("hold of the unanswered request released %v after the client gave up", took)

	rows := gwtest.UsageRows(t, g)
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
	var w gwtest.LedgerRow
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
	if bal := gwtest.Balance(t, g, "acme"); bal != 10_000_000_000+r.Amount+w.Amount {
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
	gwtest.WaitNoHolds(t, g, 2*time.Second)
	rows := gwtest.UsageRows(t, g)
	if len(rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rows))
	}
	for _, r := range rows {
		if r.Amount != 0 || r.Estimated || r.Status != 499 {
			t.Fatalf("row %+v; want free, status 499", r)
		}
	}
	if bal := gwtest.Balance(t, g, "acme"); bal != 10_000_000_000 {
		t.Fatalf("balance %d", bal)
	}
}
