// Command mockprovider is the upstream of the overhead benchmark
// (bench/run.sh): a minimal OpenAI-shaped provider on loopback that answers
// every POST /v1/chat/completions with the same chat.completion JSON,
// including a usage object, and GET /v1/models with a one-model list. It does
// as little work as possible so that the benchmark measures the gateway.
package main

import (
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

func write(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "loopback address to listen on")
	flag.Parse()

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
			// Drain the request like a real provider would read it.
			_, _ = io.Copy(io.Discard, r.Body)
			switch {
			case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
				write(w, http.StatusOK, chatCompletion)
			case r.Method == http.MethodGet && r.URL.Path == "/v1/models":
				write(w, http.StatusOK, modelList)
			default:
				write(w, http.StatusNotFound, notFound)
			}
		}),
	}
	log.Fatal(srv.Serve(ln))
}
