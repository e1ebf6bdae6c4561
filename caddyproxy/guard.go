package caddyproxy

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
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
// It fails closed: a request goes on only if its method and path are an
// endpoint the guard meters, one free by nature (GET /v1/models, answered
// by the guard itself by default, and POST /v1/moderations) or one the
// operator listed in Endpoints; every other request, and any spelling of a
// path other than the canonical one, gets 403 endpoint_not_allowed (see
// routeOf). Client credentials, OpenAI-Organization/-Project and cookies
// never go upstream, and the provider's OpenAI-Organization/-Project and
// Set-Cookie never reach the client (see headers.go).
//
// For the metered endpoints (POST /v1/chat/completions, /v1/completions,
// /v1/embeddings and /v1/responses) it reads the
// JSON body (400 invalid_json if it is not JSON, 400 model_not_priced for a
// model without a price under unknown_model reject), holds an estimate of
// the request's worst-case cost on the account (403 insufficient_balance
// when the balance minus what is already held does not cover it; a request
// that sets no output limit is instead capped to what the balance covers),
// asks the provider for usage in streams, meters the response as it
// passes, and settles: the hold is replaced by the actual cost, written to
// the ledger with the usage. Free endpoints are admitted while the balance
// minus what is held is above zero and not charged; priced ones are charged
// their price (see passPriced).
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
	// Endpoints the operator allows on top of the ones the guard knows,
	// each at a price per request or free; every endpoint neither the
	// guard nor this list knows is refused with 403 endpoint_not_allowed.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// KeyRateLimits are the rate limits of every key lineage for each kind
	// its own limits (set through the admin API) leave unset: each lineage
	// counts apart. {"rpm": 60, "tpm": 100000, "concurrency": 4, "rpd": 0,
	// "tpd": 0}; 0 or absent: no limit of that kind. See ratelimit.go.
	KeyRateLimits *keystore.RateLimits `json:"key_rate_limits,omitempty"`
	// AccountRateLimits are the rate limits of every account, across all
	// its keys, for each kind its own limits leave unset.
	AccountRateLimits *keystore.RateLimits `json:"account_rate_limits,omitempty"`
	// ModelRateLimits are limits shared by all requests for the provider
	// models a pattern matches, whoever makes them; the first match applies.
	ModelRateLimits []ModelRateLimit `json:"model_rate_limits,omitempty"`

	ratesConfigured bool // any of the three above

	models  []string // the catalog of GET /v1/models, sorted
	created int64    // "created" of the model objects: when the config loaded

	app      *management.App // its store opens when the config starts: use st()
	durable  bool            // hold the final bytes until the ledger row commits (durable.go)
	currency string
	logger   *zap.Logger
	metrics  *metrics

	unauthenticatedSeen int32 // atomic; 1 once a request came without api_key_auth
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

// Provision validates prices and finds the key store. Its errors do not
// name the module: Caddy prefixes them with "provision
// http.handlers.balance_guard: ".
func (g *BalanceGuard) Provision(ctx caddy.Context) error {
	g.logger = ctx.Logger()
	for i := range g.Prices {
		if err := g.Prices[i].provision(); err != nil {
			return err
		}
	}
	if g.UnknownModel == nil {
		g.UnknownModel = &UnknownModel{Action: "reject"}
	}
	if err := g.UnknownModel.provision(); err != nil {
		return err
	}
	if g.DefaultMaxTokens < 0 {
		return errors.New("default_max_tokens must not be negative")
	}
	if g.DefaultMaxTokens == 0 {
		g.DefaultMaxTokens = defaultMaxTokens
	}
	if g.MaxRequestBody < 0 {
		return errors.New("max_request_body must not be negative")
	}
	if g.MaxRequestBody == 0 {
		g.MaxRequestBody = defaultMaxRequestBody
	}
	if err := g.provisionCatalog(); err != nil {
		return err
	}
	if err := g.provisionEndpoints(); err != nil {
		return err
	}
	if err := g.provisionRateLimits(); err != nil {
		return err
	}
	app, err := management.LoadApp(ctx)
	if err != nil {
		return err
	}
	g.app, g.currency, g.durable = app, app.CurrencyCode(), app.DurableBillingEnabled()
	if g.metrics, err = loadMetrics(ctx, app); err != nil {
		return err
	}
	for i := range g.Prices {
		g.Prices[i].metrics = g.metrics.forLabel(g.Prices[i].Model)
	}
	g.UnknownModel.metrics = g.metrics.forLabel("unknown")
	for i := range g.Endpoints {
		g.Endpoints[i].metrics = g.metrics.forLabel(g.Endpoints[i].Path)
	}
	return nil
}

