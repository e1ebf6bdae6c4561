package caddyauth

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/keystore"
)

func init() {
	caddy.RegisterModule(BalanceGuard{})
}

// BalanceGuard admits a request only while the caller's account has a
// positive balance: at a balance <= 0 it answers 403 insufficient_quota /
// insufficient_balance and the request never reaches the provider. It must
// come after api_key_auth (or Caddy's authentication handler with the
// api_key provider); without an authenticated caller it refuses the request.
//
// Prices are part of its configuration and are validated when the config
// loads. This release admits on balance only: charging requests against the
// prices (reservation, metering, ledger) is not implemented yet.
type BalanceGuard struct {
	// Per-model prices, per 1M tokens. The first matching pattern wins.
	Prices []Price `json:"prices,omitempty"`
	// What to do with a model no price matches. Default: reject.
	UnknownModel *UnknownModel `json:"unknown_model,omitempty"`
	// Completion tokens to reserve when a request sets no max_tokens.
	DefaultMaxTokens int `json:"default_max_tokens,omitempty"`

	store    *keystore.Store
	currency string
	logger   *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (BalanceGuard) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.balance_guard",
		New: func() caddy.Module { return new(BalanceGuard) },
	}
}

// Provision validates prices and finds the key store.
func (g *BalanceGuard) Provision(ctx caddy.Context) error {
	g.logger = ctx.Logger()
	for i := range g.Prices {
		if err := g.Prices[i].provision(); err != nil {
			return fmt.Errorf("balance_guard: %w", err)
		}
	}
	if g.UnknownModel == nil {
		g.UnknownModel = &UnknownModel{Action: "reject"}
	}
	if err := g.UnknownModel.provision(); err != nil {
		return fmt.Errorf("balance_guard: %w", err)
	}
	if g.DefaultMaxTokens < 0 {
		return fmt.Errorf("balance_guard: default_max_tokens must not be negative")
	}
	store, currency, err := loadStore(ctx)
	if err != nil {
		return fmt.Errorf("balance_guard: %w", err)
	}
	g.store, g.currency = store, currency
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (g *BalanceGuard) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	id, ok := identityFrom(r)
	if !ok {
		g.logger.Error("balance_guard reached without an authenticated caller; put api_key_auth before it")
		return (&apiError{
			status: http.StatusInternalServerError, typ: typeServerError, code: codeGatewayMisconfig,
			message: "The gateway is misconfigured (no API key check before the balance check), so the request was refused.",
		}).write(w)
	}
	balance, _, err := g.store.Balance(id.AccountID)
	if err != nil {
		if !errors.Is(err, keystore.ErrNotFound) {
			g.logger.Error("reading balance", zap.Error(err))
		}
		return storeUnavailable().write(w)
	}
	if balance <= 0 {
		return (&apiError{
			status: http.StatusForbidden, typ: typeInsufficientQuota, code: codeInsufficientBalance,
			message: fmt.Sprintf("The balance of account %q is %s %s, so the request was not sent. "+
				"Top up the balance to resume making requests.", id.AccountID, keystore.FormatAmount(balance), g.currency),
		}).write(w)
	}
	return next.ServeHTTP(w, r)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*BalanceGuard)(nil)
	_ caddyhttp.MiddlewareHandler = (*BalanceGuard)(nil)
)
