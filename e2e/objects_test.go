package e2e

// Provider-side objects stay with their account: a stored response can be
// continued, read, listed and deleted only by the account that created it
// through the gateway, and a continuation holds for the context the
// provider re-reads (docs/billing.md, "Provider-side objects").

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// objSite prices mock models at 1 unit per 1M tokens either way.
func objSite(upstream string) string {
	return `
	handle /v1/* {
		api_key_auth
		balance_guard {
			price mock-* input 1 output 1
		}
		reverse_proxy ` + upstream + ` {
			header_up Authorization "Bearer provider-secret"
		}
	}`
}

// objRequest sends method path with key and returns status, header and body.
func objRequest(t *testing.T, g *gwtest.Gateway, method, path, key string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, g.BaseURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := gwtest.RawHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// newResponse creates a stored response through the gateway with the SDK
// and returns its id.
func newResponse(t *testing.T, c openai.Client, usage string) string {
	t.Helper()
	resp, err := c.Responses.New(context.Background(), responses.ResponseNewParams{
		Model: "mock-model", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Remember: 42")},
	}, option.WithHeader(gwtest.HeaderUsage, usage))
	if err != nil {
		t.Fatal(err)
	}
	if resp.ID == "" {
		t.Fatal("response without id")
	}
	return resp.ID
}

// checkNotFound asserts the 404 object_not_found of an id.
func checkNotFound(t *testing.T, status int, h http.Header, b []byte, id string) {
	t.Helper()
	e := gwtest.CheckError(t, status, h, b, http.StatusNotFound, "invalid_request_error", "object_not_found")
	if !strings.Contains(e.Error.Message, fmt.Sprintf("%q does not exist for this account", id)) {
		t.Fatalf("message does not name the id: %q", e.Error.Message)
	}
}

// TestStoredResponsesStayWithTheirAccount: tenant B can neither continue,
// read, list the input items of, nor delete tenant A's response (404, the
// provider never sees the request); A can do all of it, free, with the
// OpenAI SDK; once A deleted it, it is gone for A too.
func TestStoredResponsesStayWithTheirAccount(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(objSite(mock.URL))
	g.NewAccount("tenant-a", "10")
	g.NewAccount("tenant-b", "10")
	_, keyA := g.NewKey("tenant-a", "a")
	_, keyB := g.NewKey("tenant-b", "b")
	a, b := gwtest.Client(g, keyA), gwtest.Client(g, keyB)
	ctx := context.Background()

	rid := newResponse(t, a, "100,20")

	// B: every way of using A's response is refused before the provider.
	before, balB, rows := mock.Count(), gwtest.Balance(t, g, "tenant-b"), len(gwtest.UsageRows(t, g))
	_, err := b.Responses.New(ctx, responses.ResponseNewParams{
		Model: "mock-model", PreviousResponseID: openai.String(rid),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("What did I say?")},
	})
	if apiErr := gwtest.APIErrorOf(t, err); apiErr.StatusCode != http.StatusNotFound || apiErr.Code != "object_not_found" ||
		!strings.Contains(apiErr.Message, rid) {
		t.Fatalf("B continuing A's response: %v", err)
	}
	for _, r := range []struct{ method, path string }{
		{"GET", "/v1/responses/" + rid},
		{"GET", "/v1/responses/" + rid + "/input_items"},
		{"DELETE", "/v1/responses/" + rid},
	} {
		status, h, body := objRequest(t, g, r.method, r.path, keyB)
		checkNotFound(t, status, h, body, rid)
	}
	if _, err := b.Responses.Get(ctx, rid, responses.ResponseGetParams{}); err == nil {
		t.Fatal("B read A's response with the SDK")
	}
	if mock.Count() != before {
		t.Fatalf("B's requests reached the provider %d times", mock.Count()-before)
	}
	if gwtest.Balance(t, g, "tenant-b") != balB || len(gwtest.UsageRows(t, g)) != rows {
		t.Fatal("B was charged for refused requests")
	}
	if s, ok := mock.Stored(rid); !ok || s.Deleted {
		t.Fatal("A's response is gone at the provider")
	}

	// A: continue it, read it, list its input, delete it.
	cont, err := a.Responses.New(ctx, responses.ResponseNewParams{
		Model: "mock-model", PreviousResponseID: openai.String(rid),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("What did I say?")},
	}, option.WithHeader(gwtest.HeaderUsage, "130,5"))
	if err != nil || cont.ID == "" || cont.ID == rid {
		t.Fatalf("A continuing its response: %v %+v", err, cont)
	}
	reqs := mock.Requests()
	if last := reqs[len(reqs)-1]; !strings.Contains(string(last.Body), `"previous_response_id":"`+rid+`"`) {
		t.Fatalf("the continuation did not reach the provider as sent: %s", last.Body)
	}
	balA, rows := gwtest.Balance(t, g, "tenant-a"), len(gwtest.UsageRows(t, g))
	got, err := a.Responses.Get(ctx, rid, responses.ResponseGetParams{})
	if err != nil || got.ID != rid || got.OutputText() == "" {
		t.Fatalf("A reading its response: %v %+v", err, got)
	}
	items, err := a.Responses.InputItems.List(ctx, rid, responses.InputItemListParams{})
	if err != nil || len(items.Data) != 1 {
		t.Fatalf("A listing its input items: %v %+v", err, items)
	}
	if err := a.Responses.Delete(ctx, rid); err != nil {
		t.Fatalf("A deleting its response: %v", err)
	}
	if gwtest.Balance(t, g, "tenant-a") != balA || len(gwtest.UsageRows(t, g)) != rows {
		t.Fatal("reading or deleting a stored response was charged")
	}
	if s, _ := mock.Stored(rid); !s.Deleted {
		t.Fatal("the provider did not delete the response")
	}
	// deleted: the gateway answers for it, the provider is not asked again
	before = mock.Count()
	status, h, body := objRequest(t, g, "GET", "/v1/responses/"+rid, keyA)
	checkNotFound(t, status, h, body, rid)
	_, err = a.Responses.New(ctx, responses.ResponseNewParams{
		Model: "mock-model", PreviousResponseID: openai.String(rid),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("again")},
	})
	if apiErr := gwtest.APIErrorOf(t, err); apiErr.StatusCode != http.StatusNotFound {
		t.Fatalf("continuing a deleted response: %v", err)
	}
	if mock.Count() != before {
		t.Fatal("requests about a deleted response reached the provider")
	}
	// the continuation is A's own stored response too
	if _, err := a.Responses.Get(ctx, cont.ID, responses.ResponseGetParams{}); err != nil {
		t.Fatalf("A reading its continuation: %v", err)
	}
	gwtest.AssertNoHolds(t, g)
}

