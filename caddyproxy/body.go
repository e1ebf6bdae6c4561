package caddyproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// BodyVar is the Caddy request variable (see caddyhttp.GetVar) under which
// the gateway keeps the JSON body it read from a request, as a *Body, so the
// body is read and parsed once per request however many handlers and
// ai_model matchers look at it.
const BodyVar = "ai_gateway.body"

// DefaultMaxBody is the largest request body read by default: 64 MiB.
// Caddy's request_body max_size, when smaller, applies first.
const DefaultMaxBody = 64 << 20

// Body is a request's JSON body as the gateway read it.
type Body struct {
	// Raw is the body as it goes upstream.
	Raw []byte
	// Info is what ParseRequest read from the body the client sent; its
	// Model is the model the client asked for (the public name).
	Info openaiwire.RequestInfo
	// Model is the model the provider will see: Info.Model, or its target
	// when it is an alias. ai_model matches this name.
	Model string
}

// hasJSONBody reports whether r is a request whose body the gateway reads
// to learn its model: POST, PUT or PATCH with a JSON content type, or none.
func hasJSONBody(r *http.Request) bool {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		return false
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || (len(mt) > 5 && mt[len(mt)-5:] == "+json")
}

// ReadBody returns the JSON body of r. The first call reads it (at most
// limit bytes, or DefaultMaxBody when limit <= 0; Caddy's request_body
// max_size applies as well), parses it with ParseRequest, puts the bytes back
// on r for the handlers after it and caches it in the BodyVar variable; later
// calls return the cache. ok is false, with no error, when r carries no JSON
// body to read: a method without one (GET, HEAD, DELETE, …) or a content type
// other than JSON (multipart uploads, forms). With always set, the body of
// any request is read whatever its method and content type.
func ReadBody(r *http.Request, limit int64, always bool) (b *Body, ok bool, err *openaiwire.RequestError) {
	if b, _ := caddyhttp.GetVar(r.Context(), BodyVar).(*Body); b != nil {
		return b, true, nil
	}
	if !always && !hasJSONBody(r) {
		return nil, false, nil
	}
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, false, &openaiwire.RequestError{Status: http.StatusBadRequest, Code: openaiwire.CodeInvalidJSON,
			Message: "The request has no body; the OpenAI API expects a JSON object.",
			Err:     fmt.Errorf("%w: request body is empty", openaiwire.ErrInvalidJSON)}
	}
	raw, rerr := io.ReadAll(io.LimitReader(r.Body, limit+1))
	var tooBig *http.MaxBytesError
	if errors.As(rerr, &tooBig) || int64(len(raw)) > limit {
		if tooBig != nil {
			limit = tooBig.Limit
		}
		return nil, false, &openaiwire.RequestError{Status: http.StatusRequestEntityTooLarge, Code: openaiwire.CodeRequestTooLarge,
			Message: fmt.Sprintf("The request body is larger than this gateway accepts (%d bytes), so it was not sent.", limit),
			Err:     fmt.Errorf("request body over %d bytes", limit)}
	}
	if rerr != nil {
		return nil, false, &openaiwire.RequestError{Status: http.StatusBadRequest, Code: openaiwire.CodeInvalidJSON,
			Message: "The request body could not be read: " + rerr.Error(), Err: rerr}
	}
	info, perr := openaiwire.ParseRequest(raw)
	if perr != nil {
		return nil, false, openaiwire.InvalidJSON(perr)
	}
	b = &Body{Raw: raw, Info: info, Model: info.Model}
	SetBody(r, b)
	return b, true, nil
}

// SetBody makes b.Raw the body of r (also for GetBody, so the transport can
// replay it on a fresh connection) and caches b for ReadBody.
func SetBody(r *http.Request, b *Body) {
	raw := b.Raw
	r.Body = io.NopCloser(bytes.NewReader(raw))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }
	r.ContentLength = int64(len(raw))
	if r.Header != nil {
		r.Header.Set("Content-Length", strconv.Itoa(len(raw)))
	}
	r.TransferEncoding = nil
	caddyhttp.SetVar(r.Context(), BodyVar, b)
}
