package caddyproxy

import (
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
)

// captureLimit is how much of a JSON response the meter keeps whole to read
// its usage. A larger body (a big embedding batch) goes through a
// openaiwire.UsageScanner instead, which finds the top-level usage wherever
// it sits and keeps nothing else.
const captureLimit = 4 << 20

// meter wraps the response on its way from reverse_proxy to the client and
// finds out what the request used, holding nothing back (unless billing is
// durable, see durable.go): a JSON
// body is copied aside (bounded) as it passes; an event stream goes through
// a openaiwire.StreamFilter, and every complete event is written on (and
// flushed, when reverse_proxy flushes) the moment it arrives.
type meter struct {
	*caddyhttp.ResponseWriterWrapper

	// dropUsageChunk: the gateway set stream_options.include_usage, so the
	// filter removes the usage-only chunk and the other chunks' "usage".
	dropUsageChunk bool

	wroteHeader bool
	status      int
	stream      bool
	encoding    string // Content-Encoding of the response
	filter      *openaiwire.StreamFilter
	dec         *openaiwire.StreamDecoder // undoes a compressed stream's encoding

	body      []byte                  // captured JSON body, while it fits in captureLimit
	scan      openaiwire.UsageScanner // reads the usage once body overflowed
	overflow  bool
	written   int64 // bytes received from upstream
	clientErr error // first error writing to the client

	// durable: hold back the final bytes until the ledger row is
	// committed (durable.go); held is what waits, holding that a stream's
	// terminator was seen.
	durable bool
	held    []byte
	holding bool
	// record: hold back the final bytes too until the response's id is
	// recorded for its account (objects.go).
	record bool
}

func newMeter(w http.ResponseWriter, dropUsageChunk bool) *meter {
	return &meter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, dropUsageChunk: dropUsageChunk}
}

// WriteHeader records the status and decides how the body is metered.
func (m *meter) WriteHeader(status int) {
	if m.wroteHeader {
		return
	}
	if status >= 100 && status < 200 && status != http.StatusSwitchingProtocols {
		m.ResponseWriter.WriteHeader(status) // informational: not final
		return
	}
	m.wroteHeader, m.status = true, status
	h := m.Header()
	m.encoding = strings.ToLower(strings.TrimSpace(h.Get("Content-Encoding")))
	if isEventStream(h.Get("Content-Type")) {
		m.stream = true
		if !m.identity() {
			// Compressed although the gateway asked for identity: decode
			// it as it passes and send it on decoded, which every client
			// accepts. An encoding the gateway cannot undo (br, zstd)
			// goes through as it came, unmetered.
			if dec, ok := openaiwire.NewStreamDecoder(m.encoding, m.writeDecoded); ok {
				m.dec = dec
				h.Del("Content-Encoding")
				h.Del("Content-Length")
			}
		}
		if m.identity() || m.dec != nil {
			m.filter = openaiwire.NewStreamFilter(m.dropUsageChunk && status < 300)
			if m.dropUsageChunk {
				// The body may become shorter than the provider said.
				h.Del("Content-Length")
			}
		}
	}
	m.ResponseWriter.WriteHeader(status)
}

// Write meters p and passes it (or, for a filtered stream, what the filter
// releases) to the client. It reports len(p) written unless the client is
// gone, so that reverse_proxy's copy loop sees the same as without it.
func (m *meter) Write(p []byte) (int, error) {
	if !m.wroteHeader {
		m.WriteHeader(http.StatusOK)
	}
	m.written += int64(len(p))
	if m.filter != nil {
		if m.dec != nil {
			// writeDecoded runs for what p decodes to before Write returns.
			if _, err := m.dec.Write(p); err != nil {
				return 0, err
			}
		} else {
			m.writeDecoded(p)
		}
		if m.clientErr != nil {
			return 0, m.clientErr
		}
		return len(p), nil
	}
	if m.stream {
		return m.ResponseWriter.Write(p)
	}
	m.capture(p) // error bodies too: usage there is billed as well
	if !m.durable {
		return m.ResponseWriter.Write(p)
	}
	if out := m.holdBack(p); len(out) > 0 {
		if _, err := m.ResponseWriter.Write(out); err != nil {
			return 0, err
		}
	}
	if m.clientErr != nil {
		return 0, m.clientErr
	}
	return len(p), nil
}