// TestContinuationHoldsItsContext: continuing a response holds that
// response's input and output tokens too (the context the provider
// re-reads), and the balance must cover the hold. On a balance of 0.01, all
// of 40 concurrent continuations of a 2M-token response get 403
// insufficient_balance without reaching the provider (a hold of the new
// input alone would have admitted them, each costing 2 units), while a
// fresh request that the balance covers is served.
func TestContinuationHoldsItsContext(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(objSite(mock.URL))
	g.NewAccount("acme", "2.01")
	_, key := g.NewKey("acme", "k")
	rid := newResponse(t, gwtest.Client(g, key), "1000000,1000000") // costs 2
	if bal := gwtest.Balance(t, g, "acme"); bal != 10_000_000 {
		t.Fatalf("balance %d nano after the first response, want 0.01", bal)
	}

	before := mock.Count()
	body := `{"model":"mock-model","input":"and then?","previous_response_id":"` + rid + `"}`
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
		bad      []string
	)
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _, b, err := gwtest.Post(g, "/v1/responses", key, body,
				map[string]string{gwtest.HeaderUsage: "1000000,1000000", gwtest.HeaderWaitMs: "300"})
			mu.Lock()
			defer mu.Unlock()
			statuses[status]++
			if err != nil || (status != http.StatusOK && !strings.Contains(string(b), `"code":"insufficient_balance"`)) {
				bad = append(bad, fmt.Sprintf("%d %v %s", status, err, b))
			}
		}()
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("unexpected answers: %v", bad)
	}
	if statuses[http.StatusForbidden] != 40 || mock.Count() != before {
		t.Fatalf("statuses %v, provider saw %d: want every continuation refused", statuses, mock.Count()-before)
	}
	if bal := gwtest.Balance(t, g, "acme"); bal != 10_000_000 {
		t.Fatalf("final balance %d nano, want 0.01 untouched", bal)
	}
	fresh := `{"model":"mock-model","input":"and then?","max_output_tokens":16}`
	if status, _, b, err := gwtest.Post(g, "/v1/responses", key, fresh, nil); err != nil || status != http.StatusOK {
		t.Fatalf("a fresh request the balance covers: %d %v %s", status, err, b)
	}
	gwtest.AssertNoHolds(t, g)
}

