package caddyproxy

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptrace"
	"path"
	"strings"
	"time"

	"github.com/metask/caddy-ai-gateway/caddyauth"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
	"github.com/metask/caddy-ai-gateway/keystore"
	"github.com/metask/caddy-ai-gateway/management"
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
	// Aliases map public model names to the provider's model names
	// ("fast": "gpt-4o-mini"). The request body is rewritten before it goes
	// upstream; prices, allowlists, the ledger, metrics and
	// {ai_gateway.model} use the public name, and a public name without a
	// price of its own is priced as its target. ai_model matchers see the
	// provider's name.
	Aliases map[string]string `json:"aliases,omitempty"`
	// Who answers GET /v1/models (and /v1/models/{id}): "gateway" (the
	// default) lists the priced models without patterns and the aliases,
	// filtered by the calling key's allowlist; "upstream" passes the
	// request to the provider like any other.
	ModelsEndpoint string `json:"models_endpoint,omitempty"`

	models  []string // the catalog of GET /v1/models, sorted
	created int64    // "created" of the model objects: when the config loaded

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
	if err := g.provisionCatalog(); err != nil {
		return fmt.Errorf("balance_guard: %w", err)
	}
	store, currency, err := management.LoadStore(ctx)
	if err != nil {
		return fmt.Errorf("balance_guard: %w", err)
	}
	g.store, g.currency = store, currency
	if g.metrics, err = loadMetrics(ctx, store); err != nil {
		return fmt.Errorf("balance_guard: %w", err)
	}
	for i := range g.Prices {
		g.Prices[i].metrics = g.metrics.forLabel(g.Prices[i].Model)
	}
	g.UnknownModel.metrics = g.metrics.forLabel("unknown")
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

// endpointOf tells which metered API a request is for, by the end of its
// path. The match is lenient so that it fails closed: a provider or a CDN in
// front of it may route spellings of these paths leniently, and none of them
// must go through unbilled. So the method is compared in any case, the path
// is cleaned of dot segments, and any case, trailing slashes, dots, spaces
// and NULs, and ";parameters" in the last segment are ignored
// (/v1/Chat/Completions/%2e;x is chat).
func endpointOf(r *http.Request) endpoint {
	if !strings.EqualFold(r.Method, http.MethodPost) {
		return epNone
	}
	p := r.URL.Path
	if strings.Contains(p, "/.") {
		p = path.Clean(p)
	}
	p = strings.TrimRight(p, pathJunk)
	if i := strings.LastIndexByte(p, ';'); i > strings.LastIndexByte(p, '/') {
		p = strings.TrimRight(p[:i], pathJunk)
	}
	switch {
	case hasSuffixFold(p, "/chat/completions"):
		return epChat
	case hasSuffixFold(p, "/completions"):
		return epCompletions
	case hasSuffixFold(p, "/embeddings"):
		return epEmbeddings
	case hasSuffixFold(p, "/responses"):
		return epResponses
	}
	return epNone
}

