// Package caddyauth decides who is calling the gateway: the api_key_auth
// handler, the api_key provider for Caddy's authentication handler, and the
// identity they leave on the request ([IdentityFrom] and the
// {ai_gateway.account}, {ai_gateway.key.*} and {http.auth.user.id}
// placeholders). Nothing here is about money: admission and billing are
// caddyproxy's balance_guard.
package caddyauth

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
	"github.com/metask/caddy-ai-gateway/management"
)

func init() {
	caddy.RegisterModule(APIKeyAuth{})
}

// APIKeyAuth authenticates requests by their Bearer API key against the
// ai_gateway key store. Failures are answered in the OpenAI error shape (401
// with WWW-Authenticate: Bearer; 403 for a disabled account; 503 when the
// store cannot answer) and never reach the next handler. On success it sets
// {http.auth.user.id} (the key id), {ai_gateway.account},
// {ai_gateway.key.id} and {ai_gateway.key.name}, and removes the client's
// Authorization header before the request goes on.
type APIKeyAuth struct {
	// URL where users manage their keys; named in 401 messages.
	KeysURL string `json:"keys_url,omitempty"`

	checker keyChecker
	logger  *zap.Logger
	metrics *metrics
}

// CaddyModule returns the Caddy module information.
func (APIKeyAuth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.api_key_auth",
		New: func() caddy.Module { return new(APIKeyAuth) },
	}
}

// Provision finds the key store.
func (h *APIKeyAuth) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	app, err := management.LoadApp(ctx)
	if err != nil {
		return err
	}
	h.checker = keyChecker{app: app, keysURL: h.KeysURL}
	if h.metrics, err = loadMetrics(ctx); err != nil {
		return err
	}
	return nil
}

// Cleanup releases the shared metrics.
func (h *APIKeyAuth) Cleanup() error {
	releaseMetrics(h.metrics)
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *APIKeyAuth) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	id, fail := h.checker.check(r)
	if fail != nil {
		h.metrics.authFailures.WithLabelValues(fail.Reason).Inc()
		level := zapcore.DebugLevel
		if fail.Reason == reasonStore {
			level = zapcore.ErrorLevel
		}
		if c := h.logger.Check(level, "api key rejected"); c != nil {
			c.Write(zap.String("reason", fail.Reason), zap.Int("status", fail.Status),
				zap.String("remote_ip", r.RemoteAddr))
		}
		return fail.Write(w)
	}
	admit(r, id)
	err := next.ServeHTTP(w, r)
	// An ai_model matcher further down that could not read the body fails
	// the request with an error; answer it in the OpenAI shape. Nothing
	// was written yet: a matcher runs before its route's handlers.
	var bodyErr *openaiwire.RequestError
	if err != nil && errors.As(err, &bodyErr) {
		h.logger.Debug("request body refused by a matcher", zap.Int("status", bodyErr.Status), zap.Error(bodyErr.Err))
		return openaiwire.FromRequestError(bodyErr).Write(w)
	}
	return err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*APIKeyAuth)(nil)
	_ caddy.CleanerUpper          = (*APIKeyAuth)(nil)
	_ caddyhttp.MiddlewareHandler = (*APIKeyAuth)(nil)
)