// TestBackgroundAndConversationRefused: background responses and
// conversations never reach the provider.
func TestBackgroundAndConversationRefused(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(objSite(mock.URL))
	g.NewAccount("acme", "10")
	_, key := g.NewKey("acme", "k")
	c := gwtest.Client(g, key)
	ctx := context.Background()

	_, err := c.Responses.New(ctx, responses.ResponseNewParams{
		Model: "mock-model", Background: openai.Bool(true),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("long job")},
	})
	if e := gwtest.APIErrorOf(t, err); e.StatusCode != http.StatusBadRequest || e.Type != "invalid_request_error" ||
		e.Code != "background_not_supported" || !strings.Contains(e.Message, "Background responses are not supported") {
		t.Fatalf("background: %v", err)
	}
	for _, conv := range []string{`"conv_123"`, `{"id":"conv_123"}`} {
		status, h, b, err := gwtest.Post(g, "/v1/responses", key, `{"model":"mock-model","input":"hi","conversation":`+conv+`}`, nil)
		if err != nil {
			t.Fatal(err)
		}
		e := gwtest.CheckError(t, status, h, b, http.StatusNotFound, "invalid_request_error", "object_not_found")
		if !strings.Contains(e.Error.Message, "conversation") {
			t.Fatalf("conversation message: %q", e.Error.Message)
		}
	}
	// a previous_response_id the gateway never saw
	status, h, b, _ := gwtest.Post(g, "/v1/responses", key, `{"model":"mock-model","input":"hi","previous_response_id":"resp_elsewhere"}`, nil)
	checkNotFound(t, status, h, b, "resp_elsewhere")
	// background: false and store: true are fine
	status, _, b, _ = gwtest.Post(g, "/v1/responses", key, `{"model":"mock-model","input":"hi","background":false,"store":true}`, nil)
	if status != http.StatusOK {
		t.Fatalf("background false: %d %s", status, b)
	}
	if mock.Count() != 1 {
		t.Fatalf("the provider saw %d requests, want 1", mock.Count())
	}
	if n := len(gwtest.UsageRows(t, g)); n != 1 {
		t.Fatalf("%d usage rows, want 1", n)
	}
}

// TestStoredResponseRecordsSurviveRestart: a streamed response's id is
// recorded too, and records outlive a stop and start of Caddy (the store
// is closed and opened again): the owner may still continue it, others
// still may not; a response created with "store": false is not recorded.
func TestStoredResponseRecordsSurviveRestart(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(objSite(mock.URL))
	g.NewAccount("tenant-a", "10")
	g.NewAccount("tenant-b", "10")
	_, keyA := g.NewKey("tenant-a", "a")
	_, keyB := g.NewKey("tenant-b", "b")
	ctx := context.Background()

	streamer := gwtest.Client(g, keyA)
	s := streamer.Responses.NewStreaming(ctx, responses.ResponseNewParams{
		Model: "mock-model", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("stream me")},
	}, option.WithHeader(gwtest.HeaderUsage, "50,4"))
	var rid string
	for s.Next() {
		if ev := s.Current(); ev.Type == "response.completed" {
			rid = ev.Response.ID
		}
	}
	if s.Err() != nil || rid == "" {
		t.Fatalf("stream: %v, id %q", s.Err(), rid)
	}
	s.Close()
	status, _, b, _ := gwtest.Post(g, "/v1/responses", keyA, `{"model":"mock-model","input":"x","store":false}`, nil)
	if status != http.StatusOK {
		t.Fatalf("store false: %d %s", status, b)
	}
	var unstored struct{ ID string }
	if err := json.Unmarshal(b, &unstored); err != nil || unstored.ID == "" {
		t.Fatalf("store false: %s", b)
	}

	// Stop Caddy: its store closes (the database lock is free again) and
	// the records are on disk.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	ks, err := keystore.Open(ctx, keystore.Options{Path: g.DBPath})
	if err != nil {
		t.Fatalf("the store was not closed by the stop: %v", err)
	}
	o, err := ks.Object(ctx, rid)
	if cerr := ks.Close(); err != nil || cerr != nil || o.AccountID != "tenant-a" || o.InputTokens != 50 || o.OutputTokens != 4 {
		t.Fatalf("record on disk: %+v, %v, %v", o, err, cerr)
	}
	g.LoadSite(objSite(mock.URL))

	a := gwtest.Client(g, keyA)
	if _, err := a.Responses.New(ctx, responses.ResponseNewParams{
		Model: "mock-model", PreviousResponseID: openai.String(rid),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("go on")},
	}); err != nil {
		t.Fatalf("A continuing its streamed response after a restart: %v", err)
	}
	before := mock.Count()
	status, h, b := objRequest(t, g, "GET", "/v1/responses/"+rid, keyB)
	checkNotFound(t, status, h, b, rid)
	status, h, b = objRequest(t, g, "GET", "/v1/responses/"+unstored.ID, keyA)
	checkNotFound(t, status, h, b, unstored.ID)
	if mock.Count() != before {
		t.Fatal("a refused request reached the provider")
	}
}
