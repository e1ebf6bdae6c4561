package openaiwire

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"testing"
)

// sdEvents are the plaintext pieces a provider flushes one at a time.
var sdEvents = []string{
	"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
	"data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
	": keep-alive\n\n",
	"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
	"data: [DONE]\n\n",
}

// sdCompressor is what a provider uses: a writer that can flush.
type sdCompressor interface {
	io.WriteCloser
	Flush() error
}

// sdEncode compresses the events, flushing after each, and returns the
// compressed bytes of each event (header bytes go with the first, the
// trailer with the last).
func sdEncode(t *testing.T, encoding string) [][]byte {
	t.Helper()
	var buf bytes.Buffer
	var zw sdCompressor
	switch encoding {
	case "gzip":
		zw = gzip.NewWriter(&buf)
	case "zlib":
		zw = zlib.NewWriter(&buf)
	case "raw":
		fw, _ := flate.NewWriter(&buf, flate.DefaultCompression)
		zw = fw
	}
	var pieces [][]byte
	for i, e := range sdEvents {
		if _, err := zw.Write([]byte(e)); err != nil {
			t.Fatal(err)
		}
		if err := zw.Flush(); err != nil {
			t.Fatal(err)
		}
		if i == len(sdEvents)-1 {
			if err := zw.Close(); err != nil {
				t.Fatal(err)
			}
		}
		pieces = append(pieces, bytes.Clone(buf.Bytes()))
		buf.Reset()
	}
	return pieces
}

func TestStreamDecoderYieldsEachEventAtOnce(t *testing.T) {
	for _, tc := range []struct{ header, format string }{
		{"gzip", "gzip"}, {"X-Gzip", "gzip"}, {"deflate", "zlib"}, {"Deflate", "raw"},
	} {
		t.Run(tc.header+"/"+tc.format, func(t *testing.T) {
			var got bytes.Buffer
			d, ok := NewStreamDecoder(tc.header, func(p []byte) { got.Write(p) })
			if !ok {
				t.Fatal("not supported")
			}
			for i, piece := range sdEncode(t, tc.format) {
				if n, err := d.Write(piece); err != nil || n != len(piece) {
					t.Fatalf("event %d: Write = %d, %v", i, n, err)
				}
				// Decoded before Write returned: the client can be sent
				// (and flushed) this event now.
				if got.String() != sdEvents[i] {
					t.Fatalf("event %d: after Write, decoded %q, want %q", i, got.String(), sdEvents[i])
				}
				got.Reset()
			}
			if err := d.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if got.Len() != 0 {
				t.Fatalf("Close yielded %q more", got.String())
			}
		})
	}
}

func TestStreamDecoderAnySplit(t *testing.T) {
	want := ""
	for _, e := range sdEvents {
		want += e
	}
	for _, format := range []string{"gzip", "zlib", "raw"} {
		whole := bytes.Join(sdEncode(t, format), nil)
		header := map[string]string{"gzip": "gzip", "zlib": "deflate", "raw": "deflate"}[format]
		feeds := map[string][][]byte{"bytes": nil}
		for _, b := range whole {
			feeds["bytes"] = append(feeds["bytes"], []byte{b})
		}
		for i := 0; i <= len(whole); i++ {
			feeds[fmt.Sprintf("split %d", i)] = [][]byte{whole[:i], whole[i:]}
		}
		for name, pieces := range feeds {
			var got bytes.Buffer
			d, _ := NewStreamDecoder(header, func(p []byte) { got.Write(p) })
			for _, p := range pieces {
				if _, err := d.Write(p); err != nil {
					t.Fatalf("%s %s: %v", format, name, err)
				}
			}
			if err := d.Close(); err != nil || got.String() != want {
				t.Fatalf("%s %s: Close %v, decoded %q", format, name, err, got.String())
			}
		}
	}
}

func TestStreamDecoderConcatenatedGzipMembers(t *testing.T) {
	var whole []byte
	for _, e := range sdEvents[:2] {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write([]byte(e))
		zw.Close()
		whole = append(whole, buf.Bytes()...)
	}
	var got bytes.Buffer
	d, _ := NewStreamDecoder("gzip", func(p []byte) { got.Write(p) })
	d.Write(whole)
	if err := d.Close(); err != nil || got.String() != sdEvents[0]+sdEvents[1] {
		t.Fatalf("Close %v, decoded %q", err, got.String())
	}
}

func TestStreamDecoderBadInput(t *testing.T) {
	pieces := sdEncode(t, "gzip")

	// Cut before the trailer: what arrived is decoded, Close says truncated.
	var got bytes.Buffer
	d, _ := NewStreamDecoder("gzip", func(p []byte) { got.Write(p) })
	d.Write(pieces[0])
	d.Write(pieces[1])
	if err := d.Close(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: Close = %v", err)
	}
	if got.String() != sdEvents[0]+sdEvents[1] {
		t.Fatalf("truncated: decoded %q", got.String())
	}
	if _, err := d.Write(pieces[2]); !errors.Is(err, ErrDecoderDone) {
		t.Fatalf("Write after Close: %v", err)
	}

	// Corrupt after two good events: they are decoded, and the Write that
	// carries the corruption fails, so the response can be aborted.
	got.Reset()
	d, _ = NewStreamDecoder("gzip", func(p []byte) { got.Write(p) })
	d.Write(pieces[0])
	bad := append(bytes.Clone(pieces[1]), bytes.Repeat([]byte{0xff}, 64)...)
	if _, err := d.Write(bad); err == nil || errors.Is(err, ErrDecoderDone) {
		t.Fatalf("Write of corrupt data = %v, want the decoding error", err)
	}
	if got.String() != sdEvents[0]+sdEvents[1] {
		t.Fatalf("corrupt: decoded %q", got.String())
	}
	if err := d.Close(); err == nil {
		t.Fatal("corrupt: Close = nil")
	}

	// Data after the end of the stream: the next Write fails.
	d, _ = NewStreamDecoder("deflate", func([]byte) {})
	for _, p := range sdEncode(t, "zlib") {
		if _, err := d.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Write([]byte("trailing")); !errors.Is(err, ErrDecoderDone) {
		t.Fatalf("Write after the end: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close after a complete stream: %v", err)
	}

	// Not gzip at all: the decoder stops at once, Writes fail, Close says why.
	d, _ = NewStreamDecoder("gzip", func([]byte) { t.Error("output from garbage") })
	if _, err := d.Write([]byte("data: plain text, not gzip\n\n")); !errors.Is(err, gzip.ErrHeader) {
		t.Fatalf("Write of plain text: %v", err)
	}
	if _, err := d.Write([]byte("more")); !errors.Is(err, ErrDecoderDone) {
		t.Fatalf("Write after corrupt input: %v", err)
	}
	if err := d.Close(); err == nil || !errors.Is(err, gzip.ErrHeader) {
		t.Fatalf("corrupt: Close = %v", err)
	}

	// Nothing written at all.
	d, _ = NewStreamDecoder("deflate", func([]byte) {})
	if err := d.Close(); err == nil {
		t.Fatal("empty deflate stream: Close = nil")
	}
	if err := d.Close(); err == nil {
		t.Fatal("second Close = nil")
	}
}

func TestStreamDecoderUnsupported(t *testing.T) {
	for _, enc := range []string{"", "identity", "br", "zstd", "compress", "gzip, deflate", "gzip;q=1"} {
		if _, ok := NewStreamDecoder(enc, func([]byte) {}); ok {
			t.Errorf("%q: supported", enc)
		}
	}
}
