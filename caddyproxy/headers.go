package caddyproxy

import (
	"io"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// Header hygiene of every request the guard forwards, both ways.

// clientOnlyHeaders are request headers that never go to a provider: the
// client's credentials (api_key_auth removes the first three already; the
// guard makes sure), its choice of the provider's organization and project
// (the operator's account is billed, so the operator sets them, with
// reverse_proxy's header_up, which runs after the guard) and its cookies.
var clientOnlyHeaders = [...]string{
	"Authorization", "X-Api-Key", "Api-Key",
	"OpenAI-Organization", "OpenAI-Project",
	"Cookie", "Proxy-Authorization",
}

// providerOnlyHeaders are response headers that never reach a client: they
// name the operator's provider organization and project, and cookies set
// by the provider (or its CDN) belong to the gateway's own connection. The
// provider's x-ratelimit-* (its limits of the operator's account) are
// replaced by the gateway's own (dropProviderRateHeaders).
var providerOnlyHeaders = [...]string{"OpenAI-Organization", "OpenAI-Project", "Set-Cookie"}

// scrubRequest removes the clientOnlyHeaders from r.
func scrubRequest(r *http.Request) {
	for _, h := range clientOnlyHeaders {
		r.Header.Del(h)
	}
}

// scrubWriter removes the providerOnlyHeaders from the response before its
// header is written (by WriteHeader, including 1xx, by a first Write or
// ReadFrom, or by a flush), and remembers the final status for the billing
// of priced endpoints.
type scrubWriter struct {
	*caddyhttp.ResponseWriterWrapper
	status int                 // the final status written; 0 before
	rate   keystore.RateStatus // the caller's rate limits, sent as x-ratelimit-* (ratelimit.go)
	own    http.Header         // headers of the guard's own answer (refuse), kept through the scrub
}

func newScrubWriter(w http.ResponseWriter) *scrubWriter {
	return &scrubWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
}

func (s *scrubWriter) scrub() {
	h := s.Header()
	for _, name := range providerOnlyHeaders {
		h.Del(name)
	}
	dropProviderRateHeaders(h)
	setRateHeaders(h, s.rate)
	for k, v := range s.own {
		h[k] = v
	}
}

// WriteHeader scrubs the header and writes it.
func (s *scrubWriter) WriteHeader(status int) {
	if s.status != 0 {
		return
	}
	s.scrub()
	if status >= 200 || status == http.StatusSwitchingProtocols {
		s.status = status
	}
	s.ResponseWriter.WriteHeader(status)
}

// Write writes the header first, if no one did.
func (s *scrubWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(p)
}

// ReadFrom writes the header first, if no one did, then lets the client's
// connection copy the body (sendfile and the like), as the embedded
// wrapper would.
func (s *scrubWriter) ReadFrom(r io.Reader) (int64, error) {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriterWrapper.ReadFrom(r)
}

// FlushError writes the header first, if no one did (a flush sends it),
// then flushes.
func (s *scrubWriter) FlushError() error {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(s.ResponseWriter).Flush()
}

// Interface guards
var (
	_ http.ResponseWriter = (*scrubWriter)(nil)
	_ io.ReaderFrom       = (*scrubWriter)(nil)
)
