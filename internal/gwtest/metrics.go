package gwtest

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Series is one sample of Caddy's admin /metrics.
type Series struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Scrape reads http://<admin>/metrics and returns its samples and the whole
// text.
func Scrape(t testing.TB, g *Gateway) ([]Series, string) {
	t.Helper()
	status, body := g.Admin("GET", "/metrics", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", status, body)
	}
	var out []Series
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		out = append(out, parseSample(t, line))
	}
	return out, string(body)
}

// parseSample parses one sample line: name{labels} value.
func parseSample(t testing.TB, line string) Series {
	t.Helper()
	sp := strings.LastIndexByte(line, ' ')
	v, err := strconv.ParseFloat(line[sp+1:], 64)
	if err != nil {
		t.Fatalf("metrics line %q: %v", line, err)
	}
	s := Series{Name: line[:sp], Labels: map[string]string{}, Value: v}
	if i := strings.IndexByte(s.Name, '{'); i >= 0 {
		for _, kv := range splitLabels(s.Name[i+1 : len(s.Name)-1]) {
			k, val, _ := strings.Cut(kv, "=")
			uq, err := strconv.Unquote(val)
			if err != nil {
				t.Fatalf("metrics label %q: %v", kv, err)
			}
			s.Labels[k] = uq
		}
		s.Name = s.Name[:i]
	}
	return s
}

// splitLabels splits `a="x",b="y,z"` at the commas between labels.
func splitLabels(s string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// Metric sums the samples of name whose labels include match; ok is false
// when there is none.
func Metric(series []Series, name string, match map[string]string) (float64, bool) {
	sum, ok := 0.0, false
next:
	for _, s := range series {
		if s.Name != name {
			continue
		}
		for k, v := range match {
			if s.Labels[k] != v {
				continue next
			}
		}
		sum, ok = sum+s.Value, true
	}
	return sum, ok
}

// AssertNoHolds checks that nothing is held: the holds metrics are 0.
func AssertNoHolds(t testing.TB, g *Gateway) {
	t.Helper()
	series, _ := Scrape(t, g)
	n, ok := Metric(series, "caddy_ai_gateway_holds_in_flight", nil)
	amount, _ := Metric(series, "caddy_ai_gateway_held_amount", nil)
	if !ok || n != 0 || amount != 0 {
		t.Fatalf("holds in flight %v (reported %v), held amount %v; want 0", n, ok, amount)
	}
}

// WaitNoHolds polls the holds metric until no hold is left, failing the
// test after within, and returns how long that took.
func WaitNoHolds(t testing.TB, g *Gateway, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		series, _ := Scrape(t, g)
		if n, ok := Metric(series, "caddy_ai_gateway_holds_in_flight", nil); ok && n == 0 {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("holds still in flight after %v", within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
