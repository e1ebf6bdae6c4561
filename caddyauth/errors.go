package caddyauth

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/metask/caddy-ai-gateway/caddyproxy"
)

// apiError is an error the gateway itself answers, in the OpenAI shape:
//
//	{"error":{"message":"…","type":"…","param":null,"code":"…"}}
type apiError struct {
	status  int
	typ     string
	code    string
	message string
	// reason is a short, bounded label for logs and metrics.
	reason string
}

// Error codes and types of SPEC §4.
const (
	typeInvalidRequest    = "invalid_request_error"
	typeInsufficientQuota = "insufficient_quota"
	typeServerError       = "server_error"

	codeInvalidAPIKey       = "invalid_api_key"
	codeInsufficientBalance = "insufficient_balance"
	codeAccountDisabled     = "account_disabled"
	codeStoreUnavailable    = "store_unavailable"
	codeGatewayMisconfig    = "gateway_misconfigured"
	codeModelNotPriced      = "model_not_priced"
	codeModelNotAllowed     = "model_not_allowed"
	codeModelNotFound       = "model_not_found"
	codeKeyLimitExceeded    = "key_limit_exceeded"
)

// fromRequestError turns a body caddyproxy refused to read into the
// gateway's error.
func fromRequestError(e *caddyproxy.RequestError) *apiError {
	reason := e.Code
	if e.Status == http.StatusBadRequest && !errors.Is(e, caddyproxy.ErrInvalidJSON) {
		reason = "body_unreadable"
	}
	return &apiError{status: e.Status, typ: typeInvalidRequest, code: e.Code, reason: reason, message: e.Message}
}

func modelNotPriced(model string) *apiError {
	msg := "The request names no model. Set \"model\" to one of the models this gateway offers."
	if model != "" {
		msg = fmt.Sprintf("The model %q is not available on this gateway (it has no price), so the request was not sent.", model)
	}
	return &apiError{
		status: http.StatusBadRequest, typ: typeInvalidRequest, code: codeModelNotPriced, reason: codeModelNotPriced,
		message: msg,
	}
}

// write sends the error as the response. 401s carry WWW-Authenticate: Bearer.
func (e *apiError) write(w http.ResponseWriter) error {
	body := caddyproxy.ErrorJSON(e.message, e.typ, e.code)
	h := w.Header()
	if e.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="ai-gateway"`)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	w.WriteHeader(e.status)
	_, err := w.Write(append(body, '\n'))
	return err
}
