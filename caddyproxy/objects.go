package caddyproxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// Provider-side objects stay with their account. The provider stores a
// Responses API response (store defaults to true) on the operator's
// account, where any caller who knows its id could continue, read or
// delete it. The guard records the id of every response a POST
// /v1/responses answers with, for the caller's account (keystore
// RecordObject), and lets a request use a stored response only if it is
// recorded for the caller's account:
//
//   - POST /v1/responses with previous_response_id: otherwise 404
//     object_not_found; if it is, the response's input and output tokens
//     (the context the provider re-reads) are added to the prompt estimate
//     that the hold covers;
//   - GET /v1/responses/{id}, GET /v1/responses/{id}/input_items and
//     DELETE /v1/responses/{id} (routeObject): forwarded free, otherwise
//     404 object_not_found; a DELETE the provider answers 2xx marks the
//     record deleted.
//
// A request naming a conversation gets 404 object_not_found (conversations
// cannot be created through the gateway), and one asking for a background
// response 400 background_not_supported (the gateway bills a response by
// the usage it sees it complete with).

// objectOp is what a routeObject request does with a stored response.
type objectOp uint8

const (
	objGet        objectOp = iota + 1 // GET /v1/responses/{id}
	objInputItems                     // GET /v1/responses/{id}/input_items
	objDelete                         // DELETE /v1/responses/{id}
)

// objectRoute recognises the stored-response endpoints by method and the
// path after the API root. The path is canonical already (routeOf), so the
// id is a segment of A-Z a-z 0-9 - _ . ~ : @, and neither "." nor "..".
func objectRoute(method, rest string) (route, bool) {
	tail, ok := strings.CutPrefix(rest, "/responses/")
	if !ok {
		return route{}, false
	}
	id, sub, hasSub := strings.Cut(tail, "/")
	var op objectOp
	switch {
	case !hasSub && method == http.MethodGet:
		op = objGet
	case !hasSub && method == http.MethodDelete:
		op = objDelete
	case hasSub && sub == "input_items" && method == http.MethodGet:
		op = objInputItems
	default:
		return route{}, false
	}
	return route{kind: routeObject, objectID: id, objectOp: op}, true
}

// isObjectEndpoint reports whether an endpoint line names, in any case, a
// stored-response endpoint the guard itself serves to the owner only.
func isObjectEndpoint(method, path string) bool {
	rest, ok := underRoot(strings.ToLower(path))
	if !ok {
		return false
	}
	_, ok = objectRoute(method, rest)
	return ok
}

// passObject forwards a request about a stored response, free, if the
// response is recorded for the caller's account; otherwise it answers 404
// object_not_found and the provider never sees the request.
func (g *BalanceGuard) passObject(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, id keystore.Identity, rt route) error {
	if _, refusal := g.ownResponse(r.Context(), id, rt.objectID); refusal != nil {
		return g.refuse(w, refusal)
	}
	if rt.objectOp != objDelete {
		return next.ServeHTTP(w, r)
	}
	sw := &statusWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	err := next.ServeHTTP(sw, r)
	if sw.status >= 200 && sw.status < 300 {
		if derr := g.st().DeleteObject(context.WithoutCancel(r.Context()), rt.objectID); derr != nil {
			g.logger.Error("recording the deletion of a stored response failed",
				zap.String("account", id.AccountID), zap.String("response_id", rt.objectID), zap.Error(derr))
		}
	}
	return err
}

// statusWriter notes the status of a response as it passes.
type statusWriter struct {
	*caddyhttp.ResponseWriterWrapper
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 && (status < 100 || status > 199) {
		w.status = status
	}
	w.ResponseWriterWrapper.WriteHeader(status)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriterWrapper.Write(p)
}

// ownResponse returns the stored response rid if it is recorded, not
// deleted, for the caller's account; otherwise the refusal to answer.
func (g *BalanceGuard) ownResponse(ctx context.Context, id keystore.Identity, rid string) (keystore.Object, *openaiwire.APIError) {
	o, err := g.st().Object(ctx, rid)
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return o, responseNotFound(rid)
	case err != nil:
		g.logger.Error("looking up a stored response", zap.String("account", id.AccountID), zap.String("response_id", rid), zap.Error(err))
		return o, openaiwire.StoreUnavailable()
	case o.AccountID != id.AccountID || o.Kind != keystore.ObjectResponse || o.DeletedAt != nil:
		return o, responseNotFound(rid)
	}
	return o, nil
}

