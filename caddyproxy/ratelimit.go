package caddyproxy

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// Rate limits (see keystore/ratelimit.go for the exact rules). The key
// lineage's and the account's own limits are stored with them and apply on
// every request the guard admits; the guard adds the defaults of its
// config (KeyRateLimits, AccountRateLimits) for the kinds those leave
// unset, and the first ModelRateLimit matching the provider's model. A
// refused request gets 429 rate_limit_exceeded with Retry-After and never
// reaches the provider; an admitted one carries OpenAI's x-ratelimit-*
// headers of the tightest limit that applied.

// ModelRateLimit is a rate limit shared by every request, of every key and
// account, for the provider models its pattern matches: an operator's way
// to stay under the provider's own limits for a model.
type ModelRateLimit struct {
	// Model is a glob in path.Match syntax ("gpt-4o*"), matched against
	// the model the provider is asked for (after aliases). All the models
	// it matches share one count; the first matching entry applies.
	Model string `json:"model"`
	// The limits (rpm, tpm, concurrency, rpd, tpd); at least one.
	keystore.RateLimits
}

// provisionRateLimits checks the configured limits.
func (g *BalanceGuard) provisionRateLimits() error {
	for _, l := range []struct {
		name string
		l    *keystore.RateLimits
	}{{"key_rate_limits", g.KeyRateLimits}, {"account_rate_limits", g.AccountRateLimits}} {
		if l.l == nil {
			continue
		}
		if err := l.l.Validate(); err != nil {
			return fmt.Errorf("%s: %w", l.name, err)
		}
	}
	seen := map[string]bool{}
	for _, m := range g.ModelRateLimits {
		if _, err := keystore.ValidateModelPatterns([]string{m.Model}); err != nil || m.Model == "" {
			return fmt.Errorf("model_rate_limits: model %q is not a valid model pattern", m.Model)
		}
		if seen[m.Model] {
			return fmt.Errorf("model_rate_limits: model %q is limited twice", m.Model)
		}
		seen[m.Model] = true
		if err := m.RateLimits.Validate(); err != nil {
			return fmt.Errorf("model_rate_limits %s: %w", m.Model, err)
		}
		if m.RateLimits.IsZero() {
			return fmt.Errorf("model_rate_limits %s: sets no limit", m.Model)
		}
	}
	g.ratesConfigured = g.KeyRateLimits != nil || g.AccountRateLimits != nil || len(g.ModelRateLimits) > 0
	return nil
}

// rateOption is what a request asks of the rate limits on top of its key's
// and account's own: the config's defaults, the model limit matching
// upstream (the provider's model; "" for requests without one) and its token
// estimate (0: not counted against token limits).
func (g *BalanceGuard) rateOption(upstream string, tokens int64) keystore.ReserveOption {
	if !g.ratesConfigured {
		return keystore.WithRate(nil) // the stored limits still apply
	}
	r := &keystore.RateRequest{Tokens: tokens}
	if g.KeyRateLimits != nil {
		r.KeyDefaults = *g.KeyRateLimits
	}
	if g.AccountRateLimits != nil {
		r.AccountDefaults = *g.AccountRateLimits
	}
	if upstream != "" {
		for i := range g.ModelRateLimits {
			if m := &g.ModelRateLimits[i]; keystore.MatchModel([]string{m.Model}, upstream) {
				r.Model, r.ModelLimits = m.Model, m.RateLimits
				break
			}
		}
	}
	return keystore.WithRate(r)
}

// requestTokens is a metered request's token estimate for the token
// limits: its estimated prompt plus the output it may produce (its output
// limit, or default_max_tokens, for every completion; none for
// embeddings), saturating. A request capped by the balance counts its
// uncapped limit.
func (g *BalanceGuard) requestTokens(ep endpoint, info openaiwire.RequestInfo) int64 {
	maxOut := info.MaxTokens
	if maxOut == 0 {
		maxOut = int64(g.DefaultMaxTokens)
	}
	if ep == epEmbeddings {
		maxOut = 0
	}
	out := mulSat(maxOut, max(info.Completions, 1))
	if out > math.MaxInt64-info.EstimatedPromptTokens {
		return math.MaxInt64
	}
	return max(info.EstimatedPromptTokens+out, 1)
}

