package e2e

// Errors: refused bodies never reach the provider, provider errors cost
// nothing, answers without usage are estimated and flagged.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

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
	before := gwtest.Balance(t, g, "acme")
	metricsBefore, _ := gwtest.Scrape(t, g)

	for _, path := range []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"} {
		for _, body := range []string{`{`, `[]`, `{"model":5}`, ``, `null`, `"x"`, `{"model":"mock-model"} {}`,
			`{"model":"mock-model","stream":"yes"}`, `{"model":"mock-model","max_tokens":-1}`,
			`{"model":"mock-model","stream":true,"stream_options":[]}`,
			// a repeated member the gateway reads: a provider might read the
			// other copy than the one billed
			`{"model":"mock-model","model":"flat-model"}`, `{"model":"mock-model","n":1,"n":50}`} {
			status, h, b, err := gwtest.Post(g, path, secret, body, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Run(path+" "+body, func(t *testing.T) {
				gwtest.CheckError(t, status, h, b, http.StatusBadRequest, "invalid_request_error", "invalid_json")
			})
		}
		status, h, b, _ := gwtest.Post(g, path, secret, `{"model":"gpt-unpriced","messages":[]}`, nil)
		gwtest.CheckError(t, status, h, b, http.StatusBadRequest, "invalid_request_error", "model_not_priced")
		if !bytes.Contains(b, []byte("gpt-unpriced")) {
			t.Fatalf("model_not_priced does not name the model: %s", b)
		}
		status, h, b, _ = gwtest.Post(g, path, secret, `{"messages":[]}`, nil)
		gwtest.CheckError(t, status, h, b, http.StatusBadRequest, "invalid_request_error", "model_not_priced")
	}
	// Spellings of a metered path that a lenient provider might route are
	// refused, not passed through free (endpoints_test.go tries them all).
	for _, path := range []string{"/v1/Chat/Completions", "/v1/chat/completions;x"} {
		status, h, b, _ := gwtest.Post(g, path, secret, `{"model":"gpt-unpriced","messages":[]}`, nil)
		gwtest.CheckError(t, status, h, b, http.StatusForbidden, "invalid_request_error", "endpoint_not_allowed")
	}
	big := `{"model":"mock-model","messages":[{"role":"user","content":"` + strings.Repeat("a", 3000) + `"}]}`
	status, h, b, _ := gwtest.Post(g, "/v1/chat/completions", secret, big, nil)
	gwtest.CheckError(t, status, h, b, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large")
	// request_body refuses a declared Content-Length over max_size itself,
	// before any handler of ours runs (shaped by handle_errors); a chunked
	// body of unknown length reaches the guard, whose read hits the limit:
	// 413 in the OpenAI shape.
	mid := `{"model":"emb-small","input":"` + strings.Repeat("a", 500) + `"}`
	status, h, b, _ = gwtest.Post(g, "/v1/embeddings", secret, mid, nil)
	gwtest.CheckError(t, status, h, b, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large")
	// (a body that is not a *strings.Reader has no known length: chunked)
	req, _ := http.NewRequest("POST", g.BaseURL+"/v1/embeddings", io.MultiReader(strings.NewReader(mid)))
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := gwtest.RawHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	gwtest.CheckError(t, resp.StatusCode, resp.Header, b, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large")
	if !bytes.Contains(b, []byte("300 bytes")) {
		t.Fatalf("413 does not name request_body's limit: %s", b)
	}

	if n := mock.Count(); n != 0 {
		t.Fatalf("mock saw %d requests; refused bodies must never be forwarded", n)
	}
	if rows := gwtest.UsageRows(t, g); len(rows) != 0 {
		t.Fatalf("%d usage rows for refused requests", len(rows))
	}
	if after := gwtest.Balance(t, g, "acme"); after != before {
		t.Fatalf("balance moved from %d to %d", before, after)
	}
	gwtest.AssertNoHolds(t, g)
	series, _ := gwtest.Scrape(t, g)
	for reason, want := range map[string]float64{"invalid_json": 48, "model_not_priced": 8, "request_too_large": 2, "endpoint_not_allowed": 2} {
		v, _ := gwtest.Metric(series, "caddy_ai_gateway_rejected_total", map[string]string{"reason": reason})
		v0, _ := gwtest.Metric(metricsBefore, "caddy_ai_gateway_rejected_total", map[string]string{"reason": reason})
		if v-v0 != want {
			t.Errorf("rejected_total{reason=%s} grew by %v, want %v", reason, v-v0, want)
		}
	}

	// The same bodies, well-formed, do go through: the limits above are not
	// refusing everything.
	status, _, b, _ = gwtest.Post(g, "/v1/embeddings", secret, `{"model":"emb-small","input":"hello"}`, nil)
	if status != http.StatusOK || mock.Count() != 1 {
		t.Fatalf("valid request: %d %s", status, b)
	}
	// Requests that are not metered pass without a ledger row (with
	// models_endpoint upstream, GET /v1/models goes to the provider).
	req, _ = http.NewRequest("GET", g.BaseURL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err = gwtest.RawHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || mock.Count() != 2 {
		t.Fatalf("GET /v1/models: %d", resp.StatusCode)
	}
	if rows := gwtest.UsageRows(t, g); len(rows) != 1 {
		t.Fatalf("%d usage rows, want only the embeddings one", len(rows))
	}
}

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
	before := gwtest.Balance(t, g, "acme")
	c := btClient(g, secret)

	// No answer at all: Caddy's 502, a free row with Caddy's request id.
	status, _, b, err := gwtest.Post(g, "/dead/v1/chat/completions", secret, `{"model":"big-model","messages":[]}`, nil)
	if err != nil || status != http.StatusBadGateway {
		t.Fatalf("dead upstream: %d %v %s", status, err, b)
	}
	u := gwtest.Ledger(t, g, url.Values{"kind": {"usage"}})
	if len(u.Rows) != 1 || u.Rows[0].Amount != 0 || u.Rows[0].Status != http.StatusBadGateway || u.Rows[0].Estimated {
		t.Fatalf("dead upstream rows %+v; want one free 502", u.Rows)
	}
	deadRow := u.Rows[0].RequestID
	gwtest.AssertNoHolds(t, g)

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
		status, _, b, _ := gwtest.Post(g, "/v1/chat/completions", secret, `{"model":"big-model","stream":true,"messages":[]}`,
			map[string]string{gwtest.HeaderStatus: strconv.Itoa(st), gwtest.HeaderRequestID: sid})
		if status != st || !bytes.Contains(b, []byte(`"mock_status"`)) {
			t.Fatalf("stream %d: got %d %s", st, status, b)
		}
	}
	// An error that does report usage is billed by it, like any answer.
	status, _, b, _ = gwtest.Post(g, "/v1/chat/completions", secret, `{"model":"big-model","messages":[]}`,
		map[string]string{gwtest.HeaderStatus: "400", gwtest.HeaderErrorUsage: "1", gwtest.HeaderUsage: "29,31",
			gwtest.HeaderRequestID: "error-with-usage"})
	if status != http.StatusBadRequest || !bytes.Contains(b, []byte(`"usage"`)) {
		t.Fatalf("error with usage: %d %s", status, b)
	}
	rows := gwtest.UsageRows(t, g)
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
	if after := gwtest.Balance(t, g, "acme"); after != before {
		t.Fatalf("balance moved from %d to %d", before, after)
	}
	gwtest.AssertNoHolds(t, g)
}

// TestUsageMissingIsEstimatedAndFlagged: a 2xx answer without usage is
// charged the documented estimate and flagged, with a note saying why.
func TestUsageMissingIsEstimatedAndFlagged(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")
	metricsBefore, _ := gwtest.Scrape(t, g)

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
		status, _, _, err := gwtest.Post(g, c.path, secret, c.body, c.headers)
		if err == nil && status != http.StatusOK {
			t.Fatalf("%s: status %d", c.name, status)
		}
	}
	gwtest.WaitAnswers(t, mock, len(cases))
	rows := gwtest.UsageRows(t, g)
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
	u := gwtest.Ledger(t, g, url.Values{"account": {"acme"}, "kind": {"usage"}})
	if len(u.Totals) != 1 || u.Totals[0].Estimated != int64(len(cases)) || u.Totals[0].CostNano != sum {
		t.Fatalf("totals %+v, want %d estimated costing %d", u.Totals, len(cases), sum)
	}
	v0, _ := gwtest.Metric(metricsBefore, "caddy_ai_gateway_estimated_charges_total", nil)
	gwtest.Eventually(t, 5*time.Second, func() string {
		series, _ := gwtest.Scrape(t, g)
		v, _ := gwtest.Metric(series, "caddy_ai_gateway_estimated_charges_total", nil)
		if v-v0 != float64(len(cases)) {
			return fmt.Sprintf("estimated_charges_total grew by %v, want %d", v-v0, len(cases))
		}
		return ""
	})
	gwtest.AssertNoHolds(t, g)
}
