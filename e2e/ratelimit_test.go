package e2e

// Rate limits end to end: Caddy in-process, the OpenAI Go SDK as client,
// the mock provider behind. The exact windows (refusal at the L+1st
// request, recovery at the instant the window says) are proven on a fake
// clock in keystore's tests; here the real gateway shows the 429, its
// headers, that the SDK obeys them, and that nothing refused reaches the
// provider or costs anything.

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/management"
)

// rlKeyLimits reads a key's rate limits and their use from the admin API.
func rlKeyLimits(t *testing.T, g *gwtest.Gateway, keyID string) map[string]management.RateLimitView {
	t.Helper()
	var k management.KeyView
	g.MustAdmin("GET", "/ai-gateway/keys/"+keyID, nil, http.StatusOK, &k)
	out := map[string]management.RateLimitView{}
	for _, l := range k.RateLimits {
		out[l.Scope+"/"+l.Kind] = l
	}
	return out
}

// TestRateLimitRPMWithSDK: a key default of 3 requests a minute lets three
// requests through with the x-ratelimit-* headers counting down, and the
// fourth gets OpenAI's 429 with Retry-After; it never reaches the provider
// and costs nothing, and the refusal is counted in the metrics.
func TestRateLimitRPMWithSDK(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	mock.Usage = gwtest.Usage{Prompt: 10, Completion: 20}
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "\t\t\trate_limit key rpm 3 tpm 100000", ""))
	g.NewAccount("acme", "10")
	keyID, secret := g.NewKey("acme", "k")
	c := btClient(g, secret) // no retries: this test looks at the 429 itself
	ctx := context.Background()
	for i, want := range []string{"2", "1", "0"} {
		var resp *http.Response
		_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "mock-model", Messages: btChatMsgs,
			MaxTokens: openai.Int(100)}, option.WithResponseInto(&resp))
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		h := resp.Header
		if h.Get("X-Ratelimit-Limit-Requests") != "3" || h.Get("X-Ratelimit-Remaining-Requests") != want ||
			h.Get("X-Ratelimit-Limit-Tokens") != "100000" || h.Get("X-Ratelimit-Reset-Requests") == "" || h.Get("X-Ratelimit-Reset-Tokens") == "" {
			t.Fatalf("request %d headers %v, want 3 requests, %s remaining, 100000 tokens", i+1, h, want)
		}
		// tokens: the earlier requests settled at 30 each, this one counts its estimate
		est := btPromptEstimate(t, []byte(`{"messages":[{"role":"user","content":"Hello"}]}`)) + 100
		if got, want := h.Get("X-Ratelimit-Remaining-Tokens"), strconv.FormatInt(100000-30*int64(i)-est, 10); got != want {
			t.Fatalf("request %d: remaining tokens %s, want %s", i+1, got, want)
		}
	}
	before := gwtest.Balance(t, g, "acme")
	var resp *http.Response
	_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "mock-model", Messages: btChatMsgs},
		option.WithResponseInto(&resp))
	apiErr := gwtest.APIErrorOf(t, err)
	if apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Type != "requests" || apiErr.Code != "rate_limit_exceeded" {
		t.Fatalf("fourth request: %d %s %s: %s", apiErr.StatusCode, apiErr.Type, apiErr.Code, apiErr.Message)
	}
	h := apiErr.Response.Header
	ms, _ := strconv.Atoi(h.Get("Retry-After-Ms"))
	if ra := h.Get("Retry-After"); ra != "60" && ra != "59" || ms < 55_000 || ms > 60_000 || h.Get("X-Ratelimit-Remaining-Requests") != "0" {
		t.Fatalf("429 headers %v", h)
	}
	if mock.Count() != 3 {
		t.Fatalf("the provider saw %d requests, want 3", mock.Count())
	}
	if after := gwtest.Balance(t, g, "acme"); after != before {
		t.Fatalf("the refused request cost %d", before-after)
	}
	if rows := gwtest.Ledger(t, g, url.Values{}).Rows; len(rows) != 4 { // 3 usage rows and the top-up
		t.Fatalf("%d ledger rows, want 3 usage rows and the top-up", len(rows))
	}
	l := rlKeyLimits(t, g, keyID)
	if rpm := l["key/rpm"]; rpm.Limit != 3 || rpm.Used != 3 || rpm.Remaining != 0 || !rpm.Default || rpm.ResetsAt == nil {
		t.Fatalf("admin view of rpm %+v", rpm)
	}
	if tpm := l["key/tpm"]; tpm.Limit != 100000 || tpm.Used != 90 {
		t.Fatalf("admin view of tpm %+v, want 90 used (3 × 30 settled)", tpm)
	}
	series, _ := gwtest.Scrape(t, g)
	if n, _ := gwtest.Metric(series, "caddy_ai_gateway_rate_limited_total", map[string]string{"kind": "rpm", "scope": "key"}); n != 1 {
		t.Fatalf("rate_limited_total{kind=rpm,scope=key} = %v, want 1", n)
	}
}

