package caddyproxy

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// Reading the model of a request whatever the body's encoding: JSON,
// multipart/form-data or application/x-www-form-urlencoded, and the
// ?model= query parameter. The body is read once, within max_request_body,
// and put back byte for byte (with GetBody, as body.go does) for the
// provider.

// Body encodings the gateway reads.
const (
	encJSON = iota
	encMultipart
	encForm
)

// mediaBody is a media request as read.
type mediaBody struct {
	req openaiwire.MediaRequest
	raw []byte
	enc int
}

// CodeModelRequired is the code of the 400 for a metered media request
// whose model the gateway cannot determine.
const CodeModelRequired = "model_required"

// bodyEncoding classifies r's Content-Type; ok is false for a type the
// gateway cannot read.
func bodyEncoding(r *http.Request) (enc int, boundary string, ok bool) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return encJSON, "", true
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return 0, "", false
	}
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		return encJSON, "", true
	case mt == "multipart/form-data":
		return encMultipart, params["boundary"], true
	case mt == "application/x-www-form-urlencoded":
		return encForm, "", true
	}
	return 0, "", false
}

// readMedia reads the model and the priced fields of a media request. A
// body that cannot be read unambiguously, or that names no model, is
// refused; so is a ?model= query parameter that names another model than
// the body (the provider might serve either).
func (g *BalanceGuard) readMedia(r *http.Request) (*mediaBody, *openaiwire.APIError) {
	enc, boundary, ok := bodyEncoding(r)
	if !ok {
		return nil, badMediaRequest(fmt.Sprintf("The content type %q cannot be read by this gateway; send JSON, multipart/form-data or application/x-www-form-urlencoded.", r.Header.Get("Content-Type")))
	}
	mb := &mediaBody{enc: enc}
	if enc == encJSON {
		rb, _, rerr := ReadBody(r, g.MaxRequestBody, true)
		if rerr != nil {
			return nil, openaiwire.FromRequestError(rerr)
		}
		req, err := openaiwire.ParseMediaJSON(rb.Raw)
		if err != nil {
			return nil, openaiwire.FromRequestError(openaiwire.InvalidJSON(err))
		}
		mb.req, mb.raw = req, rb.Raw
	} else {
		raw, rerr := readLimited(r, g.MaxRequestBody)
		if rerr != nil {
			return nil, openaiwire.FromRequestError(rerr)
		}
		var err error
		if enc == encMultipart {
			mb.req, err = openaiwire.ParseMediaMultipart(raw, boundary)
		} else {
			mb.req, err = openaiwire.ParseMediaForm(raw)
		}
		if err != nil {
			return nil, badMediaRequest("The form of the request could not be read unambiguously (" + err.Error() + "), so it was not sent.")
		}
		mb.raw = raw
		SetBody(r, &Body{Raw: raw, Info: openaiwire.RequestInfo{Model: mb.req.Model}, Model: g.upstreamModel(mb.req.Model)})
	}
	if mb.req.Model == "" {
		e := badMediaRequest("The request names no model, so the gateway cannot price it and did not send it. Set the \"model\" field.")
		e.Code, e.Reason = CodeModelRequired, CodeModelRequired
		return nil, e
	}
	if qs, err := queryModels(r); err != nil {
		return nil, badMediaRequest("The query string could not be read (" + err.Error() + "), so the request was not sent.")
	} else if len(qs) > 0 && (len(qs) > 1 || qs[0] != mb.req.Model) {
		return nil, badMediaRequest(fmt.Sprintf("The query parameter model=%q does not name the body's model %q, so the request was not sent.", strings.Join(qs, ","), mb.req.Model))
	}
	return mb, nil
}

