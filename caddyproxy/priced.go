package caddyproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// Requests to an endpoint the operator priced per request (an `endpoint
// <METHOD> <path> price <amount>` line): the price is held at admission,
// and charged when the provider answered 2xx.

// passPriced admits a request to a priced endpoint if the account's balance
// covers the price on top of what is already held, forwards it, and settles
// the hold: the price if the provider answered with a 2xx status, nothing
// otherwise; one ledger row either way. w must be the request's scrubWriter,
// which knows the status.
func (g *BalanceGuard) passPriced(w *scrubWriter, r *http.Request, next caddyhttp.Handler, id keystore.Identity, e *Endpoint) (err error) {
	if refusal := g.checkAllowlist(r, id); refusal != nil {
		return g.refuse(w, refusal)
	}
	hold, refusal := g.holdCovered(id, e)
	if refusal != nil {
		return g.refuse(w, refusal)
	}
	w.rate = hold.RateStatus()
	start := time.Now()
	defer func() {
		rec := recover()
		g.settlePriced(w, r, id, e, hold, start, err)
		if rec != nil {
			panic(rec) // the hold is settled; the panic is Caddy's to handle
		}
	}()
	return next.ServeHTTP(w, r)
}

// holdCovered holds an endpoint's price on the account. On top of the
// store's admission rule (the key's spend limit), the balance must cover
// every hold in flight, this one included, checked under the store's lock:
// a request of a fixed price is not let in on a balance that cannot pay for
// it, and two concurrent requests cannot both take the same last amount.
func (g *BalanceGuard) holdCovered(id keystore.Identity, e *Endpoint) (*keystore.Hold, *openaiwire.APIError) {
	hold, err := g.st().ReserveFor(id, e.price, keystore.RequireCovered, g.rateOption("", 0))
	if err == nil {
		return hold, nil
	}
	var be *keystore.BalanceError
	if !errors.As(err, &be) {
		return nil, g.reserveError(id, err)
	}
	refusal := g.insufficient(id.AccountID, be.Balance, be.Held)
	refusal.Message = fmt.Sprintf("%s %s costs %s %s a request. ", e.Method, e.Path, keystore.FormatAmount(e.price), g.currency) + refusal.Message
	return nil, refusal
}

// settlePriced ends the hold of a priced request: the price when the
// provider answered 2xx, else nothing, in one ledger row with the model
// named by the endpoint's path.
func (g *BalanceGuard) settlePriced(w *scrubWriter, r *http.Request, id keystore.Identity, e *Endpoint, hold *keystore.Hold, start time.Time, handlerErr error) {
	status := finalStatus(w.status != 0, w.status, handlerErr)
	var cost int64
	if w.status >= 200 && w.status < 300 {
		cost = e.price
	}
	charge := keystore.Charge{
		KeyID: id.KeyID, Model: e.Path, RequestID: requestIDOf(w.Header()),
		Cost: cost, Status: status, Duration: time.Since(start),
	}
	if _, err := hold.Settle(charge); err != nil {
		hold.Release()
		if !errors.Is(err, keystore.ErrSettled) {
			g.logger.Error("settling a request failed; it was not charged",
				zap.String("account", id.AccountID), zap.String("key_id", id.KeyID),
				zap.String("endpoint", e.Method+" "+e.Path), zap.Int64("cost_nano", cost), zap.Error(err))
			return
		}
	}
	e.metrics.request(status)
	if cost > 0 {
		e.metrics.cost.Add(nanoToUnits(cost))
	}
	if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Set(zap.String("ai_gateway_model", charge.Model))
		extra.Set(zap.String("ai_gateway_request_id", charge.RequestID))
		extra.Set(zap.Stringer("ai_gateway_cost", amount(cost)))
	}
}

// checkAllowlist applies a key's model allowlist to a request the guard
// does not meter: the model of a JSON, multipart or urlencoded body must be allowed (a key limited
// to some models may not reach another through images, audio, …).
func (g *BalanceGuard) checkAllowlist(r *http.Request, id keystore.Identity) *openaiwire.APIError {
	if len(id.AllowedModels) == 0 {
		return nil
	}
	model, ok, refusal := g.formModel(r)
	if refusal != nil {
		return refusal
	}
	if !ok || model == "" {
		// Not a form, or a form that names no model: whatever the
		// Content-Type says, a provider may still read the body as JSON
		// (curl sends JSON as a form by default), so the gateway does too.
		if model, refusal = g.anyJSONModel(r); refusal != nil {
			return refusal
		}
	}
	if model != "" && !allowed(id, model, g.upstreamModel(model)) {
		return modelNotAllowed(id, model)
	}
	return nil
}

// anyJSONModel reads the model of a body that is JSON whatever its
// Content-Type says, and puts the body back. A body that is not JSON names
// no model; one that is JSON but that the gateway refuses to read (a
// repeated model, a model that is not a string) is refused.
func (g *BalanceGuard) anyJSONModel(r *http.Request) (string, *openaiwire.APIError) {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		return "", nil
	}
	if enc := strings.TrimSpace(r.Header.Get("Content-Encoding")); enc != "" && !strings.EqualFold(enc, "identity") {
		// The provider may decode what the gateway cannot check.
		return "", &openaiwire.APIError{Status: http.StatusBadRequest, Type: openaiwire.TypeInvalidRequest,
			Code: "unsupported_content_encoding", Reason: "unsupported_content_encoding",
			Message: fmt.Sprintf("This key may use only some models, and the gateway cannot read a request body with Content-Encoding %q to check which one it names; send it uncompressed. The request was not sent.", enc)}
	}
	var raw []byte
	cached, _ := caddyhttp.GetVar(r.Context(), BodyVar).(*Body)
	if cached != nil {
		raw = cached.Raw // already read (as JSON, or as a form that named no model)
	} else {
		if r.Body == nil || r.Body == http.NoBody {
			return "", nil
		}
		var rerr *openaiwire.RequestError
		if raw, rerr = readLimited(r, g.MaxRequestBody); rerr != nil {
			return "", openaiwire.FromRequestError(rerr)
		}
		// Put it back for the provider. A JSON body that parses is cached
		// below as ReadBody would cache it, for ai_model matchers after us.
		r.Body = io.NopCloser(bytes.NewReader(raw))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }
	}
	body := bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf")) // a BOM some parsers skip
	if !json.Valid(body) {
		if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] == '{' {
			// It means to be JSON; a lenient parser (trailing commas,
			// single quotes) might read a model in it.
			return "", openaiwire.FromRequestError(openaiwire.InvalidJSON(fmt.Errorf("%w: request body is not valid JSON", openaiwire.ErrInvalidJSON)))
		}
		return "", nil // not JSON: it names no model
	}
	info, perr := openaiwire.ParseRequest(body)
	if perr != nil {
		return "", openaiwire.FromRequestError(openaiwire.InvalidJSON(perr))
	}
	if cached == nil && len(body) == len(raw) && hasJSONBody(r) {
		SetBody(r, &Body{Raw: raw, Info: info, Model: g.upstreamModel(info.Model)})
	}
	return info.Model, nil
}