// Cleanup releases the shared metrics.
func (g *BalanceGuard) Cleanup() error {
	releaseMetrics(g.metrics, g.app)
	return nil
}

// endpoint is a metered API; routeOf finds it.
type endpoint uint8

const (
	epNone endpoint = iota
	epChat
	epCompletions
	epEmbeddings
	epResponses
)

// ServeHTTP implements caddyhttp.MiddlewareHandler. routeOf decides first
// whether the request may go on at all, and how it is paid for; a request
// that goes on loses its client-only headers, and its response the
// provider-only ones. A metered request then goes through four steps: admit (may it go, and hold its estimated cost),
// prepare (ready the body for the provider), forward (send it on through
// the meter) and end (settle the hold, or release it if the request never
// went upstream). end is deferred as soon as the hold exists, so it runs on
// every way out, a panic included; nothing else releases the hold.
func (g *BalanceGuard) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	id, ok := caddyauth.IdentityFrom(r)
	if !ok {
		return g.misconfigured(w, r)
	}
	rt := g.routeOf(r)
	switch rt.kind {
	case routeRefused:
		return g.refuse(w, rt.refusal)
	case routeCatalog:
		return g.serveModels(w, id, rt.isList, rt.modelID)
	}
	if _, err := g.app.WaitStore(r.Context()); err != nil {
		return g.refuse(w, openaiwire.StoreUnavailable())
	}
	scrubRequest(r)
	sw := newScrubWriter(w)
	// A ?model= parameter must be allowed too, whatever the endpoint.
	if refusal := g.checkQueryModel(r, id); refusal != nil {
		return g.refuse(sw, refusal)
	}
	switch rt.kind {
	case routeMedia:
		return g.passMedia(sw, r, next, id, rt.ep)
	case routeFree:
		return g.passUnmetered(sw, r, next, id)
	case routePriced:
		return g.passPriced(sw, r, next, id, rt.rule)
	case routeObject:
		return g.passObject(sw, r, next, id, rt)
	}
	w, ep := sw, rt.ep

	adm, refusal := g.admit(r, id, ep)
	if refusal != nil {
		return g.refuse(w, refusal)
	}
	sw.rate = adm.hold.RateStatus()
	defer adm.end(&err)
	if refusal := g.prepare(r, adm); refusal != nil {
		return g.refuse(w, refusal)
	}
	return g.forward(w, r, next, adm)
}

// misconfigured answers a request that reached the guard without an
// authenticated caller, because no api_key_auth ran before it, with 500
// gateway_misconfigured; the provider is never asked. The first such
// request is logged as an error with the fix, later ones at debug level;
// all are counted as rejected ("misconfigured").
//
// The mistake cannot be refused when the config loads (Caddy v2.11.9):
//   - a handler is provisioned, and its Validate called, before the other
//     handlers of its route are (Route.ProvisionHandlers loads the route's
//     whole handler list, then assigns it: modules/caddyhttp/routes.go
//     160-167; Validate follows Provision at once: context.go 427-453), and
//     before every later route (routes.go 225-233), so it cannot see what
//     runs before or after it; ctx.Modules() (context.go 655-661) gives
//     only its ancestors, the http app and any subroute, half provisioned;
//   - `caddy validate` only provisions (caddy.go 419-428, 744-750): no
//     App.Start, so no hook runs once the whole config is provisioned; and
//     the order in which apps are provisioned follows a map (caddy.go
//     574-578);
//   - even with the whole route tree, whether every request that reaches
//     the guard passed api_key_auth first depends on matchers (paths,
//     hosts, expressions, any matcher module) and on handlers that end or
//     rewrite requests: a Caddyfile with `api_key_auth /v1/*` and a
//     balance_guard without a matcher is right for /v1/ requests and
//     wrong for the others.
func (g *BalanceGuard) misconfigured(w http.ResponseWriter, r *http.Request) error {
	log := g.logger.Debug
	if atomic.CompareAndSwapInt32(&g.unauthenticatedSeen, 0, 1) {
		log = g.logger.Error
	}
	log("balance_guard got a request that no api_key_auth authenticated; it answers this and every such request with 500 gateway_misconfigured",
		zap.String("host", r.Host), zap.String("method", r.Method), zap.String("uri", r.RequestURI),
		zap.String("fix", unauthenticatedFix))
	return g.refuse(w, &openaiwire.APIError{
		Status: http.StatusInternalServerError, Type: openaiwire.TypeServerError, Code: openaiwire.CodeGatewayMisconfig,
		Reason:  "misconfigured",
		Message: "The gateway is misconfigured (no API key check before the balance check), so the request was refused.",
	})
}

