package caddyauth

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/metask/caddy-ai-gateway/caddyproxy"
)

// clientRecorder is the client side of a meter: an httptest.ResponseRecorder
// that counts flushes and can fail writes (a client that went away).
type clientRecorder struct {
	*httptest.ResponseRecorder
	flushes  int
	infos    []int // informational (1xx) statuses sent
	failFrom int   // fail writes once this many bytes were taken (<0: never)
	taken    int
}

func newClientRecorder() *clientRecorder {
	return &clientRecorder{ResponseRecorder: httptest.NewRecorder(), failFrom: -1}
}

func (c *clientRecorder) Write(p []byte) (int, error) {
	if c.failFrom >= 0 && c.taken+len(p) > c.failFrom {
		return 0, errors.New("client gone")
	}
	c.taken += len(p)
	return c.ResponseRecorder.Write(p)
}

func (c *clientRecorder) WriteHeader(status int) {
	if status >= 100 && status < 200 {
		c.infos = append(c.infos, status)
		return
	}
	c.ResponseRecorder.WriteHeader(status)
}

func (c *clientRecorder) FlushError() error {
	c.flushes++
	c.ResponseRecorder.Flush()
	return nil
}

func sse(data ...string) string {
	var b strings.Builder
	for _, d := range data {
		b.WriteString("data: " + d + "\n\n")
	}
	return b.String()
}

const (
	chunkHello = `{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"Hello"}}]}`
	chunkWorld = `{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":" wörld"},"finish_reason":"stop"}]}`
	chunkUsage = `{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":2}}}`
)

var wantStreamUsage = caddyproxy.Usage{PromptTokens: 11, CompletionTokens: 7, TotalTokens: 18, CachedTokens: 3, ReasoningTokens: 2}

func streamMeter(t *testing.T, drop bool) (*meter, *clientRecorder) {
	t.Helper()
	rec := newClientRecorder()
	m := newMeter(rec, drop)
	m.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	m.Header().Set("Content-Length", "12345")
	m.WriteHeader(http.StatusOK)
	return m, rec
}

func TestMeterStreamDropsUsageChunkAcrossAnySplit(t *testing.T) {
	in := sse(chunkHello, chunkWorld, chunkUsage, "[DONE]")
	want := sse(chunkHello, chunkWorld, "[DONE]")
	for split := 1; split < len(in); split += 7 {
		m, rec := streamMeter(t, true)
		for i := 0; i < len(in); i += split {
			p := []byte(in[i:min(i+split, len(in))])
			n, err := m.Write(p)
			if err != nil || n != len(p) {
				t.Fatalf("split %d: Write = %d, %v; want %d, nil", split, n, err, len(p))
			}
		}
		m.finish()
		if got := rec.Body.String(); got != want {
			t.Fatalf("split %d: client got\n%q\nwant\n%q", split, got, want)
		}
		u, ok, chars := m.usage()
		if !ok || u != wantStreamUsage {
			t.Fatalf("split %d: usage %+v, %v", split, u, ok)
		}
		if chars != int64(utf8.RuneCountInString("Hello wörld")) {
			t.Fatalf("split %d: streamed chars %d", split, chars)
		}
		if rec.Header().Get("Content-Length") != "" {
			t.Fatal("Content-Length kept although the stream may shrink")
		}
		if m.written != int64(len(in)) {
			t.Fatalf("written %d, want %d", m.written, len(in))
		}
	}
}

func TestMeterStreamKeepsUsageChunkWhenClientAsked(t *testing.T) {
	in := sse(chunkHello, chunkUsage, "[DONE]")
	m, rec := streamMeter(t, false)
	if _, err := m.Write([]byte(in)); err != nil {
		t.Fatal(err)
	}
	m.finish()
	if rec.Body.String() != in {
		t.Fatalf("client got %q, want the stream unchanged", rec.Body.String())
	}
	if u, ok, _ := m.usage(); !ok || u != wantStreamUsage {
		t.Fatalf("usage %+v, %v", u, ok)
	}
}

