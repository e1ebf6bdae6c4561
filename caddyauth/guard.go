package caddyauth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/caddyproxy"
	"github.com/metask/caddy-ai-gateway/keystore"
)

func init() {
	caddy.RegisterModule(BalanceGuard{})
}

// BalanceGuard admits, reserves and bills. It must come after api_key_auth
// (or Caddy's authentication handler with the api_key provider); without an
// authenticated caller it refuses the request.
//
// For POST requests to the metered endpoints (paths ending in
// /chat/completions, /completions, /embeddings or /responses) it reads the
// JSON body (400 invalid_json if it is not JSON, 400 model_not_priced for a
// model without a price under unknown_model reject), holds an estimate of
// the request's cost on the account (403 insufficient_balance when the
// balance minus what is already held is <= 0), asks the provider for usage
// in streams, meters the response as it passes, and settles: the hold is
// replaced by the actual cost, written to the ledger with the usage. Other
// requests are admitted on the same balance rule and not charged.
type BalanceGuard struct {
	// Per-model prices, per 1M tokens. The first matching pattern wins.
	Prices []Price `json:"prices,omitempty"`
	// What to do with a model no price matches. Default: reject.
	UnknownModel *UnknownModel `json:"unknown_model,omitempty"`
	// Completion tokens to reserve when a request sets no max_tokens,
	// max_completion_tokens or max_output_tokens. Default 4096.
	DefaultMaxTokens int `json:"default_max_tokens,omitempty"`
	// Largest request body, in bytes, the guard reads to meter a request;
	// larger bodies get 413. Default 64 MiB. Caddy's request_body max_size
	// applies as well.
	MaxRequestBody int64 `json:"max_request_body,omitempty"`

	store    *keystore.Store
	currency string
	logger   *zap.Logger
	metrics  *metrics
}

// CaddyModule returns the Caddy module information.
func (BalanceGuard) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.balance_guard",
		New: func() caddy.Module { return new(BalanceGuard) },
	}
}

const (
	defaultMaxTokens      = 4096
	defaultMaxRequestBody = 64 << 20
)

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
	if g.DefaultMaxTokens == 0 {
		g.DefaultMaxTokens = defaultMaxTokens
	}
	if g.MaxRequestBody < 0 {
		return fmt.Errorf("balance_guard: max_request_body must not be negative")
	}
	if g.MaxRequestBody == 0 {
		g.MaxRequestBody = defaultMaxRequestBody
	}
	store, currency, err := loadStore(ctx)
	if err != nil {
		return fmt.Errorf("balance_guard: %w", err)
	}
	g.store, g.currency = store, currency
	if g.metrics, err = loadMetrics(ctx, store); err != nil {
		return fmt.Errorf("balance_guard: %w", err)
	}
	return nil
}

// Cleanup releases the shared metrics.
func (g *BalanceGuard) Cleanup() error {
	releaseMetrics(g.metrics, g.store)
	return nil
}

// endpoint is a metered API.
type endpoint uint8

const (
	epNone endpoint = iota
	epChat
	epCompletions
	epEmbeddings
	epResponses
)