// TestRateLimitSDKRetryHonoursRetryAfter: the OpenAI SDK with its default
// retry settings gets a 429 for a key's concurrency limit while another
// request is in flight, waits the Retry-After the gateway announced, and
// then succeeds; the refused attempt never reached the provider.
func TestRateLimitSDKRetryHonoursRetryAfter(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "\t\t\trate_limit key concurrency 1", ""))
	g.NewAccount("acme", "10")
	keyID, secret := g.NewKey("acme", "k")

	// A: in flight for 400 ms
	done := make(chan error, 1)
	go func() {
		status, _, body, err := gwtest.Post(g, "/v1/chat/completions", secret,
			`{"model":"mock-model","messages":[{"role":"user","content":"Hello"}]}`, map[string]string{gwtest.HeaderWaitMs: "400"})
		if err == nil && status != 200 {
			err = errors.New("first request: " + strconv.Itoa(status) + " " + string(body))
		}
		done <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); rlKeyLimits(t, g, keyID)["key/concurrency"].Used != 1; {
		if time.Now().After(deadline) {
			t.Fatal("the first request never got in flight")
		}
		time.Sleep(2 * time.Millisecond)
	}

	type attempt struct {
		start, end time.Time
		status     int
		retryMS    string
	}
	var (
		mu       sync.Mutex
		attempts []attempt
	)
	record := func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		a := attempt{start: time.Now()}
		resp, err := next(req)
		a.end = time.Now()
		if resp != nil {
			a.status, a.retryMS = resp.StatusCode, resp.Header.Get("Retry-After-Ms")
		}
		mu.Lock()
		attempts = append(attempts, a)
		mu.Unlock()
		return resp, err
	}
	// The SDK as an application would use it: default retries (2) and delays.
	c := openai.NewClient(option.WithBaseURL(g.BaseURL+"/v1/"), option.WithAPIKey(secret), option.WithMiddleware(record))
	if _, err := gwtest.Chat(context.Background(), c); err != nil {
		t.Fatalf("the SDK's retry did not succeed: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(attempts) != 2 || attempts[0].status != 429 || attempts[1].status != 200 || attempts[0].retryMS != "1000" {
		t.Fatalf("attempts %+v, want a 429 announcing 1000 ms, then a 200", attempts)
	}
	if waited := attempts[1].start.Sub(attempts[0].end); waited < time.Second {
		t.Fatalf("the SDK retried after %v, before the announced 1s", waited)
	}
	if mock.Count() != 2 {
		t.Fatalf("the provider saw %d requests, want 2 (the refused attempt never went upstream)", mock.Count())
	}
}