// unauthenticatedFix is the remedy logged with the first unauthenticated
// request.
const unauthenticatedFix = "run api_key_auth before balance_guard on every request balance_guard handles: " +
	"in a Caddyfile, write api_key_auth in balance_guard's site (or handle) block with no matcher, " +
	"or with one that matches at least every request balance_guard's does, and keep the default directive order " +
	"(in a route block, api_key_auth goes first); in JSON, put the api_key_auth handler " +
	"(or authentication with the api_key provider) in a route that runs before balance_guard's and matches the same requests"

// passUnmetered admits a request to a free endpoint on the balance rule
// alone (nothing is held or charged) and passes it on.
func (g *BalanceGuard) passUnmetered(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, id keystore.Identity) error {
	if refusal := g.checkAllowlist(r, id); refusal != nil {
		return g.refuse(w, refusal)
	}
	// A hold of nothing is the admission check: released at once.
	hold, err := g.st().ReserveFor(id, 0, g.rateOption("", 0))
	if err != nil {
		return g.refuse(w, g.reserveError(id, err))
	}
	hold.Release()
	return next.ServeHTTP(w, r)
}

// admission is a metered request the guard let in. It owns the request's
// hold from admit on; end, deferred by ServeHTTP, is the one place that
// gives it back: settled by the billing once forward has handed the request
// on, released otherwise.
type admission struct {
	id       keystore.Identity
	ep       endpoint
	info     openaiwire.RequestInfo  // of the body as the client sent it
	raw      []byte                  // the body as the client sent it
	refs     openaiwire.ResponseRefs // of a POST /v1/responses (objects.go)
	upstream string                  // the model the provider is asked for
	rate     rate
	hold     *keystore.Hold
	capped   int64 // output limit per completion written upstream because the balance covers no more; 0: none

	dropUsage bool            // set by prepare: the gateway asked for stream usage
	repl      *caddy.Replacer // set by prepare, when the request has one
	bill      *billing        // set by forward: the request went on
}

// admit decides whether a metered request may go: it reads the body, checks
// the key's allowlist and the model's price, and holds the estimated cost
// on the account (see reserve: it must cover the request's worst case, or
// the output of a request without a limit is capped to what it covers). On
// a refusal, the error to answer, nothing is held.
func (g *BalanceGuard) admit(r *http.Request, id keystore.Identity, ep endpoint) (*admission, *openaiwire.APIError) {
	rb, _, rerr := ReadBody(r, g.MaxRequestBody, true)
	if rerr != nil {
		return nil, openaiwire.FromRequestError(rerr)
	}
	info := rb.Info
	// Stored responses (objects.go): may refuse; adds a continued
	// response's tokens to info.EstimatedPromptTokens, which holdFor holds.
	refs, refusal := g.checkStoredResponses(r.Context(), id, ep, rb.Raw, &info)
	if refusal != nil {
		return nil, refusal
	}
	upstream := g.upstreamModel(info.Model)
	if info.Model != "" && !allowed(id, info.Model, upstream) {
		return nil, modelNotAllowed(id, info.Model)
	}
	rt, ok := g.priceFor(info.Model)
	if !ok && upstream != info.Model {
		rt, ok = g.priceFor(upstream)
	}
	if !ok {
		return nil, modelNotPriced(info.Model)
	}
	hold, capped, refusal := g.reserve(id, ep, info, rb.Raw, rt, g.rateOption(upstream, g.requestTokens(ep, info)))
	if refusal != nil {
		return nil, refusal
	}
	return &admission{id: id, ep: ep, info: info, raw: rb.Raw, refs: refs, upstream: upstream, rate: rt, hold: hold, capped: capped}, nil
}