// rewriteModel makes the body going upstream name the provider's model of
// an alias. Only JSON bodies can be rewritten in place.
func (mb *mediaBody) rewriteModel(r *http.Request, upstream string) *openaiwire.APIError {
	if mb.enc != encJSON {
		return badMediaRequest(fmt.Sprintf("The model %q is an alias, which this gateway can only resolve in JSON bodies; name the model %q instead.", mb.req.Model, upstream))
	}
	rewritten, err := openaiwire.RewriteModel(mb.raw, upstream)
	if err != nil {
		return openaiwire.FromRequestError(openaiwire.InvalidJSON(err))
	}
	SetBody(r, &Body{Raw: rewritten, Info: openaiwire.RequestInfo{Model: mb.req.Model}, Model: upstream})
	return nil
}

// badMediaRequest is a 400 invalid_request_error of the media endpoints.
func badMediaRequest(msg string) *openaiwire.APIError {
	return &openaiwire.APIError{
		Status: http.StatusBadRequest, Type: openaiwire.TypeInvalidRequest, Code: "invalid_request",
		Reason: "invalid_request", Message: msg,
	}
}

// readLimited reads r's body, at most limit bytes (DefaultMaxBody when
// limit <= 0), with ReadBody's errors.
func readLimited(r *http.Request, limit int64) ([]byte, *openaiwire.RequestError) {
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, &openaiwire.RequestError{Status: http.StatusBadRequest, Code: CodeModelRequired,
			Message: "The request has no body, so it names no model.", Err: errors.New("request body is empty")}
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) || int64(len(raw)) > limit {
		if tooBig != nil {
			limit = tooBig.Limit
		}
		return nil, &openaiwire.RequestError{Status: http.StatusRequestEntityTooLarge, Code: openaiwire.CodeRequestTooLarge,
			Message: fmt.Sprintf("The request body is larger than this gateway accepts (%d bytes), so it was not sent.", limit),
			Err:     fmt.Errorf("request body over %d bytes", limit)}
	}
	if err != nil {
		return nil, &openaiwire.RequestError{Status: http.StatusBadRequest, Code: openaiwire.CodeInvalidJSON,
			Message: "The request body could not be read: " + err.Error(), Err: err}
	}
	return raw, nil
}

// queryModels returns the values of the request's ?model= parameters. A
// query string that does not parse is an error only when it may hold one.
func queryModels(r *http.Request) ([]string, error) {
	raw := r.URL.RawQuery
	if raw == "" {
		return nil, nil
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		if strings.Contains(strings.ToLower(raw), "model") {
			return nil, fmt.Errorf("query string: %w", err)
		}
		return nil, nil
	}
	for name := range q {
		if name != "model" && strings.EqualFold(name, "model") {
			return nil, fmt.Errorf("query parameter %q differs from \"model\" only in letter case", name)
		}
	}
	return q["model"], nil
}

// checkQueryModel applies the key's allowlist to the ?model= parameters of
// any request that goes on: each must be allowed, as the body's model is.
func (g *BalanceGuard) checkQueryModel(r *http.Request, id keystore.Identity) *openaiwire.APIError {
	qs, err := queryModels(r)
	if err != nil {
		return badMediaRequest("The query string could not be read (" + err.Error() + "), so the request was not sent.")
	}
	for _, m := range qs {
		if !allowed(id, m, g.upstreamModel(m)) {
			return modelNotAllowed(id, m)
		}
	}
	return nil
}

// formModel reads the model of a multipart or urlencoded body for the
// allowlist of free and priced endpoints (checkAllowlist); ok is false for
// any other body.
func (g *BalanceGuard) formModel(r *http.Request) (model string, ok bool, refusal *openaiwire.APIError) {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		return "", false, nil
	}
	enc, _, known := bodyEncoding(r)
	if !known || enc == encJSON || r.Body == nil || r.Body == http.NoBody {
		return "", false, nil
	}
	mb, refusal := g.readMedia(r)
	if refusal != nil {
		if refusal.Code == CodeModelRequired {
			return "", false, nil // a form without a model: nothing to check
		}
		return "", false, refusal
	}
	return mb.req.Model, true, nil
}