func TestMeterStreamViaReadFrom(t *testing.T) {
	in := sse(chunkHello, chunkWorld, chunkUsage, "[DONE]")
	m, rec := streamMeter(t, true)
	// io.Copy picks ReadFrom; the meter must not hand the body to the
	// client's connection directly.
	n, err := io.Copy(m, struct{ io.Reader }{strings.NewReader(in)})
	if err != nil || n != int64(len(in)) {
		t.Fatalf("io.Copy = %d, %v", n, err)
	}
	m.finish()
	if got, want := rec.Body.String(), sse(chunkHello, chunkWorld, "[DONE]"); got != want {
		t.Fatalf("client got %q, want %q", got, want)
	}
	if u, ok, _ := m.usage(); !ok || u != wantStreamUsage {
		t.Fatalf("usage %+v, %v", u, ok)
	}
	// JSON through ReadFrom is captured too.
	rec2 := newClientRecorder()
	m2 := newMeter(rec2, false)
	m2.Header().Set("Content-Type", "application/json")
	body := `{"id":"x","usage":{"prompt_tokens":4,"completion_tokens":6}}`
	if _, err := m2.ReadFrom(strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if u, ok, _ := m2.usage(); !ok || u.PromptTokens != 4 || u.CompletionTokens != 6 || u.TotalTokens != 10 {
		t.Fatalf("JSON via ReadFrom: usage %+v, %v", u, ok)
	}
	if rec2.Code != http.StatusOK || rec2.Body.String() != body {
		t.Fatalf("JSON via ReadFrom: client got %d %q", rec2.Code, rec2.Body.String())
	}
}

func TestMeterFlushPassesThroughAndNothingCompleteIsHeld(t *testing.T) {
	m, rec := streamMeter(t, true)
	first := sse(chunkHello)
	if _, err := m.Write([]byte(first)); err != nil {
		t.Fatal(err)
	}
	// A complete, non-usage event reaches the client before any flush.
	if rec.Body.String() != first {
		t.Fatalf("complete event held back: client has %q", rec.Body.String())
	}
	if err := http.NewResponseController(m).Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if rec.flushes != 1 || !rec.Flushed {
		t.Fatalf("flush did not reach the client (flushes %d)", rec.flushes)
	}
	// The start of what may be the usage chunk is held, and released as soon
	// as it shows it is not.
	part := `data: {"id":"c1","choices":[`
	if _, err := m.Write([]byte(part)); err != nil {
		t.Fatal(err)
	}
	if rec.Body.String() != first {
		t.Fatalf("candidate usage chunk passed early: %q", rec.Body.String())
	}
	if _, err := m.Write([]byte(`{"index":0,"delta":{"content":"x"}}]}` + "\n")); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(rec.Body.String(), `"content":"x"}}]}`+"\n") {
		t.Fatalf("event released late: %q", rec.Body.String())
	}
	if err := m.FlushError(); err != nil || rec.flushes != 2 {
		t.Fatalf("FlushError = %v, flushes %d", err, rec.flushes)
	}
}

func TestMeterFinishReleasesIncompleteTail(t *testing.T) {
	m, rec := streamMeter(t, true)
	in := sse(chunkHello) + "data: " + chunkUsage[:40]
	if _, err := m.Write([]byte(in)); err != nil {
		t.Fatal(err)
	}
	m.finish()
	if rec.Body.String() != in {
		t.Fatalf("client got %q, want everything incl. the cut event %q", rec.Body.String(), in)
	}
	if _, ok, chars := m.usage(); ok || chars != 5 {
		t.Fatalf("cut stream: usage ok %v, chars %d; want none and 5", ok, chars)
	}
}

func TestMeterClientGoneStopsCopy(t *testing.T) {
	rec := newClientRecorder()
	rec.failFrom = 10
	m := newMeter(rec, true)
	m.Header().Set("Content-Type", "text/event-stream")
	m.WriteHeader(http.StatusOK)
	if _, err := m.Write([]byte(sse(chunkHello))); err == nil {
		t.Fatal("write to a gone client reported success")
	}
	if m.clientErr == nil {
		t.Fatal("client error not kept")
	}
	if n, err := m.Write([]byte(sse(chunkWorld))); err == nil || n != 0 {
		t.Fatalf("later write = %d, %v; want 0 and the client's error", n, err)
	}
	// The stream is still metered for the estimate.
	if _, ok, chars := m.usage(); ok || chars != int64(utf8.RuneCountInString("Hello wörld")) {
		t.Fatalf("usage ok %v chars %d", ok, chars)
	}
}

func TestMeterStreamErrorStatusIsNotFiltered(t *testing.T) {
	rec := newClientRecorder()
	m := newMeter(rec, true)
	m.Header().Set("Content-Type", "text/event-stream")
	m.WriteHeader(http.StatusTooManyRequests)
	in := sse(chunkUsage)
	if _, err := m.Write([]byte(in)); err != nil {
		t.Fatal(err)
	}
	m.finish()
	if rec.Body.String() != in || rec.Code != http.StatusTooManyRequests {
		t.Fatalf("error stream changed: %d %q", rec.Code, rec.Body.String())
	}
}

func TestMeterEncodedStreamPassesUnmetered(t *testing.T) {
	rec := newClientRecorder()
	m := newMeter(rec, true)
	m.Header().Set("Content-Type", "text/event-stream")
	m.Header().Set("Content-Encoding", "gzip")
	m.WriteHeader(http.StatusOK)
	in := gzipped(t, sse(chunkHello, chunkUsage))
	if _, err := m.Write(in); err != nil {
		t.Fatal(err)
	}
	m.finish()
	if !bytes.Equal(rec.Body.Bytes(), in) {
		t.Fatal("encoded stream changed")
	}
	if m.filter != nil || !m.stream {
		t.Fatal("encoded stream was filtered")
	}
	if _, ok, _ := m.usage(); ok {
		t.Fatal("usage read from an encoded stream")
	}
}

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func jsonMeter(status int, encoding string) (*meter, *clientRecorder) {
	rec := newClientRecorder()
	m := newMeter(rec, false)
	m.Header().Set("Content-Type", "application/json")
	if encoding != "" {
		m.Header().Set("Content-Encoding", encoding)
	}
	m.WriteHeader(status)
	return m, rec
}

func TestMeterJSONUsage(t *testing.T) {
	body := `{"id":"x","choices":[{"message":{"content":"héllo"}}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":4}}}`
	m, rec := jsonMeter(http.StatusOK, "")
	for i := 0; i < len(body); i += 10 {
		if _, err := m.Write([]byte(body[i:min(i+10, len(body))])); err != nil {
			t.Fatal(err)
		}
	}
	m.finish()
	if rec.Body.String() != body {
		t.Fatal("JSON body changed")
	}
	u, ok, chars := m.usage()
	if !ok || u != (caddyproxy.Usage{PromptTokens: 9, CompletionTokens: 3, TotalTokens: 12, CachedTokens: 4}) {
		t.Fatalf("usage %+v, %v", u, ok)
	}
	if chars != int64(utf8.RuneCountInString(body)) {
		t.Fatalf("chars %d, want the body's %d runes", chars, utf8.RuneCountInString(body))
	}

	// gzip-encoded JSON is decoded to read the usage; the client gets it as sent.
	gz := gzipped(t, body)
	m, rec = jsonMeter(http.StatusOK, "gzip")
	if _, err := m.Write(gz); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec.Body.Bytes(), gz) {
		t.Fatal("encoded JSON changed")
	}
	if u2, ok, _ := m.usage(); !ok || u2 != u {
		t.Fatalf("gzip JSON usage %+v, %v", u2, ok)
	}

	// No usage object: not ok, chars for the estimate.
	m, _ = jsonMeter(http.StatusOK, "")
	_, _ = m.Write([]byte(`{"id":"x"}`))
	if _, ok, chars := m.usage(); ok || chars != 10 {
		t.Fatalf("no usage: ok %v chars %d", ok, chars)
	}

	// Error bodies are neither captured nor metered.
	m, _ = jsonMeter(http.StatusInternalServerError, "")
	_, _ = m.Write([]byte(`{"error":{},"usage":{"prompt_tokens":1}}`))
	if _, ok, chars := m.usage(); ok || chars != 0 || len(m.body) != 0 {
		t.Fatalf("error body: ok %v chars %d captured %d", ok, chars, len(m.body))
	}
}

