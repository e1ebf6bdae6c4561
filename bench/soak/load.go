//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// outcomeOK is a 200 with a complete, valid body. Everything else is a
// failure kind: "status NNN code", "refused" (caddy down), "cut" (the
// answer started but did not finish), "timeout", "transport".
const outcomeOK = "ok"

// sent is one request: its account and what the client saw.
type sent struct {
	account string
	outcome string
}

// load is the clients: workers share a rate limit and record every request
// by its model name.
type load struct {
	site     string
	accounts []string
	keys     map[string]string
	tokens   chan struct{}
	client   *http.Client

	seq atomic.Int64
	wg  sync.WaitGroup

	mu       sync.Mutex
	reqs     map[string]sent   // model → request
	examples map[string]string // failure kind → the first error of that kind
}

func newLoad(site string, keys map[string]string, rate int) *load {
	l := &load{
		site: site, keys: keys, tokens: make(chan struct{}, rate),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConns: 64, MaxIdleConnsPerHost: 64, DisableCompression: true,
		}},
		reqs: map[string]sent{}, examples: map[string]string{},
	}
	for a := range keys {
		l.accounts = append(l.accounts, a)
	}
	sort.Strings(l.accounts)
	return l
}

// start runs the token ticker and workers until ctx ends.
func (l *load) start(ctx context.Context, workers int) {
	every := time.Second / time.Duration(cap(l.tokens))
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				select {
				case l.tokens <- struct{}{}:
				default:
				}
			}
		}
	}()
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-l.tokens:
				}
				acct := l.accounts[(w+i)%len(l.accounts)]
				model := fmt.Sprintf("mock-soak-%08d", l.seq.Add(1))
				// A request is never cancelled by the end of the soak: it
				// runs to its answer (or the client timeout).
				out := l.chat(l.keys[acct], model, (w+i)%3)
				l.mu.Lock()
				l.reqs[model] = sent{account: acct, outcome: out}
				l.mu.Unlock()
			}
		}()
	}
}

func (l *load) wait() { l.wg.Wait() }

// chat sends one chat completion: mode 0 JSON, 1 a stream asking for
// usage, 2 a stream not asking (the gateway asks the provider for it). It
// returns outcomeOK or the kind of failure.
func (l *load) chat(key, model string, mode int) string {
	body := map[string]any{
		"model":    model,
		"messages": []any{map[string]any{"role": "user", "content": "Hello from the soak"}},
	}
	if mode > 0 {
		body["stream"] = true
	}
	if mode == 1 {
		body["stream_options"] = map[string]any{"include_usage": true}
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequest("POST", l.site+"/v1/chat/completions", bytes.NewReader(b))
	if err != nil {
		return "transport"
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := l.client.Do(req)
	if err != nil {
		kind := errKind(err)
		l.example(kind, err.Error())
		return kind
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal(out, &e)
		return strings.TrimSpace(fmt.Sprintf("status %d %s", resp.StatusCode, e.Error.Code))
	}
	if err != nil {
		l.example("cut", "reading the answer: "+err.Error())
		return "cut"
	}
	if mode == 0 {
		var c struct {
			Choices []any `json:"choices"`
			Usage   struct {
				Prompt int `json:"prompt_tokens"`
			} `json:"usage"`
		}
		if json.Unmarshal(out, &c) != nil || len(c.Choices) == 0 || c.Usage.Prompt == 0 {
			l.example("cut", fmt.Sprintf("incomplete JSON answer, ends %q", out[max(0, len(out)-80):]))
			return "cut"
		}
		return outcomeOK
	}
	s := strings.TrimSpace(string(out))
	if !strings.HasSuffix(s, "data: [DONE]") || (mode == 1 && !strings.Contains(s, `"usage"`)) {
		l.example("cut", fmt.Sprintf("incomplete stream, ends %q", s[max(0, len(s)-80):]))
		return "cut"
	}
	return outcomeOK
}

// example keeps the first error message of a failure kind, for the report.
func (l *load) example(kind, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.examples[kind]; !ok {
		l.examples[kind] = msg
	}
}

// errKind classifies a transport error.
func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		// The connection went away before the answer's headers: a request
		// in flight at a kill.
		return "cut"
	default:
		return "transport"
	}
}

// results returns the requests by model.
func (l *load) results() map[string]sent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reqs
}