// TestRateLimitConcurrencyClientCancelsMidStream: a client that goes away
// in the middle of a stream gives its place back at once.
func TestRateLimitConcurrencyClientCancelsMidStream(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme", "10")
	keyID, secret := g.NewKey("acme", "k")
	g.MustAdmin("PATCH", "/ai-gateway/keys/"+keyID, map[string]any{"rate_limits": map[string]int{"concurrency": 1}}, http.StatusOK, nil)
	c := btClient(g, secret)

	ctx, cancel := context.WithCancel(context.Background())
	stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "mock-model", Messages: btChatMsgs},
		option.WithHeader(gwtest.HeaderDelayMs, "200"))
	if !stream.Next() {
		t.Fatalf("no first chunk: %v", stream.Err())
	}
	if _, err := gwtest.Chat(context.Background(), c); gwtest.APIErrorOf(t, err).StatusCode != 429 {
		t.Fatalf("a second request while the stream runs: %v", err)
	}
	cancel()
	stream.Close()
	gwtest.WaitNoHolds(t, g, 5*time.Second)
	if _, err := gwtest.Chat(context.Background(), c); err != nil {
		t.Fatalf("after the client left: %v", err)
	}
	if u := rlKeyLimits(t, g, keyID)["key/concurrency"]; u.Used != 0 || u.Limit != 1 || u.Default {
		t.Fatalf("concurrency %+v", u)
	}
}

// TestRateLimitAdminAPI: rate limits of keys and accounts are set, merged
// kind by kind, removed, shown with their use, and refused when negative.
func TestRateLimitAdminAPI(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme", "10")
	var k management.SecretKeyView
	g.MustAdmin("POST", "/ai-gateway/keys", map[string]any{"account": "acme", "name": "k",
		"rate_limits": map[string]int{"rpm": 60, "tpm": 1000}}, http.StatusCreated, &k)
	if len(k.RateLimits) != 2 || k.RateLimits[0].Kind != "rpm" || k.RateLimits[0].Limit != 60 || k.RateLimits[1].Limit != 1000 {
		t.Fatalf("created key's limits %+v", k.RateLimits)
	}
	g.MustAdmin("PATCH", "/ai-gateway/keys/"+k.ID, map[string]any{"rate_limits": map[string]int{"rpm": 0, "concurrency": 2}}, http.StatusOK, nil)
	l := rlKeyLimits(t, g, k.ID)
	if len(l) != 2 || l["key/tpm"].Limit != 1000 || l["key/concurrency"].Limit != 2 {
		t.Fatalf("after the patch %+v, want tpm 1000 kept, rpm removed, concurrency 2", l)
	}
	if s, body := g.Admin("PATCH", "/ai-gateway/keys/"+k.ID, map[string]any{"rate_limits": map[string]int{"rpm": -5}}); s != 400 {
		t.Fatalf("negative rpm: %d %s", s, body)
	}
	if s, body := g.Admin("PATCH", "/ai-gateway/keys/"+k.ID, map[string]any{"rate_limits": map[string]int{"rph": 5}}); s != 400 {
		t.Fatalf("unknown kind: %d %s", s, body)
	}
	g.MustAdmin("PATCH", "/ai-gateway/keys/"+k.ID, map[string]any{"rate_limits": nil}, http.StatusOK, nil)
	if l := rlKeyLimits(t, g, k.ID); len(l) != 0 {
		t.Fatalf("after null %+v", l)
	}
	var a management.AccountView
	g.MustAdmin("PATCH", "/ai-gateway/accounts/acme", map[string]any{"rate_limits": map[string]int{"rpd": 1}}, http.StatusOK, &a)
	if len(a.RateLimits) != 1 || a.RateLimits[0].Kind != "rpd" || a.RateLimits[0].Scope != "account" || a.RateLimits[0].Default {
		t.Fatalf("account view %+v", a.RateLimits)
	}
	c := btClient(g, k.Secret)
	if _, err := gwtest.Chat(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if _, err := gwtest.Chat(context.Background(), c); gwtest.APIErrorOf(t, err).StatusCode != 429 {
		t.Fatalf("second request of the day: %v", err)
	}
	l = rlKeyLimits(t, g, k.ID)
	if rpd := l["account/rpd"]; rpd.Used != 1 || rpd.ResetsAt == nil || rpd.ResetsAt.Sub(time.Now()) > 24*time.Hour {
		t.Fatalf("account rpd in the key view %+v", rpd)
	}
}