func endpointOf(r *http.Request) endpoint {
	if r.Method != http.MethodPost {
		return epNone
	}
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case strings.HasSuffix(p, "/chat/completions"):
		return epChat
	case strings.HasSuffix(p, "/completions"):
		return epCompletions
	case strings.HasSuffix(p, "/embeddings"):
		return epEmbeddings
	case strings.HasSuffix(p, "/responses"):
		return epResponses
	}
	return epNone
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (g *BalanceGuard) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	id, ok := identityFrom(r)
	if !ok {
		g.logger.Error("balance_guard reached without an authenticated caller; put api_key_auth before it")
		g.metrics.rejected.WithLabelValues("misconfigured").Inc()
		return (&apiError{
			status: http.StatusInternalServerError, typ: typeServerError, code: codeGatewayMisconfig,
			message: "The gateway is misconfigured (no API key check before the balance check), so the request was refused.",
		}).write(w)
	}
	ep := endpointOf(r)
	if ep == epNone {
		if e := g.admit(id.AccountID); e != nil {
			return g.refuse(w, e)
		}
		return next.ServeHTTP(w, r)
	}

	body, e := g.readBody(r)
	if e != nil {
		return g.refuse(w, e)
	}
	info, err := caddyproxy.ParseRequest(body)
	if err != nil {
		return g.refuse(w, invalidJSON(err))
	}
	rt, ok := g.priceFor(info.Model)
	if !ok {
		return g.refuse(w, modelNotPriced(info.Model))
	}
	maxOut := info.MaxTokens
	if maxOut == 0 {
		maxOut = int64(g.DefaultMaxTokens)
	}
	if ep == epEmbeddings {
		maxOut = 0
	}
	hold, err := g.store.Reserve(id.AccountID, rt.cost(caddyproxy.Usage{
		PromptTokens: info.EstimatedPromptTokens, CompletionTokens: maxOut}))
	if err != nil {
		return g.refuse(w, g.reserveError(id.AccountID, err))
	}

	dropUsage := false
	if info.Stream && !info.IncludeUsage && (ep == epChat || ep == epCompletions) {
		injected, err := caddyproxy.InjectIncludeUsage(body)
		if err != nil {
			hold.Release()
			return g.refuse(w, invalidJSON(err))
		}
		body, dropUsage = injected, true
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	r.TransferEncoding = nil
	// Usage is read from the response as it passes: ask for it unencoded.
	r.Header.Set("Accept-Encoding", "identity")

	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl != nil {
		repl.Set("ai_gateway.model", info.Model)
	}

	m := newMeter(w, dropUsage)
	b := &billing{g: g, r: r, id: id, hold: hold, rate: rt, info: info, meter: m, start: time.Now(), repl: repl}
	var handlerErr error
	defer func() {
		// Settle whatever happens, a panic included; the hold never leaks.
		if rec := recover(); rec != nil {
			b.settle(fmt.Errorf("panic: %v", rec))
			panic(rec)
		}
		b.settle(handlerErr)
	}()
	handlerErr = next.ServeHTTP(m, r)
	m.finish()
	return handlerErr
}

// admit applies the admission rule to a request that is not metered.
func (g *BalanceGuard) admit(accountID string) *apiError {
	balance, held, err := g.store.Available(accountID)
	if err != nil {
		return g.reserveError(accountID, err)
	}
	if balance-held <= 0 {
		return g.insufficient(accountID, balance, held)
	}
	return nil
}

func (g *BalanceGuard) reserveError(accountID string, err error) *apiError {
	switch {
	case errors.Is(err, keystore.ErrInsufficientBalance):
		balance, held, _ := g.store.Available(accountID)
		return g.insufficient(accountID, balance, held)
	case errors.Is(err, keystore.ErrAccountDisabled):
		return accountDisabled(accountID)
	}
	g.logger.Error("reserving balance", zap.String("account", accountID), zap.Error(err))
	return storeUnavailable()
}

func (g *BalanceGuard) insufficient(accountID string, balance, held int64) *apiError {
	msg := fmt.Sprintf("The balance of account %q is %s %s", accountID, keystore.FormatAmount(balance), g.currency)
	if held > 0 {
		msg += fmt.Sprintf(", of which %s %s is held for requests in progress", keystore.FormatAmount(held), g.currency)
	}
	return &apiError{
		status: http.StatusForbidden, typ: typeInsufficientQuota, code: codeInsufficientBalance,
		reason:  "insufficient_balance",
		message: msg + ", so the request was not sent. Top up the balance to resume making requests.",
	}
}

// refuse answers an error of the guard itself and counts it.
func (g *BalanceGuard) refuse(w http.ResponseWriter, e *apiError) error {
	reason := e.reason
	if reason == "" {
		reason = e.code
	}
	g.metrics.rejected.WithLabelValues(reason).Inc()
	return e.write(w)
}

// readBody reads the whole request body, bounded by MaxRequestBody and by
// Caddy's request_body max_size.
func (g *BalanceGuard) readBody(r *http.Request) ([]byte, *apiError) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, invalidJSON(errors.New("request body is empty"))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, g.MaxRequestBody+1))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) || int64(len(body)) > g.MaxRequestBody {
		limit := g.MaxRequestBody
		if tooBig != nil {
			limit = tooBig.Limit
		}
		return nil, requestTooLarge(limit)
	}
	if err != nil {
		return nil, &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, code: codeInvalidJSON,
			reason: "body_unreadable", message: "The request body could not be read: " + err.Error()}
	}
	return body, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*BalanceGuard)(nil)
	_ caddy.CleanerUpper          = (*BalanceGuard)(nil)
	_ caddyhttp.MiddlewareHandler = (*BalanceGuard)(nil)
)
