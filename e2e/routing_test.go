package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// rtSite routes by model to two providers, each with its own provider key,
// with aliases and a catch-all for models no route serves.
func rtSite(openaiURL, deepseekURL, guardExtra string) string {
	return `
	handle /v1/* {
		api_key_auth
		balance_guard {
			price gpt-4o-mini input 0.15 output 0.6
			price gpt-* input 2.5 output 10
			price deepseek-* input 0.27 output 1.1
			price emb-* input 0.02 output 0
			price cheap input 0.1 output 0.1
			alias fast gpt-4o-mini
			alias cheap deepseek-chat
			alias smart gpt-4o
` + guardExtra + `
		}
		@openai ai_model gpt-* emb-*
		handle @openai {
			reverse_proxy ` + openaiURL + ` {
				header_up Authorization "Bearer openai-provider-key"
			}
		}
		@deepseek ai_model deepseek-*
		handle @deepseek {
			reverse_proxy ` + deepseekURL + ` {
				header_up Authorization "Bearer deepseek-provider-key"
			}
		}
		handle {
			header Content-Type application/json
			respond ` + "`" + `{"error":{"message":"No provider serves this model.","type":"invalid_request_error","param":null,"code":"model_not_found"}}` + "`" + ` 404
		}
	}`
}

// rtGateway starts two mock providers and the gateway of rtSite in front of
// them, with account acme topped up by balance.
func rtGateway(t *testing.T, balance string) (g *gwtest.Gateway, openaiMock, deepseekMock *gwtest.MockProvider) {
	t.Helper()
	openaiMock, deepseekMock = gwtest.NewMockProvider(t), gwtest.NewMockProvider(t)
	g = gwtest.New(t)
	g.LoadSite(rtSite(openaiMock.URL, deepseekMock.URL, ""))
	g.NewAccount("acme", balance)
	return g, openaiMock, deepseekMock
}

// rtCost is ceil((prompt*in + completion*out)/1e6) with prices in nano-units
// per 1M tokens.
func rtCost(in, out, prompt, completion int64) int64 {
	n := prompt*in + completion*out
	return (n + 999_999) / 1_000_000
}

// rtRecorded returns what a mock received for the request with this id.
func rtRecorded(t *testing.T, m *gwtest.MockProvider, id string) (gwtest.Recorded, bool) {
	t.Helper()
	for _, r := range m.Requests() {
		if r.RequestID == id {
			return r, true
		}
	}
	return gwtest.Recorded{}, false
}

