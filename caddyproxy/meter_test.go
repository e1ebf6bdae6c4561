package caddyproxy

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

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
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

var wantStreamUsage = openaiwire.Usage{PromptTokens: 11, CompletionTokens: 7, TotalTokens: 18, CachedTokens: 3, ReasoningTokens: 2}

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

// TestMeterStreamRemovesUsageMembers: with include_usage injected, the
// "usage" members the provider adds to the other chunks (null, or the usage
// so far) are removed too, and the usage is still read.
func TestMeterStreamRemovesUsageMembers(t *testing.T) {
	withUsage := func(chunk, usage string) string {
		return strings.TrimSuffix(chunk, "}") + `,"usage":` + usage + "}"
	}
	in := sse(withUsage(chunkHello, "null"), withUsage(chunkWorld, `{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}`), chunkUsage, "[DONE]")
	for split := 1; split < len(in); split += 5 {
		m, rec := streamMeter(t, true)
		for i := 0; i < len(in); i += split {
			if _, err := m.Write([]byte(in[i:min(i+split, len(in))])); err != nil {
				t.Fatal(err)
			}
		}
		m.finish()
		if got, want := rec.Body.String(), sse(chunkHello, chunkWorld, "[DONE]"); got != want {
			t.Fatalf("split %d: client got\n%q\nwant\n%q", split, got, want)
		}
		if u, ok, _ := m.usage(); !ok || u != wantStreamUsage {
			t.Fatalf("split %d: usage %+v, %v", split, u, ok)
		}
	}
	// The client asked for usage: nothing is removed.
	m, rec := streamMeter(t, false)
	if _, err := m.Write([]byte(in)); err != nil {
		t.Fatal(err)
	}
	m.finish()
	if rec.Body.String() != in {
		t.Fatalf("client got %q, want the stream unchanged", rec.Body.String())
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

// TestMeterDecodesCompressedStream: a provider that gzips its stream
// although asked for identity gets it decoded on the way: the client
// receives the plain events (without the usage chunk the gateway asked
// for), each as soon as its compressed bytes arrive, and the usage is read.
func TestMeterDecodesCompressedStream(t *testing.T) {
	rec := newClientRecorder()
	m := newMeter(rec, true)
	m.Header().Set("Content-Type", "text/event-stream")
	m.Header().Set("Content-Encoding", "gzip")
	m.Header().Set("Content-Length", "999")
	m.WriteHeader(http.StatusOK)
	if h := rec.Header(); h.Get("Content-Encoding") != "" || h.Get("Content-Length") != "" {
		t.Fatalf("client headers %v: the body goes out decoded", h)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	for _, chunk := range []string{chunkHello, chunkUsage} {
		zw.Write([]byte(sse(chunk)))
		zw.Flush()
		if _, err := m.Write(bytes.Clone(buf.Bytes())); err != nil {
			t.Fatal(err)
		}
		buf.Reset()
		if chunk == chunkHello && rec.Body.String() != sse(chunkHello) {
			t.Fatalf("after the first event's bytes the client has %q", rec.Body.String())
		}
	}
	zw.Close()
	m.Write(buf.Bytes())
	m.finish()
	if rec.Body.String() != sse(chunkHello) {
		t.Fatalf("client got %q, want the first event only", rec.Body.String())
	}
	if u, ok, _ := m.usage(); !ok || u != (openaiwire.Usage{PromptTokens: 11, CompletionTokens: 7, TotalTokens: 18, CachedTokens: 3, ReasoningTokens: 2}) {
		t.Fatalf("usage %+v %v", u, ok)
	}
}

// TestMeterEncodedStreamPassesUnmetered: an encoding the gateway cannot
// undo goes through as it came, and nothing is read from it.
func TestMeterEncodedStreamPassesUnmetered(t *testing.T) {
	rec := newClientRecorder()
	m := newMeter(rec, true)
	m.Header().Set("Content-Type", "text/event-stream")
	m.Header().Set("Content-Encoding", "br")
	m.WriteHeader(http.StatusOK)
	in := gzipped(t, sse(chunkHello, chunkUsage)) // any opaque bytes
	if _, err := m.Write(in); err != nil {
		t.Fatal(err)
	}
	m.finish()
	if !bytes.Equal(rec.Body.Bytes(), in) || rec.Header().Get("Content-Encoding") != "br" {
		t.Fatal("encoded stream changed")
	}
	if m.filter != nil || m.dec != nil || !m.stream {
		t.Fatal("encoded stream was filtered")
	}
	if _, ok, _ := m.usage(); ok {
		t.Fatal("usage read from an encoded stream")
	}
}

// TestMeterCorruptCompressedStream: a stream that claims gzip but is not
// stops at the first bytes (the handler sees the error) and has no usage.
func TestMeterCorruptCompressedStream(t *testing.T) {
	rec := newClientRecorder()
	m := newMeter(rec, false)
	m.Header().Set("Content-Type", "text/event-stream")
	m.Header().Set("Content-Encoding", "gzip")
	m.WriteHeader(http.StatusOK)
	m.Write([]byte(sse(chunkHello)))
	if _, err := m.Write([]byte(sse(chunkUsage))); err == nil {
		t.Fatal("writing after corrupt data succeeded")
	}
	m.finish()
	m.stopDecoder()
	if rec.Body.Len() != 0 {
		t.Fatalf("client got %q", rec.Body.String())
	}
	if _, ok, _ := m.usage(); ok {
		t.Fatal("usage from a corrupt stream")
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
	if !ok || u != (openaiwire.Usage{PromptTokens: 9, CompletionTokens: 3, TotalTokens: 12, CachedTokens: 4}) {
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

	// Error bodies are metered too: usage there is billed like any other.
	m, _ = jsonMeter(http.StatusBadRequest, "")
	_, _ = m.Write([]byte(`{"error":{},"usage":{"prompt_tokens":1}}`))
	if u, ok, _ := m.usage(); !ok || u.PromptTokens != 1 {
		t.Fatalf("error body with usage: %+v ok %v", u, ok)
	}
	m, _ = jsonMeter(http.StatusInternalServerError, "")
	_, _ = m.Write([]byte(`<html>bad gateway</html>`))
	if _, ok, _ := m.usage(); ok {
		t.Fatal("an HTML error page has usage")
	}
}

// bigJSONBody is a body larger than captureLimit (a big embeddings batch)
// with its usage member first, in the middle or last. Decoys surround it: a
// "usage" text in a string and usage objects nested in the data, and a
// 300 KiB member after it.
func bigJSONBody(where string) []byte {
	const usage = `"usage":{"prompt_tokens":123456,"total_tokens":123457,"prompt_tokens_details":{"cached_tokens":7}}`
	var b bytes.Buffer
	b.WriteString(`{`)
	if where == "first" {
		b.WriteString(usage + `,`)
	}
	b.WriteString(`"object":"list","note":"\"usage\": {\"prompt_tokens\": 999}","data":[`)
	for i := 0; b.Len() < captureLimit/2; i++ {
		fmt.Fprintf(&b, `{"object":"embedding","index":%d,"embedding":[0.0123,-0.0456,0.0789,0.1011],"usage":{"prompt_tokens":1}},`, i)
	}
	b.WriteString(`{"usage":{"prompt_tokens":2}}],`)
	if where == "middle" {
		b.WriteString(usage + `,`)
	}
	b.WriteString(`"more":[`)
	for i := 0; b.Len() < captureLimit+(512<<10); i++ {
		fmt.Fprintf(&b, `{"index":%d,"text":"usage \"usage\":{\"prompt_tokens\":5}"},`, i)
	}
	b.WriteString(`{}],"trailer":"` + strings.Repeat("x", 300<<10) + `"`)
	if where == "last" {
		b.WriteString(`,` + usage)
	}
	b.WriteString(`}`)
	return b.Bytes()
}

func TestMeterJSONOverflowFindsUsageAnywhere(t *testing.T) {
	want := openaiwire.Usage{PromptTokens: 123456, TotalTokens: 123457, CachedTokens: 7}
	for _, where := range []string{"first", "middle", "last"} {
		body := bigJSONBody(where)
		if len(body) <= captureLimit {
			t.Fatalf("test bug: body of %d bytes fits", len(body))
		}
		for _, chunk := range []int{32 << 10, 7777, 1 << 20, len(body)} {
			m, rec := jsonMeter(http.StatusOK, "")
			writes := 0
			for i := 0; i < len(body); i += chunk {
				p := body[i:min(i+chunk, len(body))]
				if n, err := m.Write(p); err != nil || n != len(p) {
					t.Fatalf("%s, chunk %d: Write = %d, %v", where, chunk, n, err)
				}
				writes++
			}
			if !m.overflow || m.body != nil {
				t.Fatalf("%s, chunk %d: overflow %v, still keeping %d bytes", where, chunk, m.overflow, len(m.body))
			}
			if !bytes.Equal(rec.Body.Bytes(), body) {
				t.Fatalf("%s, chunk %d: client body differs", where, chunk)
			}
			// ok is what keeps settlement from estimating.
			u, ok, chars := m.usage()
			if !ok || u != want {
				t.Fatalf("%s, chunk %d (%d writes): usage %+v, %v; want %+v", where, chunk, writes, u, ok, want)
			}
			if chars != int64(len(body)) {
				t.Fatalf("%s, chunk %d: chars %d, want %d", where, chunk, chars, len(body))
			}
		}
	}
}

func TestMeterJSONOverflowWithoutUsage(t *testing.T) {
	body := bigJSONBody("none")
	cases := []struct {
		name     string
		body     []byte
		encoding string
	}{
		// Only nested usage objects and "usage" texts: none at the top.
		{"no top-level usage", body, ""},
		// Cut short: not JSON, whatever it holds.
		{"truncated", append(bigJSONBody("first")[:captureLimit+100], `]}`...), ""},
		// Encoded and too large to decode: not read.
		{"gzip", gzipped(t, string(bigJSONBody("last"))), "gzip"},
	}
	for _, tc := range cases {
		if tc.encoding != "" {
			// Make the compressed body overflow too.
			tc.body = append(tc.body, bytes.Repeat([]byte{0}, captureLimit)...)
		}
		m, _ := jsonMeter(http.StatusOK, tc.encoding)
		for i := 0; i < len(tc.body); i += 64 << 10 {
			_, _ = m.Write(tc.body[i:min(i+64<<10, len(tc.body))])
		}
		if u, ok, chars := m.usage(); ok || u != (openaiwire.Usage{}) || chars != int64(len(tc.body)) {
			t.Fatalf("%s: usage %+v, %v, chars %d; want none and %d", tc.name, u, ok, chars, len(tc.body))
		}
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