// pathJunk is what endpointOf ignores at the end of a path.
const pathJunk = "/. \t\r\n\x00"

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (g *BalanceGuard) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	id, ok := caddyauth.IdentityFrom(r)
	if !ok {
		g.logger.Error("balance_guard reached without an authenticated caller; put api_key_auth before it")
		g.metrics.rejected.WithLabelValues("misconfigured").Inc()
		return (&openaiwire.APIError{
			Status: http.StatusInternalServerError, Type: openaiwire.TypeServerError, Code: openaiwire.CodeGatewayMisconfig,
			Message: "The gateway is misconfigured (no API key check before the balance check), so the request was refused.",
		}).Write(w)
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && g.ModelsEndpoint == modelsFromGateway {
		if isList, modelID, ok := modelsPath(r.URL.Path); ok {
			return g.serveModels(w, id, isList, modelID)
		}
	}
	ep := endpointOf(r)
	if ep == epNone {
		if len(id.AllowedModels) > 0 {
			// A key with an allowlist may not reach another model through
			// an endpoint the gateway does not meter (images, audio, …).
			b, ok, rerr := ReadBody(r, g.MaxRequestBody, false)
			if rerr != nil {
				return g.refuse(w, openaiwire.FromRequestError(rerr))
			}
			if ok && b.Info.Model != "" && !allowed(id, b.Info.Model, g.upstreamModel(b.Info.Model)) {
				return g.refuse(w, modelNotAllowed(id, b.Info.Model))
			}
		}
		hold, err := g.store.ReserveFor(id, 0)
		if err != nil {
			return g.refuse(w, g.reserveError(id, err))
		}
		hold.Release()
		return next.ServeHTTP(w, r)
	}

	rb, _, rerr := ReadBody(r, g.MaxRequestBody, true)
	if rerr != nil {
		return g.refuse(w, openaiwire.FromRequestError(rerr))
	}
	info := rb.Info
	upstream := g.upstreamModel(info.Model)
	if info.Model != "" && !allowed(id, info.Model, upstream) {
		return g.refuse(w, modelNotAllowed(id, info.Model))
	}
	rt, ok := g.priceFor(info.Model)
	if !ok && upstream != info.Model {
		rt, ok = g.priceFor(upstream)
	}
	if !ok {
		return g.refuse(w, modelNotPriced(info.Model))
	}
	hold, err := g.store.ReserveFor(id, g.holdFor(ep, info, rt))
	if err != nil {
		return g.refuse(w, g.reserveError(id, err))
	}

	body := rb.Raw
	dropUsage := false
	if info.Stream && !info.IncludeUsage && (ep == epChat || ep == epCompletions) {
		injected, err := openaiwire.InjectIncludeUsage(body)
		if err != nil {
			hold.Release()
			return g.refuse(w, openaiwire.FromRequestError(openaiwire.InvalidJSON(err)))
		}
		body, dropUsage = injected, true
	}
	if upstream != info.Model {
		rewritten, err := openaiwire.RewriteModel(body, upstream)
		if err != nil {
			hold.Release()
			return g.refuse(w, openaiwire.FromRequestError(openaiwire.InvalidJSON(err)))
		}
		body = rewritten
	}
	if dropUsage || upstream != info.Model {
		SetBody(r, &Body{Raw: body, Info: info, Model: upstream})
	}
	// Usage is read from the response as it passes: ask for it unencoded.
	r.Header.Set("Accept-Encoding", "identity")

	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl != nil {
		repl.Set("ai_gateway.model", info.Model)
		repl.Set("ai_gateway.upstream_model", upstream)
	}

	m := newMeter(w, dropUsage)
	b := &billing{g: g, r: r, ep: ep, id: id, hold: hold, rate: rt, info: info, meter: m, start: time.Now(), repl: repl}
	// Learn whether the request reached the provider, for a client that
	// leaves before the answer (see settle).
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{WroteRequest: b.wroteRequest}))
	var handlerErr error
	defer func() {
		// Settle whatever happens, a panic included; the hold never leaks.
		m.stopDecoder()
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

// holdFor is what admission holds for a request: the cost of its estimated
// prompt plus, except for embeddings, its output limit (max_tokens or the
// default) for every completion it asks for (n, best_of, batched prompts),
// capped at keystore.MaxAmount, the largest hold the store takes (a request
// asking for more is held at that, not refused as if the store had failed).
func (g *BalanceGuard) holdFor(ep endpoint, info openaiwire.RequestInfo, rt rate) int64 {
	maxOut := info.MaxTokens
	if maxOut == 0 {
		maxOut = int64(g.DefaultMaxTokens)
	}
	if ep == epEmbeddings {
		maxOut = 0
	}
	out := int64(math.MaxInt64)
	if c := max(info.Completions, 1); maxOut == 0 || c <= math.MaxInt64/maxOut {
		out = maxOut * c
	}
	return min(rt.cost(openaiwire.Usage{PromptTokens: info.EstimatedPromptTokens, CompletionTokens: out}), keystore.MaxAmount)
}

func (g *BalanceGuard) reserveError(id keystore.Identity, err error) *openaiwire.APIError {
	accountID := id.AccountID
	var limit *keystore.LimitError
	switch {
	case errors.As(err, &limit):
		return g.keyLimit(id, limit)
	case errors.Is(err, keystore.ErrInsufficientBalance):
		balance, held, _ := g.store.Available(accountID)
		return g.insufficient(accountID, balance, held)
	case errors.Is(err, keystore.ErrAccountDisabled):
		return openaiwire.AccountDisabled(accountID)
	}
	g.logger.Error("reserving balance", zap.String("account", accountID), zap.Error(err))
	return openaiwire.StoreUnavailable()
}

func (g *BalanceGuard) keyLimit(id keystore.Identity, e *keystore.LimitError) *openaiwire.APIError {
	period := map[string]string{keystore.PeriodDay: "daily ", keystore.PeriodMonth: "monthly ", keystore.PeriodTotal: ""}[e.Limit.Period]
	spentIn := map[string]string{keystore.PeriodDay: " today", keystore.PeriodMonth: " this month", keystore.PeriodTotal: ""}[e.Limit.Period]
	msg := fmt.Sprintf("The API key %q has reached its %sspend limit of %s %s (spent %s %s%s",
		id.KeyName, period, keystore.FormatAmount(e.Limit.Amount), g.currency,
		keystore.FormatAmount(e.Spent), g.currency, spentIn)
	if e.Held > 0 {
		msg += fmt.Sprintf(", %s %s held for requests in progress", keystore.FormatAmount(e.Held), g.currency)
	}
	msg += "), so the request was not sent."
	if e.Resets != nil {
		msg += " The limit resets at " + e.Resets.UTC().Format(time.RFC3339) + "."
	}
	msg += " Ask the operator of this gateway to raise the limit."
	return &openaiwire.APIError{
		Status: http.StatusForbidden, Type: openaiwire.TypeInsufficientQuota, Code: openaiwire.CodeKeyLimitExceeded, Reason: openaiwire.CodeKeyLimitExceeded,
		Message: msg,
	}
}

func (g *BalanceGuard) insufficient(accountID string, balance, held int64) *openaiwire.APIError {
	msg := fmt.Sprintf("The balance of account %q is %s %s", accountID, keystore.FormatAmount(balance), g.currency)
	if held > 0 {
		msg += fmt.Sprintf(", of which %s %s is held for requests in progress", keystore.FormatAmount(held), g.currency)
	}
	return &openaiwire.APIError{
		Status: http.StatusForbidden, Type: openaiwire.TypeInsufficientQuota, Code: openaiwire.CodeInsufficientBalance,
		Reason:  "insufficient_balance",
		Message: msg + ", so the request was not sent. Top up the balance to resume making requests.",
	}
}

// refuse answers an error of the guard itself and counts it.
func (g *BalanceGuard) refuse(w http.ResponseWriter, e *openaiwire.APIError) error {
	reason := e.Reason
	if reason == "" {
		reason = e.Code
	}
	g.metrics.rejected.WithLabelValues(reason).Inc()
	return e.Write(w)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*BalanceGuard)(nil)
	_ caddy.CleanerUpper          = (*BalanceGuard)(nil)
	_ caddyhttp.MiddlewareHandler = (*BalanceGuard)(nil)
)