// capture keeps a JSON body whole up to captureLimit. Past that, an
// unencoded body is handed to the usage scanner, first what was kept and
// then every further piece, and nothing more is kept. An encoded (gzip,
// deflate) body that large is not read at all: it has no usage and is
// estimated.
func (m *meter) capture(p []byte) {
	if !m.overflow {
		if len(m.body)+len(p) <= captureLimit {
			m.body = append(m.body, p...)
			return
		}
		m.overflow = true
		if m.identity() {
			_, _ = m.scan.Write(m.body)
		}
		m.body = nil
	}
	if m.identity() {
		_, _ = m.scan.Write(p)
	}
}

// identity reports whether the response has no Content-Encoding.
func (m *meter) identity() bool {
	return m.encoding == "" || m.encoding == "identity"
}

// writeDecoded passes (decoded) stream bytes through the filter and on to
// the client.
func (m *meter) writeDecoded(p []byte) {
	out := m.holdBack(m.filter.Write(p))
	if len(out) > 0 && m.clientErr == nil {
		if _, err := m.ResponseWriter.Write(out); err != nil {
			m.clientErr = err
		}
	}
}

// ReadFrom sends the body through Write, so that it is metered (the
// embedded wrapper would hand it to the client's connection directly).
func (m *meter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{m}, r)
}

// FlushError flushes the client's connection; the filter never holds a
// complete event, so there is nothing of ours to flush first.
func (m *meter) FlushError() error {
	return http.NewResponseController(m.ResponseWriter).Flush()
}

// finish ends the decoding of a compressed stream and writes what the
// stream filter still holds (an incomplete last event) once the upstream
// response has ended.
func (m *meter) finish() {
	m.stopDecoder()
	if m.filter == nil {
		if len(m.held) > 0 && m.clientErr == nil {
			// All but the held bytes go out now, while the row commits.
			_ = http.NewResponseController(m.ResponseWriter).Flush()
		}
		return
	}
	if rest := m.holdBack(m.filter.Flush()); len(rest) > 0 && m.clientErr == nil {
		if _, err := m.ResponseWriter.Write(rest); err != nil {
			m.clientErr = err
		}
	}
}

// stopDecoder ends the decoder goroutine of a compressed stream, if any;
// it is safe to call more than once and on every way out of the handler.
func (m *meter) stopDecoder() {
	if m.dec != nil {
		_ = m.dec.Close() // a corrupt or cut stream is billed like a cut one
	}
}

// usage is what the provider reported, if anything. generatedChars is the
// text seen in a stream (or the size of a JSON body) for estimates.
func (m *meter) usage() (u openaiwire.Usage, ok bool, generatedChars int64) {
	if m.filter != nil {
		u, ok = m.filter.Usage()
		return u, ok, m.filter.StreamedChars()
	}
	if m.stream {
		return u, false, 0
	}
	if m.overflow {
		if m.identity() {
			u, ok, _ = m.scan.Usage()
		}
		return u, ok, m.written
	}
	body := m.body
	if !m.identity() {
		decoded, err := openaiwire.DecodeBody(body, m.encoding)
		if err != nil {
			return u, false, m.written
		}
		body = decoded
	}
	u, ok, _ = openaiwire.ParseResponseUsage(body)
	return u, ok, int64(utf8.RuneCount(body))
}

// isEventStream reports whether a Content-Type is text/event-stream (any
// case, parameters allowed), without mime.ParseMediaType's allocations.
func isEventStream(ct string) bool {
	const want = "text/event-stream"
	ct = strings.TrimSpace(ct)
	if len(ct) < len(want) || !strings.EqualFold(ct[:len(want)], want) {
		return false
	}
	rest := strings.TrimSpace(ct[len(want):])
	return rest == "" || rest[0] == ';'
}

// writerOnly hides ReadFrom so io.Copy uses Write.
type writerOnly struct{ io.Writer }
