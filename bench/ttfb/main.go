// Command ttfb measures the time to first byte of streamed chat completions
// through two sites, a (plain reverse proxy) and b (the gateway), for the
// streaming part of the overhead benchmark (bench/run.sh).
//
// It sends -n streamed requests per site, one at a time and alternating
// (a b, b a, a b, ...) so that drift of the machine affects both alike and
// neither site always goes first, each on a keep-alive connection of its own
// site, after -warmup requests per site. For
// each request it records
//
//   - first byte:  the first byte of the response (headers), what curl
//     reports as %{time_starttransfer};
//   - first event: the first byte of the body, i.e. the first SSE event
//     (first token) reaching the client; this is the judged TTFB, since a
//     proxy that sent headers early but held events back would look fast on
//     the first;
//   - total:       the end of the stream (data: [DONE]).
//
// Every answer must be 200 text/event-stream ending in data: [DONE], and
// carry the usage chunk when the request asked for it; anything else is an
// error (exit status 1). It prints per-site median and p99 and the ratio of
// the medians of the first event b/a against -target, and ends with a line
// "STREAM RESULT: PASS" or "STREAM RESULT: FAIL" (exit status 0 either way).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"
)

type sample struct {
	firstByte, firstEvent, total time.Duration
}

type site struct {
	name    string
	url     string
	client  *http.Client
	samples []sample
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("ttfb: ")
	plainURL := flag.String("a", "", "URL of /v1/chat/completions through the plain reverse proxy")
	gatewayURL := flag.String("b", "", "URL of /v1/chat/completions through the gateway")
	key := flag.String("key", os.Getenv("BENCH_KEY"), "API key sent to both sites as Bearer (default $BENCH_KEY)")
	n := flag.Int("n", 200, "measured requests per site")
	warmup := flag.Int("warmup", 20, "warm-up requests per site")
	model := flag.String("model", "bench", "model of the requests")
	includeUsage := flag.Bool("include-usage", true, "set stream_options.include_usage (and require the usage chunk)")
	target := flag.Float64("target", 1.05, "target: median first-event time b/a at most this")
	timeout := flag.Duration("timeout", 30*time.Second, "timeout of one request")
	flag.Parse()
	if *plainURL == "" || *gatewayURL == "" || *n < 1 || *warmup < 0 {
		flag.Usage()
		os.Exit(2)
	}
	for _, u := range []string{*plainURL, *gatewayURL} {
		if err := checkLoopback(u); err != nil {
			log.Fatal(err)
		}
	}

	body := fmt.Sprintf(`{"model":%q,"stream":true,"messages":[{"role":"user","content":"Hello"}]}`, *model)
	if *includeUsage {
		body = fmt.Sprintf(`{"model":%q,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello"}]}`, *model)
	}
	sites := []*site{
		{name: "a", url: *plainURL, client: newClient()},
		{name: "b", url: *gatewayURL, client: newClient()},
	}
	for i := 0; i < *warmup+*n; i++ {
		// a, b in even rounds and b, a in odd ones: no site always goes first.
		order := []*site{sites[0], sites[1]}
		if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, s := range order {
			smp, err := measure(s, *key, body, *includeUsage, *timeout)
			if err != nil {
				log.Fatalf("site %s (%s), request %d: %v", s.name, s.url, i+1, err)
			}
			if i >= *warmup {
				s.samples = append(s.samples, smp)
			}
		}
	}

	a, b := sites[0], sites[1]
	fmt.Printf("%-22s %10s %10s %8s %10s\n", "ms (median / p99)", "a", "b", "b/a", "b-a")
	row := func(name string, get func(sample) time.Duration, p float64) (float64, float64) {
		va, vb := pct(a.samples, get, p), pct(b.samples, get, p)
		fmt.Printf("%-22s %10.3f %10.3f %8.3f %10.3f\n", name, va, vb, vb/va, vb-va)
		return va, vb
	}
	firstByte := func(s sample) time.Duration { return s.firstByte }
	firstEvent := func(s sample) time.Duration { return s.firstEvent }
	total := func(s sample) time.Duration { return s.total }
	row("first byte p50", firstByte, 50)
	row("first byte p99", firstByte, 99)
	ma, mb := row("first event p50", firstEvent, 50)
	row("first event p99", firstEvent, 99)
	row("stream total p50", total, 50)
	row("stream total p99", total, 99)
	ratio := mb / ma
	verdict := "FAIL"
	if ratio <= *target {
		verdict = "PASS"
	}
	fmt.Println()
	fmt.Printf("streaming TTFB (first event) ratio b/a (medians): %.3f   target <= %.2f   %s\n", ratio, *target, verdict)
	fmt.Printf("STREAM RESULT: %s\n", verdict)
}

func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("bad URL %q: %w", raw, err)
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("URL %q: only loopback IP addresses are allowed", raw)
	}
	return nil
}

// newClient keeps one connection per site, so every measured request runs
// on a warm keep-alive connection.
func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
	}}
}

// measure sends one streamed request and times it.
func measure(s *site, key, body string, wantUsage bool, timeout time.Duration) (sample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var smp sample
	var start time.Time
	trace := &httptrace.ClientTrace{
		GotFirstResponseByte: func() { smp.firstByte = time.Since(start) },
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, s.url, strings.NewReader(body))
	if err != nil {
		return smp, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	start = time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return smp, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	chunk := make([]byte, 4096)
	for {
		k, err := resp.Body.Read(chunk)
		if k > 0 {
			if buf.Len() == 0 {
				smp.firstEvent = time.Since(start)
			}
			buf.Write(chunk[:k])
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return smp, fmt.Errorf("reading the stream: %w", err)
		}
	}
	smp.total = time.Since(start)
	out := buf.String()
	if resp.StatusCode != http.StatusOK {
		return smp, fmt.Errorf("status %d: %s", resp.StatusCode, out)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return smp, fmt.Errorf("Content-Type %q, want text/event-stream: %s", ct, out)
	}
	if !strings.HasSuffix(strings.TrimSpace(out), "data: [DONE]") {
		return smp, fmt.Errorf("stream does not end with data: [DONE]: %q", out)
	}
	if wantUsage && !strings.Contains(out, `"usage"`) {
		return smp, fmt.Errorf("stream without the usage chunk: %q", out)
	}
	return smp, nil
}

// pct returns the p-th percentile (nearest rank) of get over samples, in ms.
func pct(samples []sample, get func(sample) time.Duration, p float64) float64 {
	v := make([]float64, len(samples))
	for i, s := range samples {
		v[i] = float64(get(s)) / float64(time.Millisecond)
	}
	sort.Float64s(v)
	rank := int(math.Ceil(p / 100 * float64(len(v))))
	rank = min(max(rank, 1), len(v))
	return v[rank-1]
}