// prepare readies an admitted request for the provider: a stream that did
// not ask for usage asks for it (the meter takes it out of the response
// again), a capped request gets its output limit, an alias is replaced by the provider's model, the response is
// asked for unencoded so the meter can read it, and the model placeholders
// are set. Its refusal is the error to answer.
func (g *BalanceGuard) prepare(r *http.Request, a *admission) *openaiwire.APIError {
	body := a.raw
	if a.info.Stream && !a.info.IncludeUsage && (a.ep == epChat || a.ep == epCompletions) {
		injected, err := openaiwire.InjectIncludeUsage(body)
		if err != nil {
			return openaiwire.FromRequestError(openaiwire.InvalidJSON(err))
		}
		body, a.dropUsage = injected, true
	}
	if a.upstream != a.info.Model {
		rewritten, err := openaiwire.RewriteModel(body, a.upstream)
		if err != nil {
			return openaiwire.FromRequestError(openaiwire.InvalidJSON(err))
		}
		body = rewritten
	}
	body, refusal := a.capBody(body)
	if refusal != nil {
		return refusal
	}
	if a.dropUsage || a.upstream != a.info.Model || a.capped > 0 {
		SetBody(r, &Body{Raw: body, Info: a.info, Model: a.upstream})
	}
	r.Header.Set("Accept-Encoding", "identity")

	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok && repl != nil {
		repl.Set("ai_gateway.model", a.info.Model)
		repl.Set("ai_gateway.upstream_model", a.upstream)
		a.repl = repl
	}
	return nil
}

// forward hands the request on with the response going through a meter,
// which reads the usage as it passes. From here on the hold is settled, not
// released (see end).
func (g *BalanceGuard) forward(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, a *admission) error {
	a.announceCap(w)
	m := newMeter(w, a.dropUsage)
	m.durable = g.durable
	m.record = a.ep == epResponses && !a.refs.NotStored // objects.go
	a.bill = &billing{g: g, r: r, admission: a, meter: m, start: time.Now()}
	// Learn whether the request reached the provider, for a client that
	// leaves before the answer (see settle).
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{WroteRequest: a.bill.wroteRequest}))
	err := next.ServeHTTP(m, r)
	m.finish()
	return err
}

// end gives the hold back, once, on every way out of ServeHTTP: a request
// that never went on (prepare refused it, or panicked) is released; one
// that did is settled with what the meter saw and the handler error in
// *errp, or the panic, which is then passed on.
func (a *admission) end(errp *error) {
	rec := recover()
	switch {
	case a.bill == nil:
		a.hold.Release()
	case rec != nil:
		a.bill.meter.stopDecoder()
		a.bill.settle(fmt.Errorf("panic: %v", rec))
	default:
		a.bill.meter.stopDecoder()
		a.bill.settle(*errp)
	}
	if rec != nil {
		panic(rec)
	}
}

// holdFor is what admission holds for a request: the cost of its estimated
// prompt plus, except for embeddings, its output limit (max_tokens or the
// default) for every completion it asks for (n, best_of, batched prompts),
// capped at keystore.MaxAmount, the largest hold the store takes (a request
// asking for more is held at that, which no balance covers, so it is
// refused for the balance, not as if the store had failed).
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
	var (
		limit *keystore.LimitError
		rl    *keystore.RateLimitError
	)
	switch {
	case errors.As(err, &rl):
		return g.rateLimited(rl)
	case errors.As(err, &limit):
		return g.keyLimit(id, limit)
	case errors.Is(err, keystore.ErrInsufficientBalance):
		balance, held, _ := g.st().Available(accountID)
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
	if sw, ok := w.(*scrubWriter); ok {
		sw.own = e.Header
	}
	return e.Write(w)
}

// st is the key store of this config; ServeHTTP has checked that it is open.
func (g *BalanceGuard) st() *keystore.Store { return g.app.Store() }

// Interface guards
var (
	_ caddy.Provisioner           = (*BalanceGuard)(nil)
	_ caddy.CleanerUpper          = (*BalanceGuard)(nil)
	_ caddyhttp.MiddlewareHandler = (*BalanceGuard)(nil)
)
