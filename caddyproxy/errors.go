package caddyproxy

import (
	"fmt"
	"net/http"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
)

// modelNotPriced is the 400 of a model without a price under
// unknown_model reject.
func modelNotPriced(model string) *openaiwire.APIError {
	msg := "The request names no model. Set \"model\" to one of the models this gateway offers."
	if model != "" {
		msg = fmt.Sprintf("The model %q is not available on this gateway (it has no price), so the request was not sent.", model)
	}
	return &openaiwire.APIError{
		Status: http.StatusBadRequest, Type: openaiwire.TypeInvalidRequest, Code: openaiwire.CodeModelNotPriced, Reason: openaiwire.CodeModelNotPriced,
		Message: msg,
	}
}