func rtModelOf(t *testing.T, body []byte) string {
	t.Helper()
	var v struct {
		Model string `json:"model"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("upstream body %s: %v", body, err)
	}
	return v.Model
}

// TestRoutingAndAliases: requests go to the provider that serves their
// model, with that provider's key only; aliases reach the provider under its
// model name and are billed under the public name.
func TestRoutingAndAliases(t *testing.T) {
	g, oa, ds := rtGateway(t, "10")
	_, secret := g.NewKey("acme", "k")

	cases := []struct {
		model       string
		provider    *gwtest.MockProvider
		other       *gwtest.MockProvider
		upstream    string
		providerKey string
		in, out     int64 // price, nano per 1M
	}{
		{"gpt-4o-mini", oa, ds, "gpt-4o-mini", "openai-provider-key", 150_000_000, 600_000_000},
		{"gpt-4o", oa, ds, "gpt-4o", "openai-provider-key", 2_500_000_000, 10_000_000_000},
		{"deepseek-chat", ds, oa, "deepseek-chat", "deepseek-provider-key", 270_000_000, 1_100_000_000},
		// an alias without a price of its own costs what its target costs
		{"fast", oa, ds, "gpt-4o-mini", "openai-provider-key", 150_000_000, 600_000_000},
		{"smart", oa, ds, "gpt-4o", "openai-provider-key", 2_500_000_000, 10_000_000_000},
		// an alias with a price of its own costs that
		{"cheap", ds, oa, "deepseek-chat", "deepseek-provider-key", 100_000_000, 100_000_000},
	}
	for i, c := range cases {
		id := fmt.Sprintf("route-%d", i)
		otherBefore := c.other.Count()
		status, _, b, err := gwtest.Post(g, "/v1/chat/completions", secret,
			`{"model":"`+c.model+`","messages":[{"role":"user","content":"hi"}]}`,
			map[string]string{gwtest.HeaderRequestID: id, gwtest.HeaderUsage: "1000,100"})
		if err != nil || status != http.StatusOK {
			t.Fatalf("%s: %d %s %v", c.model, status, b, err)
		}
		rec, ok := rtRecorded(t, c.provider, id)
		if !ok {
			t.Fatalf("%s did not reach its provider", c.model)
		}
		if c.other.Count() != otherBefore {
			t.Fatalf("%s also reached the other provider", c.model)
		}
		if got := rtModelOf(t, rec.Body); got != c.upstream {
			t.Fatalf("%s: provider saw model %q, want %q", c.model, got, c.upstream)
		}
		if auth := rec.Header.Values("Authorization"); len(auth) != 1 || auth[0] != "Bearer "+c.providerKey {
			t.Fatalf("%s: provider saw Authorization %q", c.model, auth)
		}
		if gwtest.HasHeaderValue([]gwtest.Recorded{rec}, secret) {
			t.Fatalf("%s: the gateway key reached the provider", c.model)
		}
		rows := gwtest.UsageRows(t, g)
		r := rows[id]
		if r.Model != c.model || -r.Amount != rtCost(c.in, c.out, 1000, 100) || r.Prompt != 1000 || r.Completion != 100 {
			t.Fatalf("%s: ledger row %+v, want model %s cost %d", c.model, r, c.model, rtCost(c.in, c.out, 1000, 100))
		}
	}

	// a priced model no route serves gets the catch-all, not a silent 200
	before := oa.Count() + ds.Count()
	status, h, b, _ := gwtest.Post(g, "/v1/chat/completions", secret, `{"model":"deepseek-coder","messages":[]}`, nil)
	if status != http.StatusOK || oa.Count()+ds.Count() != before+1 {
		t.Fatalf("deepseek-coder: %d %s", status, b)
	}
	status, h, b, _ = gwtest.Post(g, "/v1/chat/completions", secret, `{"model":"unpriced","messages":[]}`, nil)
	gwtest.CheckError(t, status, h, b, http.StatusBadRequest, "invalid_request_error", "model_not_priced")
}

// TestSDKThroughRoutedGateway: the OpenAI Go SDK lists models, chats,
// streams and embeds through the gateway.
func TestSDKThroughRoutedGateway(t *testing.T) {
	g, oa, ds := rtGateway(t, "10")
	_, secret := g.NewKey("acme", "k")
	c := btClient(g, secret)
	ctx := context.Background()

	page, err := c.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
		if m.Object != "model" || m.OwnedBy == "" || m.Created == 0 {
			t.Fatalf("model object %+v", m)
		}
	}
	// literal prices and aliases; patterns are not listed
	if want := []string{"cheap", "fast", "gpt-4o-mini", "smart"}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("models %v, want %v", ids, want)
	}
	if oa.Count()+ds.Count() != 0 {
		t.Fatal("the model list went upstream")
	}
	m, err := c.Models.Get(ctx, "fast")
	if err != nil || m.ID != "fast" {
		t.Fatalf("Models.Get: %+v, %v", m, err)
	}
	_, err = c.Models.Get(ctx, "gpt-4o")
	if e := gwtest.APIErrorOf(t, err); e.StatusCode != http.StatusNotFound || e.Code != "model_not_found" {
		t.Fatalf("Models.Get of an unlisted model: %v", err)
	}

	resp, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "cheap", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")}})
	if err != nil || resp.Usage.TotalTokens != 17 || ds.Count() != 1 {
		t.Fatalf("chat: %+v, %v", resp, err)
	}

	stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "fast", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")}})
	var text strings.Builder
	sawUsage := false
	for stream.Next() {
		ch := stream.Current()
		if len(ch.Choices) > 0 {
			text.WriteString(ch.Choices[0].Delta.Content)
		}
		if ch.Usage.TotalTokens > 0 {
			sawUsage = true
		}
	}
	if err := stream.Err(); err != nil || text.String() != strings.Join(gwtest.StreamPieces, "") || sawUsage {
		t.Fatalf("stream: %q usage=%v %v", text.String(), sawUsage, err)
	}
	reqs := oa.Requests()
	last := reqs[len(reqs)-1]
	if rtModelOf(t, last.Body) != "gpt-4o-mini" || !strings.Contains(string(last.Body), `"include_usage":true`) {
		t.Fatalf("streamed alias went upstream as %s", last.Body)
	}

	emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "emb-small", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hello")}})
	if err != nil || len(emb.Data) == 0 {
		t.Fatalf("embeddings: %+v, %v", emb, err)
	}

	u := gwtest.Ledger(t, g, url.Values{"kind": {"usage"}})
	models := map[string]int{}
	for _, r := range u.Rows {
		models[r.Model]++
	}
	if models["cheap"] != 1 || models["fast"] != 1 || models["emb-small"] != 1 || len(models) != 3 {
		t.Fatalf("ledger models %v", models)
	}
}

// rtKey creates a key with a policy through the admin API.
func rtKey(t *testing.T, g *gwtest.Gateway, body map[string]any) (id, secret string) {
	t.Helper()
	var k struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	g.MustAdmin("POST", "/ai-gateway/keys", body, http.StatusCreated, &k)
	return k.ID, k.Key
}

// TestKeyAllowlist: a key limited to some models gets 403
// model_not_allowed for the others, on every endpoint, and sees only its
// models in the list.
func TestKeyAllowlist(t *testing.T) {
	oa, ds := gwtest.NewMockProvider(t), gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	// images are not metered; the operator allows them at a flat price
	g.LoadSite(rtSite(oa.URL, ds.URL, "\t\t\tendpoint POST /v1/images/generations price 0.04"))
	g.NewAccount("acme", "10")
	keyID, secret := rtKey(t, g, map[string]any{"account": "acme", "name": "mini-only", "allowed_models": []string{"gpt-4o-mini"}})

	ok := func(model string) {
		t.Helper()
		status, _, b, _ := gwtest.Post(g, "/v1/chat/completions", secret, `{"model":"`+model+`","messages":[]}`, nil)
		if status != http.StatusOK {
			t.Fatalf("%s: %d %s", model, status, b)
		}
	}
	refused := func(path, body, model string) {
		t.Helper()
		before := oa.Count() + ds.Count()
		status, h, b, _ := gwtest.Post(g, path, secret, body, nil)
		gwtest.CheckError(t, status, h, b, http.StatusForbidden, "invalid_request_error", "model_not_allowed")
		if !strings.Contains(string(b), model) || !strings.Contains(string(b), "gpt-4o-mini") {
			t.Fatalf("message does not name the model and the allowlist: %s", b)
		}
		if oa.Count()+ds.Count() != before {
			t.Fatalf("%s %s reached a provider", path, model)
		}
	}
	ok("gpt-4o-mini")
	ok("fast") // an alias of an allowed model
	refused("/v1/chat/completions", `{"model":"gpt-4o","messages":[]}`, "gpt-4o")
	refused("/v1/chat/completions", `{"model":"smart","messages":[]}`, "smart")
	refused("/v1/embeddings", `{"model":"emb-small","input":"x"}`, "emb-small")
	// an endpoint the gateway does not meter is still held to the allowlist
	// (one the operator allowed with an endpoint line)
	refused("/v1/images/generations", `{"model":"dall-e-3","prompt":"a cat"}`, "dall-e-3")

	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	req, _ := http.NewRequest("GET", g.BaseURL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := gwtest.RawHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Data) != 2 || list.Data[0].ID != "fast" || list.Data[1].ID != "gpt-4o-mini" {
		t.Fatalf("visible models %+v", list.Data)
	}

	// widening the allowlist through the admin API holds from the next request
	g.MustAdmin("PATCH", "/ai-gateway/keys/"+keyID, map[string]any{"allowed_models": []string{"gpt-*", "emb-*"}}, http.StatusOK, nil)
	ok("gpt-4o")
	// and removing it allows everything
	g.MustAdmin("PATCH", "/ai-gateway/keys/"+keyID, map[string]any{"allowed_models": nil}, http.StatusOK, nil)
	ok("cheap")
	// refusals are counted
	series, _ := gwtest.Scrape(t, g)
	if v, _ := gwtest.Metric(series, "caddy_ai_gateway_rejected_total", map[string]string{"reason": "model_not_allowed"}); v != 4 {
		t.Errorf("model_not_allowed rejections metric %v, want 4", v)
	}
}

// TestKeySpendLimit: concurrent requests near a key's limit overshoot it by
// less than one request's overrun; the rest get 403 key_limit_exceeded
// naming the limit, and never reach the provider.
func TestKeySpendLimit(t *testing.T) {
	g, oa, _ := rtGateway(t, "100")
	// gpt-4o at 2.5/10: 1000 prompt + 100 completion = 0.0035 per request
	const cost = 3_500_000
	keyID, secret := rtKey(t, g, map[string]any{"account": "acme", "name": "capped",
		"spend_limit": map[string]string{"amount": "0.035", "period": "day"}})
	const n = 40
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		admitted int
		refusals []string
	)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			// max_tokens 100 makes the hold close to the cost: the prompt
			// estimate is below the 1000 tokens the mock reports
			status, h, b, err := gwtest.Post(g, "/v1/chat/completions", secret,
				`{"model":"gpt-4o","max_tokens":100,"messages":[{"role":"user","content":"`+strings.Repeat("x", 3000)+`"}]}`,
				map[string]string{gwtest.HeaderUsage: "1000,100", gwtest.HeaderWaitMs: "20"})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("request %d: %v", i, err)
			case status == http.StatusOK:
				admitted++
			case status == http.StatusForbidden:
				gwtest.CheckError(t, status, h, b, http.StatusForbidden, "insufficient_quota", "key_limit_exceeded")
				refusals = append(refusals, string(b))
			default:
				t.Errorf("request %d: %d %s", i, status, b)
			}
		}(i)
	}
	close(start)
	wg.Wait()
	if admitted+len(refusals) != n || oa.Count() != admitted || len(refusals) == 0 {
		t.Fatalf("%d admitted, %d refused, provider saw %d", admitted, len(refusals), oa.Count())
	}
	u := gwtest.Ledger(t, g, url.Values{"key": {keyID}, "kind": {"usage"}})
	var spent int64
	for _, r := range u.Rows {
		spent -= r.Amount
	}
	const limit = 35_000_000
	// each request holds ceil(3004/4)+4 = 755 prompt tokens (the estimate
	// counts "user" too) and 100 completion tokens: 2_887_500 nano, so each
	// overruns its hold by 612_500
	const overrun = cost - (755*2_500 + 100*10_000)
	if spent != int64(admitted)*cost || spent < limit || spent >= limit+cost+int64(admitted)*overrun {
		t.Fatalf("spent %d of limit %d with %d admitted", spent, limit, admitted)
	}
	if !strings.Contains(refusals[0], "daily spend limit of 0.035") || !strings.Contains(refusals[0], "resets at") ||
		!strings.Contains(refusals[0], "capped") {
		t.Fatalf("refusal message: %s", refusals[0])
	}
	// the admin view shows the use of the limit
	var kv struct {
		SpendLimit struct {
			Amount, Period, Spent string
			SpentNano             int64      `json:"spent_nano"`
			ResetsAt              *time.Time `json:"resets_at"`
		} `json:"spend_limit"`
	}
	g.MustAdmin("GET", "/ai-gateway/keys/"+keyID, nil, http.StatusOK, &kv)
	if kv.SpendLimit.SpentNano != spent || kv.SpendLimit.Period != "day" || kv.SpendLimit.ResetsAt == nil {
		t.Fatalf("admin view %+v", kv)
	}
	// other keys of the account are not held to it
	_, other := g.NewKey("acme", "other")
	if status, _, b, _ := gwtest.Post(g, "/v1/chat/completions", other, `{"model":"gpt-4o","messages":[]}`, nil); status != http.StatusOK {
		t.Fatalf("another key: %d %s", status, b)
	}
	// raising the limit lets the key in again at once
	g.MustAdmin("PATCH", "/ai-gateway/keys/"+keyID, map[string]any{"spend_limit": map[string]string{"amount": "1", "period": "day"}}, http.StatusOK, nil)
	if status, _, b, _ := gwtest.Post(g, "/v1/chat/completions", secret, `{"model":"gpt-4o","messages":[]}`, nil); status != http.StatusOK {
		t.Fatalf("after raising the limit: %d %s", status, b)
	}
}

// TestKeyExpiryAndDisabledAccount: an expired key is a 401 like an unknown
// one, a disabled account a 403 account_disabled; neither reaches a provider.
func TestKeyExpiryAndDisabledAccount(t *testing.T) {
	g, oa, _ := rtGateway(t, "10")
	_, short := rtKey(t, g, map[string]any{"account": "acme", "name": "short", "expires_in": "1s"})
	keyID, secret := g.NewKey("acme", "long")
	body := `{"model":"gpt-4o-mini","messages":[]}`
	if status, _, b, _ := gwtest.Post(g, "/v1/chat/completions", short, body, nil); status != http.StatusOK {
		t.Fatalf("before expiry: %d %s", status, b)
	}
	time.Sleep(1100 * time.Millisecond)
	status, h, b, _ := gwtest.Post(g, "/v1/chat/completions", short, body, nil)
	gwtest.CheckError(t, status, h, b, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key")
	if !strings.Contains(string(b), "expired") || h.Get("WWW-Authenticate") == "" {
		t.Fatalf("expired key: %s", b)
	}
	// an expiry set later through the API applies too
	g.MustAdmin("PATCH", "/ai-gateway/keys/"+keyID, map[string]any{"expires_at": time.Now().Add(-time.Minute)}, http.StatusBadRequest, nil)
	g.MustAdmin("PATCH", "/ai-gateway/keys/"+keyID, map[string]any{"expires_in": "1s"}, http.StatusOK, nil)
	time.Sleep(1100 * time.Millisecond)
	status, h, b, _ = gwtest.Post(g, "/v1/chat/completions", secret, body, nil)
	gwtest.CheckError(t, status, h, b, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key")
	g.MustAdmin("PATCH", "/ai-gateway/keys/"+keyID, map[string]any{"expires_at": nil}, http.StatusOK, nil)
	if status, _, b, _ := gwtest.Post(g, "/v1/chat/completions", secret, body, nil); status != http.StatusOK {
		t.Fatalf("after clearing the expiry: %d %s", status, b)
	}

	before := oa.Count()
	g.MustAdmin("PATCH", "/ai-gateway/accounts/acme", map[string]any{"disabled": true}, http.StatusOK, nil)
	status, h, b, _ = gwtest.Post(g, "/v1/chat/completions", secret, body, nil)
	gwtest.CheckError(t, status, h, b, http.StatusForbidden, "invalid_request_error", "account_disabled")
	if oa.Count() != before {
		t.Fatal("a disabled account reached the provider")
	}
}

// TestAIModelMatcherEdgeCases drives the matcher without balance_guard: the
// body is read once, restored byte for byte, bounded by request_body, and a
// body that is not JSON is an OpenAI-shaped error, not a non-match.
func TestAIModelMatcherEdgeCases(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(`
	request_body {
		max_size 2KB
	}
	handle /v1/* {
		api_key_auth
		@claude ai_model claude-*
		handle @claude {
			respond "claude route" 418
		}
		@gpt {
			ai_model gpt-*
			ai_model o3*
		}
		handle @gpt {
			reverse_proxy ` + mock.URL + `
		}
		handle {
			respond "no route" 404
		}
	}
	handle /raw/* {
		@gpt ai_model gpt-*
		handle @gpt {
			respond "matched" 200
		}
		handle {
			respond "no match" 404
		}
	}`)
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")

	send := func(method, path, ctype, body string) (int, http.Header, []byte) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, g.BaseURL+path, rd)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if strings.HasPrefix(path, "/v1/") {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		resp, err := gwtest.RawHTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	const j = "application/json"

	// matched: the provider gets the body byte for byte, after two matchers
	// of two routes looked at it
	body := `{"messages":[{"role":"user","content":"hi"}],  "model" : "o3-mini" }`
	if status, _, b := send("POST", "/v1/chat/completions", j, body); status != http.StatusOK {
		t.Fatalf("o3-mini: %d %s", status, b)
	}
	if reqs := mock.Requests(); len(reqs) != 1 || string(reqs[0].Body) != body {
		t.Fatalf("upstream body %q", reqs[0].Body)
	}
	if status, _, b := send("POST", "/v1/chat/completions", j, `{"model":"claude-3"}`); status != 418 {
		t.Fatalf("claude: %d %s", status, b)
	}
	// not matched: another model, no model, GET, a multipart upload
	for _, c := range []struct{ method, ctype, body string }{
		{"POST", j, `{"model":"llama"}`},
		{"POST", j, `{"messages":[]}`},
		{"POST", j, `{"model":null}`},
		{"GET", "", ""},
		{"POST", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o\r\n--x--\r\n"},
	} {
		if status, _, b := send(c.method, "/v1/chat/completions", c.ctype, c.body); status != http.StatusNotFound || string(b) != "no route" {
			t.Fatalf("%s %q: %d %s", c.method, c.body, status, b)
		}
	}
	// errors, in the OpenAI shape behind api_key_auth
	for _, c := range []struct {
		ctype, body string
		status      int
		code        string
	}{
		{j, "", http.StatusBadRequest, "invalid_json"},
		{"", "not json", http.StatusBadRequest, "invalid_json"},
		{j, `{"model":5}`, http.StatusBadRequest, "invalid_json"},
		{j, `{"model":"gpt-4o"`, http.StatusBadRequest, "invalid_json"},
		{j, `[{"model":"gpt-4o"}]`, http.StatusBadRequest, "invalid_json"},
		{"application/vnd.api+json", `{"model":"gpt-4o"} x`, http.StatusBadRequest, "invalid_json"},
	} {
		status, h, b := send("POST", "/v1/chat/completions", c.ctype, c.body)
		gwtest.CheckError(t, status, h, b, c.status, "invalid_request_error", c.code)
	}
	// over request_body's max_size: with a Content-Length Caddy refuses it
	// before any handler; sent chunked, the matcher hits the limit itself
	big := `{"model":"gpt-4o","pad":"` + strings.Repeat("x", 3000) + `"}`
	if status, _, _ := send("POST", "/v1/chat/completions", j, big); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("big body with length: %d", status)
	}
	req, _ := http.NewRequest("POST", g.BaseURL+"/v1/chat/completions", io.MultiReader(strings.NewReader(big)))
	req.Header.Set("Content-Type", j)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := gwtest.RawHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	gwtest.CheckError(t, resp.StatusCode, resp.Header, b, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large")
	if mock.Count() != 1 {
		t.Fatalf("provider saw %d requests, want 1", mock.Count())
	}
	// without api_key_auth in front, Caddy answers the error itself
	if status, _, _ := send("POST", "/raw/x", j, "not json"); status != http.StatusBadRequest {
		t.Fatalf("raw: %d", status)
	}
	if status, _, _ := send("POST", "/raw/x", j, `{"model":"gpt-x"}`); status != http.StatusOK {
		t.Fatalf("raw match: %d", status)
	}
}

// TestFailoverReplaysBody: reverse_proxy's own retries and passive health
// checks move a request to the second upstream of the same model; with
// request_buffers the body the guard rewrote is replayed, and only the
// answer that was used is billed.
func TestFailoverReplaysBody(t *testing.T) {
	good := gwtest.NewMockProvider(t)
	var (
		mu     sync.Mutex
		bodies []string
	)
	bad := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":{"message":"overloaded","type":"server_error","param":null,"code":null}}`)
	})}
	badPort := gwtest.FreePort(t)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", badPort))
	if err != nil {
		t.Fatal(err)
	}
	go bad.Serve(ln)
	t.Cleanup(func() { bad.Close() })
	dead := fmt.Sprintf("127.0.0.1:%d", gwtest.FreePort(t)) // nothing listens

	g := gwtest.New(t)
	g.LoadSite(`
	handle /v1/* {
		api_key_auth
		balance_guard {
			price gpt-4o-mini input 0.15 output 0.6
			alias fast gpt-4o-mini
		}
		reverse_proxy ` + fmt.Sprintf("127.0.0.1:%d", badPort) + ` ` + dead + ` ` + strings.TrimPrefix(good.URL, "http://") + ` {
			lb_policy first
			lb_retries 2
			lb_retry_match {
				expression ` + "`{rp.status_code} >= 500`" + `
			}
			request_buffers 1MiB
			fail_duration 30s
			max_fails 1
			unhealthy_status 5xx
			header_up Authorization "Bearer provider-key"
		}
	}`)
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")

	body := `{"model":"fast","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	status, _, b, err := gwtest.Post(g, "/v1/chat/completions", secret, body, map[string]string{gwtest.HeaderRequestID: "fo-1"})
	if err != nil || status != http.StatusOK || !strings.Contains(string(b), "data: [DONE]") {
		t.Fatalf("failover: %d %s %v", status, b, err)
	}
	rec, ok := rtRecorded(t, good, "fo-1")
	if !ok {
		t.Fatal("the healthy upstream never got the request")
	}
	mu.Lock()
	first := append([]string(nil), bodies...)
	mu.Unlock()
	if len(first) != 1 || first[0] != string(rec.Body) || rtModelOf(t, rec.Body) != "gpt-4o-mini" ||
		!strings.Contains(first[0], `"include_usage":true`) {
		t.Fatalf("bodies: failing upstream %q, healthy upstream %q", first, rec.Body)
	}
	// passive health: the failing upstream is skipped from now on
	if status, _, b, _ := gwtest.Post(g, "/v1/chat/completions", secret, `{"model":"fast","messages":[]}`, nil); status != http.StatusOK {
		t.Fatalf("second request: %d %s", status, b)
	}
	mu.Lock()
	n := len(bodies)
	mu.Unlock()
	if n != 1 {
		t.Fatalf("the unhealthy upstream got %d requests", n)
	}
	rows := gwtest.UsageRows(t, g)
	r := rows["fo-1"]
	if len(rows) != 2 || r.Model != "fast" || r.Estimated || r.Prompt != 12 || r.Completion != 5 {
		t.Fatalf("ledger %+v", rows)
	}
}
