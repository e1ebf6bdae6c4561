package openaiwire

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// ErrorBody is an error in the OpenAI API's shape,
//
//	{"error":{"message":"…","type":"…","param":null,"code":"…"}}
//
// which the OpenAI SDKs turn into their usual exceptions. Every error the
// gateway answers itself is written in it.
type ErrorBody struct {
	Error ErrorFields `json:"error"`
}

// ErrorFields are the members of ErrorBody's "error" object.
type ErrorFields struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// ErrorJSON renders an error in the OpenAI shape, with a null param.
func ErrorJSON(message, typ, code string) []byte {
	b, err := json.Marshal(ErrorBody{Error: ErrorFields{Message: message, Type: typ, Code: code}})
	if err != nil { // strings always marshal; keep the shape regardless
		return []byte(`{"error":{"message":"internal error","type":"server_error","param":null,"code":"internal_error"}}`)
	}
	return b
}

// RequestError is a request body the gateway refuses to read: not JSON
// (400, code invalid_json), too large (413, code request_too_large) or
// unreadable (400). Message is written for the API's caller.
type RequestError struct {
	Status  int
	Code    string
	Message string
	Err     error
}

func (e *RequestError) Error() string { return e.Message }
func (e *RequestError) Unwrap() error { return e.Err }

// Error codes of RequestError.
const (
	CodeInvalidJSON     = "invalid_json"
	CodeRequestTooLarge = "request_too_large"
)

// InvalidJSON is the 400 invalid_json refusal of a body that err (from
// ParseRequest, InjectIncludeUsage or RewriteModel) says is not the JSON
// expected.
func InvalidJSON(err error) *RequestError {
	return &RequestError{Status: http.StatusBadRequest, Code: CodeInvalidJSON,
		Message: "We could not parse the JSON body of your request (" + err.Error() + "). " +
			"The OpenAI API expects a JSON object; the request was not sent to the provider.",
		Err: err}
}

// APIError is an error the gateway answers itself, in the OpenAI shape.
// Reason is a short, bounded label for logs and metrics; it is never sent.
type APIError struct {
	Status  int
	Type    string
	Code    string
	Message string
	Reason  string
	// Header holds extra response headers (a 429's Retry-After and
	// x-ratelimit-*); nil: none.
	Header http.Header
}

// Error types and codes of the gateway's own errors.
const (
	TypeInvalidRequest    = "invalid_request_error"
	TypeInsufficientQuota = "insufficient_quota"
	TypeServerError       = "server_error"

	CodeInvalidAPIKey       = "invalid_api_key"
	CodeInsufficientBalance = "insufficient_balance"
	CodeAccountDisabled     = "account_disabled"
	CodeKeyDisabled         = "key_disabled"
	CodeStoreUnavailable    = "store_unavailable"
	CodeGatewayMisconfig    = "gateway_misconfigured"
	CodeModelNotPriced      = "model_not_priced"
	CodeModelNotAllowed     = "model_not_allowed"
	CodeModelNotFound       = "model_not_found"
	CodeKeyLimitExceeded    = "key_limit_exceeded"
	CodeEndpointNotAllowed  = "endpoint_not_allowed"
	CodeRateLimitExceeded   = "rate_limit_exceeded"

	// Types of a 429 rate_limit_exceeded, as OpenAI sends them.
	TypeRequests = "requests"
	TypeTokens   = "tokens"
)

// Error implements error.
func (e *APIError) Error() string { return e.Message }

// Write sends the error as the response. A 401 carries WWW-Authenticate:
// Bearer.
func (e *APIError) Write(w http.ResponseWriter) error {
	body := ErrorJSON(e.Message, e.Type, e.Code)
	h := w.Header()
	for k, v := range e.Header {
		h[k] = v
	}
	if e.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="ai-gateway"`)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	w.WriteHeader(e.Status)
	_, err := w.Write(append(body, '\n'))
	return err
}

// FromRequestError is the answer to a request body the gateway refused to
// read.
func FromRequestError(e *RequestError) *APIError {
	reason := e.Code
	if e.Status == http.StatusBadRequest && !errors.Is(e, ErrInvalidJSON) {
		reason = "body_unreadable"
	}
	return &APIError{Status: e.Status, Type: TypeInvalidRequest, Code: e.Code, Reason: reason, Message: e.Message}
}

// StoreUnavailable is the 503 of a key store that cannot answer: the
// gateway fails closed.
func StoreUnavailable() *APIError {
	return &APIError{
		Status: http.StatusServiceUnavailable, Type: TypeServerError, Code: CodeStoreUnavailable, Reason: CodeStoreUnavailable,
		Message: "The gateway's key store is unavailable, so the request was not sent to the provider. Try again shortly.",
	}
}

// AccountDisabled is the 403 of a request whose account is disabled.
func AccountDisabled(accountID string) *APIError {
	return &APIError{
		Status: http.StatusForbidden, Type: TypeInvalidRequest, Code: CodeAccountDisabled, Reason: CodeAccountDisabled,
		Message: fmt.Sprintf("The account %q that owns this API key is disabled. Contact the operator of this gateway.", accountID),
	}
}