func TestMeterJSONOverflowReadsUsageFromTail(t *testing.T) {
	// A body larger than captureLimit (a big embeddings batch) with "usage"
	// at its end, as OpenAI puts it, and a decoy "usage" string early on.
	var b bytes.Buffer
	b.WriteString(`{"object":"list","note":"\"usage\": {\"prompt_tokens\": 999}","data":[`)
	for i := 0; b.Len() < captureLimit+tailLimit+1000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"object":"embedding","index":%d,"embedding":[0.0123,-0.0456,0.0789,0.1011]}`, i)
	}
	b.WriteString(`],"model":"emb","usage":{"prompt_tokens":123456,"total_tokens":123456}}`)
	body := b.Bytes()

	for _, chunk := range []int{32 << 10, 7777, len(body)} {
		m, rec := jsonMeter(http.StatusOK, "")
		for i := 0; i < len(body); i += chunk {
			if _, err := m.Write(body[i:min(i+chunk, len(body))]); err != nil {
				t.Fatal(err)
			}
		}
		if !m.overflow || len(m.body) != 0 || len(m.tail) > tailLimit {
			t.Fatalf("chunk %d: overflow %v, body %d, tail %d", chunk, m.overflow, len(m.body), len(m.tail))
		}
		if !bytes.Equal(rec.Body.Bytes(), body) {
			t.Fatalf("chunk %d: client body differs", chunk)
		}
		u, ok, chars := m.usage()
		if !ok || u.PromptTokens != 123456 || u.TotalTokens != 123456 || u.CompletionTokens != 0 {
			t.Fatalf("chunk %d: tail usage %+v, %v", chunk, u, ok)
		}
		if chars != int64(len(body)) {
			t.Fatalf("chunk %d: chars %d, want %d", chunk, chars, len(body))
		}
	}

	// A large body without usage at its end is not ok.
	m, _ := jsonMeter(http.StatusOK, "")
	_, _ = m.Write(body[:len(body)-80])
	_, _ = m.Write([]byte(`]}`))
	if _, ok, _ := m.usage(); ok {
		t.Fatal("usage found in a tail without one")
	}
}

func TestMeterImpliedHeaderAndInformational(t *testing.T) {
	rec := newClientRecorder()
	m := newMeter(rec, false)
	m.Header().Set("Content-Type", "application/json")
	m.WriteHeader(http.StatusEarlyHints) // informational: not final
	if m.wroteHeader || len(rec.infos) != 1 || rec.infos[0] != http.StatusEarlyHints {
		t.Fatalf("1xx: taken as final %v, passed on %v", m.wroteHeader, rec.infos)
	}
	if _, err := m.Write([]byte(`{"usage":{"prompt_tokens":1,"completion_tokens":2}}`)); err != nil {
		t.Fatal(err)
	}
	if !m.wroteHeader || m.status != http.StatusOK {
		t.Fatalf("Write without WriteHeader: wroteHeader %v status %d", m.wroteHeader, m.status)
	}
	m.WriteHeader(http.StatusTeapot) // superfluous: ignored
	if m.status != http.StatusOK {
		t.Fatalf("second WriteHeader changed status to %d", m.status)
	}
	if u, ok, _ := m.usage(); !ok || u.CompletionTokens != 2 {
		t.Fatalf("usage %+v, %v", u, ok)
	}
}
