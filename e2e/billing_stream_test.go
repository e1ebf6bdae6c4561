package e2e

// Streams: events are passed on at once, the usage chunk the gateway asked
// for is removed byte for byte, a gzipped provider answer is still metered.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

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
	gwtest.WaitAnswers(t, mock, len(variants))
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
		// The ordering check above is the property (each event reaches
		// the client before the mock writes the next); an absolute bound
		// on the first event only flaked on a loaded machine. The total
		// shows the mock did pace the stream.
		if totalDur < 900*time.Millisecond {
			t.Errorf("%s: stream took %v (want > 900ms: the mock paces it)", name, totalDur)
		}
	}
	gwtest.WaitNoHolds(t, g, 5*time.Second)
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
			status, h, got, err := gwtest.Post(g, c.path, secret, c.body, map[string]string{gwtest.HeaderRequestID: id})
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
			up := gwtest.UpstreamBody(t, mock.Requests(), id)

			// The mock's bytes, fetched again directly: the mock is
			// deterministic, and its record is what it sent.
			direct := func(body []byte) []byte {
				req, _ := http.NewRequest("POST", mock.URL+c.path, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := gwtest.RawHTTP.Do(req)
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
			events := gwtest.SplitEvents(ans.Body)
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
			rows := gwtest.UsageRows(t, g)
			r := rows[id]
			if r.Prompt != 31 || r.Completion != 17 || r.Cached != 8 || r.Reasoning != 3 || r.Estimated ||
				-r.Amount != btCost(btRateOf(t, "mock-"), 31, 17, 8) {
				t.Fatalf("row %+v", r)
			}
		})
	}
	gwtest.AssertNoHolds(t, g)
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
	status, h, raw, err := gwtest.Post(g, "/v1/embeddings", secret, `{"model":"emb-small","input":"hi"}`,
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
	sresp, err := gwtest.RawHTTP.Do(req)
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
	rows := gwtest.UsageRows(t, g)
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
