package caddyauth

import (
	"encoding/json"
	"net/http"
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
)

type errorBody struct {
	Error errorFields `json:"error"`
}

type errorFields struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// write sends the error as the response. 401s carry WWW-Authenticate: Bearer.
func (e *apiError) write(w http.ResponseWriter) error {
	body, err := json.Marshal(errorBody{Error: errorFields{Message: e.message, Type: e.typ, Code: e.code}})
	if err != nil {
		return err
	}
	h := w.Header()
	if e.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="ai-gateway"`)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	w.WriteHeader(e.status)
	_, err = w.Write(append(body, '\n'))
	return err
}