// checkStoredResponses applies the object rules to a POST /v1/responses
// (other endpoints pass): background and conversation are refused, and a
// previous_response_id must be the caller's own stored response, whose
// tokens are then added to info's prompt estimate (the hold).
func (g *BalanceGuard) checkStoredResponses(ctx context.Context, id keystore.Identity, ep endpoint, raw []byte, info *openaiwire.RequestInfo) (openaiwire.ResponseRefs, *openaiwire.APIError) {
	if ep != epResponses {
		return openaiwire.ResponseRefs{}, nil
	}
	refs, err := openaiwire.ParseResponseRefs(raw)
	switch {
	case err != nil:
		return refs, openaiwire.FromRequestError(openaiwire.InvalidJSON(err))
	case refs.Background:
		return refs, backgroundRefused()
	case refs.Conversation:
		return refs, conversationNotFound()
	case refs.ItemReference:
		return refs, itemReferenceNotFound()
	case refs.PreviousResponseID == "":
		return refs, nil
	}
	prev, refusal := g.ownResponse(ctx, id, refs.PreviousResponseID)
	if refusal != nil {
		return refs, refusal
	}
	info.EstimatedPromptTokens = addTokens(addTokens(info.EstimatedPromptTokens, prev.InputTokens), prev.OutputTokens)
	return refs, nil
}

// addTokens adds token counts, saturating.
func addTokens(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// recordResponse records the response a POST /v1/responses was answered
// with for the caller's account, with its tokens, before the end of the
// response (held back by the meter) goes to the client: a client that
// continues it at once finds it recorded.
func (b *billing) recordResponse(status int, c keystore.Charge) {
	m := b.meter
	if !m.record || status < 200 || status > 299 {
		return
	}
	rid := m.responseID()
	if rid == "" {
		return
	}
	err := b.g.st().RecordObject(keystore.Object{
		ID: rid, Kind: keystore.ObjectResponse, AccountID: b.id.AccountID, KeyID: b.id.KeyID,
		InputTokens: c.PromptTokens, OutputTokens: c.CompletionTokens,
	})
	if err != nil {
		b.g.logger.Error("recording a stored response failed; its account cannot use it through the gateway",
			zap.String("account", b.id.AccountID), zap.String("response_id", rid), zap.Error(err))
	}
}

// releaseRecorded sends the end of a response that the meter held back only
// until its id was recorded (durable billing releases it after the commit
// instead).
func (b *billing) releaseRecorded() {
	if m := b.meter; m.record && !m.durable {
		m.release()
	}
}

// responseID is the id of the response a Responses API answer carries: of
// the stream's lifecycle events, or the top-level id of a JSON body kept
// whole (a body over captureLimit is not kept: its response is not
// recorded, and so cannot be used through the gateway).
func (m *meter) responseID() string {
	if m.filter != nil {
		return m.filter.ResponseID()
	}
	if m.stream || m.overflow {
		return ""
	}
	body := m.body
	if !m.identity() {
		decoded, err := openaiwire.DecodeBody(body, m.encoding)
		if err != nil {
			return ""
		}
		body = decoded
	}
	return openaiwire.ResponseID(body)
}

// maxIDInMessage bounds how much of a client's id an error message repeats.
const maxIDInMessage = 200

func responseNotFound(rid string) *openaiwire.APIError {
	if len(rid) > maxIDInMessage {
		rid = rid[:maxIDInMessage] + "…"
	}
	return &openaiwire.APIError{
		Status: http.StatusNotFound, Type: openaiwire.TypeInvalidRequest, Code: openaiwire.CodeObjectNotFound, Reason: openaiwire.CodeObjectNotFound,
		Message: fmt.Sprintf("The response %s does not exist for this account, so the request was not sent. Only responses created through this gateway with this account's keys can be used.",
			strconv.QuoteToASCII(rid)),
	}
}

func conversationNotFound() *openaiwire.APIError {
	return &openaiwire.APIError{
		Status: http.StatusNotFound, Type: openaiwire.TypeInvalidRequest, Code: openaiwire.CodeObjectNotFound, Reason: openaiwire.CodeObjectNotFound,
		Message: "The conversation named in this request does not exist for this account (conversations cannot be created through this gateway), so the request was not sent. Continue a response with previous_response_id instead.",
	}
}

func itemReferenceNotFound() *openaiwire.APIError {
	return &openaiwire.APIError{
		Status: http.StatusNotFound, Type: openaiwire.TypeInvalidRequest, Code: openaiwire.CodeObjectNotFound, Reason: openaiwire.CodeObjectNotFound,
		Message: "An input item of type item_reference names a stored item this gateway cannot tie to your account, so the request was not sent. Send the item's content instead, or continue the response with previous_response_id.",
	}
}

func backgroundRefused() *openaiwire.APIError {
	return &openaiwire.APIError{
		Status: http.StatusBadRequest, Type: openaiwire.TypeInvalidRequest, Code: openaiwire.CodeBackgroundNotSupported, Reason: openaiwire.CodeBackgroundNotSupported,
		Message: "Background responses are not supported by this gateway: it bills a response by the usage it sees the response complete with, and a background response completes out of its sight. Send the request without \"background\": true (stream it if it runs long); it was not sent.",
	}
}
