// Command mockprovider is the upstream of the overhead benchmark
// (bench/run.sh): a minimal OpenAI-shaped provider on loopback. It answers
// POST /v1/chat/completions with the same chat.completion JSON, including a
// usage object, and GET /v1/models with a one-model list. It does as little
// work as possible so that the benchmark measures the gateway: a request body
// is only decoded when it mentions "stream".
//
// A request with "stream": true gets Server-Sent Events instead, like
// OpenAI's streaming chat completions:
//
//	(wait -first-chunk-delay)  data: {role chunk}
//	(wait -stream-delay)       data: {content chunk}     × -stream-chunks
//	(wait -stream-delay)       data: {finish_reason chunk}
//	                           data: {usage chunk}        only if stream_options.include_usage
//	                           data: [DONE]
//
// Each wait ends with a flush (the finish, usage and [DONE] events go out in
// one write after the last wait). The response headers go out together
// with the first event (as from a provider that answers once the first token
// is ready), so the time to the first byte of the response is the time to
// the first token. -first-chunk-delay models that time (default: the same as
// -stream-delay).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"time"
)

const chatCompletion = `{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the benchmark provider.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}}`

const modelList = `{"object":"list","data":[{"id":"bench","object":"model","created":1700000000,"owned_by":"bench"}]}`

const notFound = `{"error":{"message":"mockprovider: unknown route","type":"invalid_request_error","param":null,"code":"unknown_url"}}`

// Stream events. The usage chunk matches the JSON answer's usage.
const (
	roleChunk    = `{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`
	contentChunk = `{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[{"index":0,"delta":{"content":"Hello "},"logprobs":null,"finish_reason":null}]}`
	finishChunk  = `{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}`
	usageChunk   = `{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}}`
)

// streamOptions are the timings of a streamed answer.
type streamOptions struct {
	firstDelay time.Duration // before the first event
	delay      time.Duration // between events
	chunks     int           // content chunks
}

// streamRequest reports whether a chat request asks for a stream, and for
// the usage chunk. Bodies that do not mention "stream" are not decoded.
func streamRequest(body []byte) (stream, includeUsage bool) {
	if !bytes.Contains(body, []byte(`"stream"`)) {
		return false, false
	}
	var req struct {
		Stream        bool `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if json.Unmarshal(body, &req) != nil {
		return false, false
	}
	return req.Stream, req.Stream && req.StreamOptions != nil && req.StreamOptions.IncludeUsage
}

// writeStream answers with Server-Sent Events (see the package comment).
func writeStream(w http.ResponseWriter, r *http.Request, o streamOptions, includeUsage bool) {
	h := w.Header()
	h["Content-Type"] = []string{"text/event-stream"}
	h["Cache-Control"] = []string{"no-cache"}
	rc := http.NewResponseController(w)
	wait := func(d time.Duration) bool {
		if d <= 0 {
			return true
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-r.Context().Done(): // the client went away
			return false
		}
	}
	send := func(events ...string) bool {
		for _, e := range events {
			if _, err := io.WriteString(w, "data: "+e+"\n\n"); err != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	if !wait(o.firstDelay) || !send(roleChunk) {
		return
	}
	for range o.chunks {
		if !wait(o.delay) || !send(contentChunk) {
			return
		}
	}
	if !wait(o.delay) {
		return
	}
	if includeUsage {
		send(finishChunk, usageChunk, "[DONE]")
	} else {
		send(finishChunk, "[DONE]")
	}
}

func write(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "loopback address to listen on")
	streamDelay := flag.Duration("stream-delay", 20*time.Millisecond, "delay between the events of a streamed answer")
	firstDelay := flag.Duration("first-chunk-delay", -1, "delay before the first event of a streamed answer (time to first token); negative: same as -stream-delay")
	chunks := flag.Int("stream-chunks", 4, "content chunks of a streamed answer")
	flag.Parse()
	so := streamOptions{firstDelay: *firstDelay, delay: *streamDelay, chunks: *chunks}
	if so.firstDelay < 0 {
		so.firstDelay = so.delay
	}
	if so.delay < 0 || so.chunks < 0 {
		log.Fatalf("mockprovider: -stream-delay and -stream-chunks must not be negative")
	}

	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		log.Fatalf("mockprovider: bad -addr: %v", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		log.Fatalf("mockprovider: -addr must be a loopback IP, got %q", host)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("mockprovider: %v", err)
	}
	// The bound address on stderr lets callers use port 0.
	log.SetFlags(0)
	log.Printf("mockprovider listening on %s", ln.Addr())

	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
				body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
				if stream, includeUsage := streamRequest(body); stream {
					writeStream(w, r, so, includeUsage)
					return
				}
				write(w, http.StatusOK, chatCompletion)
			case r.Method == http.MethodGet && r.URL.Path == "/v1/models":
				_, _ = io.Copy(io.Discard, r.Body)
				write(w, http.StatusOK, modelList)
			default:
				// Drain the request like a real provider would read it.
				_, _ = io.Copy(io.Discard, r.Body)
				write(w, http.StatusNotFound, notFound)
			}
		}),
	}
	log.Fatal(srv.Serve(ln))
}