// rateKinds describe the kinds of limit in a refusal's message.
var rateKinds = map[string]string{
	keystore.RateRPM:         "requests per min (RPM)",
	keystore.RateTPM:         "tokens per min (TPM)",
	keystore.RateRPD:         "requests per day (RPD)",
	keystore.RateTPD:         "tokens per day (TPD)",
	keystore.RateConcurrency: "requests in flight (concurrency)",
}

// concurrencyRetry is the wait announced for a refusal by a concurrency
// limit, which frees up when a request in flight ends, at a moment no one
// can tell in advance.
const concurrencyRetry = time.Second

// rateLimited is the 429 of a request a rate limit refused, in OpenAI's
// shape and with its headers: Retry-After (whole seconds, rounded up),
// retry-after-ms, and the x-ratelimit-* of the tightest limits. A request
// that can never fit (more tokens than the limit) gets no Retry-After and
// x-should-retry: false, which the OpenAI SDKs obey.
func (g *BalanceGuard) rateLimited(e *keystore.RateLimitError) *openaiwire.APIError {
	g.metrics.rateLimited.WithLabelValues(e.Kind, e.Scope).Inc()
	typ := openaiwire.TypeRequests
	if e.Kind == keystore.RateTPM || e.Kind == keystore.RateTPD {
		typ = openaiwire.TypeTokens
	}
	who := e.Scope + " " + e.ID
	h := http.Header{}
	setRateHeaders(h, e.Status)
	var msg string
	if e.TooLarge {
		msg = fmt.Sprintf("Request too large for %s on %s: Limit %d, Requested %d. The input or output tokens must be reduced in order to run successfully.",
			who, rateKinds[e.Kind], e.Limit, e.Requested)
		h.Set("X-Should-Retry", "false")
	} else {
		wait := e.RetryAfter
		if e.Kind == keystore.RateConcurrency || wait <= 0 {
			wait = concurrencyRetry
		}
		wait = ceilMS(wait)
		msg = fmt.Sprintf("Rate limit reached for %s on %s: Limit %d, Used %d, Requested %d. Please try again in %s.",
			who, rateKinds[e.Kind], e.Limit, e.Used, e.Requested, wait)
		h.Set("Retry-After", strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
		h.Set("Retry-After-Ms", strconv.FormatInt(wait.Milliseconds(), 10))
	}
	return &openaiwire.APIError{
		Status: http.StatusTooManyRequests, Type: typ, Code: openaiwire.CodeRateLimitExceeded, Reason: openaiwire.CodeRateLimitExceeded,
		Message: msg, Header: h,
	}
}

// ceilMS rounds d up to a whole millisecond.
func ceilMS(d time.Duration) time.Duration {
	return (d + time.Millisecond - 1) / time.Millisecond * time.Millisecond
}

// Header names of the rate limit state, as OpenAI sends them.
const (
	headerLimitRequests     = "X-Ratelimit-Limit-Requests"
	headerRemainingRequests = "X-Ratelimit-Remaining-Requests"
	headerResetRequests     = "X-Ratelimit-Reset-Requests"
	headerLimitTokens       = "X-Ratelimit-Limit-Tokens"
	headerRemainingTokens   = "X-Ratelimit-Remaining-Tokens"
	headerResetTokens       = "X-Ratelimit-Reset-Tokens"
)

// setRateHeaders writes the x-ratelimit-* headers of st into h: the
// requests trio when a request limit applied, the tokens trio when a
// token limit did. Resets are in OpenAI's format ("1s", "6m0s", "850ms"),
// rounded up to the millisecond.
func setRateHeaders(h http.Header, st keystore.RateStatus) {
	if st.HasRequests {
		h.Set(headerLimitRequests, strconv.FormatInt(st.RequestsLimit, 10))
		h.Set(headerRemainingRequests, strconv.FormatInt(st.RequestsRemaining, 10))
		h.Set(headerResetRequests, ceilMS(st.RequestsReset).String())
	}
	if st.HasTokens {
		h.Set(headerLimitTokens, strconv.FormatInt(st.TokensLimit, 10))
		h.Set(headerRemainingTokens, strconv.FormatInt(st.TokensRemaining, 10))
		h.Set(headerResetTokens, ceilMS(st.TokensReset).String())
	}
}

// dropProviderRateHeaders removes the provider's x-ratelimit-* headers:
// they describe the operator's provider account, not the caller's limits.
func dropProviderRateHeaders(h http.Header) {
	for k := range h {
		if len(k) > len("X-Ratelimit-") && strings.EqualFold(k[:len("X-Ratelimit-")], "X-Ratelimit-") {
			delete(h, k)
		}
	}
}
