package caddyauth

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/caddyproxy"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// billing is one metered request between admission and settlement.
type billing struct {
	g     *BalanceGuard
	r     *http.Request
	id    keystore.Identity
	hold  *keystore.Hold
	rate  rate
	info  caddyproxy.RequestInfo
	meter *meter
	start time.Time
	repl  *caddy.Replacer
	done  bool
}

// settle replaces the hold with what the request cost:
//
//   - the provider reported usage: its tokens at the model's price;
//   - a successful (2xx) response without usage, a stream cut by either side
//     or a JSON body without a usage object: an estimate, flagged in the
//     ledger: the prompt estimate of the request plus EstimateTokens of the
//     text streamed so far (for JSON, of the whole body);
//   - anything else (an upstream error status, no response at all): nothing.
//
// Every admitted request gets one ledger row, free ones included, so that
// the ledger shows failed requests too.
func (b *billing) settle(handlerErr error) {
	if b.done {
		return
	}
	b.done = true
	m := b.meter
	status := m.status
	if !m.wroteHeader {
		status = http.StatusBadGateway
		var he caddyhttp.HandlerError
		if errors.As(handlerErr, &he) && he.StatusCode != 0 {
			status = he.StatusCode
		}
	}
	u, ok, chars := m.usage()
	estimated := false
	if !ok {
		u = caddyproxy.Usage{}
		if m.wroteHeader && status >= 200 && status < 300 {
			u.PromptTokens = b.info.EstimatedPromptTokens
			u.CompletionTokens = caddyproxy.EstimateTokens(chars)
			u.TotalTokens = u.PromptTokens + u.CompletionTokens
			estimated = true
		}
	}
	charge := keystore.Charge{
		KeyID:            b.id.KeyID,
		Model:            b.info.Model,
		RequestID:        b.requestID(),
		Cost:             b.rate.cost(u),
		PromptTokens:     u.PromptTokens,
		CompletionTokens: u.CompletionTokens,
		CachedTokens:     u.CachedTokens,
		ReasoningTokens:  u.ReasoningTokens,
		Status:           status,
		Duration:         time.Since(b.start),
		Estimated:        estimated,
	}
	if estimated {
		charge.Note = b.estimateNote(handlerErr)
	}
	if _, err := b.hold.Settle(charge); err != nil {
		b.hold.Release()
		if !errors.Is(err, keystore.ErrSettled) {
			b.g.logger.Error("settling a request failed; it was not charged",
				zap.String("account", b.id.AccountID), zap.String("key_id", b.id.KeyID),
				zap.String("model", b.info.Model), zap.Int64("cost_nano", charge.Cost),
				zap.Int64("prompt_tokens", charge.PromptTokens), zap.Int64("completion_tokens", charge.CompletionTokens),
				zap.Error(err))
			return
		}
	}
	b.record(charge, status)
}

func (b *billing) estimateNote(handlerErr error) string {
	switch {
	case b.meter.stream && b.meter.filter == nil:
		return "estimated: encoded stream, usage unreadable"
	case b.meter.stream && handlerErr != nil:
		return "estimated: stream cut before usage arrived"
	case b.meter.stream:
		return "estimated: stream ended without usage"
	default:
		return "estimated: response had no usage"
	}
}

// requestID is the provider's request id when it sent one, else one the
// gateway makes up: "gw-" and 16 hex digits. (Not Caddy's request UUID:
// Caddy creates that lazily in the request's variables, which a dial of
// reverse_proxy may still be reading when settlement runs.)
func (b *billing) requestID() string {
	h := b.meter.Header()
	for _, name := range []string{"X-Request-Id", "Request-Id", "Apim-Request-Id"} {
		if v := h.Get(name); v != "" {
			return v
		}
	}
	var buf [19]byte
	copy(buf[:], "gw-")
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], rand.Uint64())
	hex.Encode(buf[3:], n[:])
	return string(buf[:])
}

// record publishes the charge: placeholders, access log fields, metrics.
func (b *billing) record(c keystore.Charge, status int) {
	if b.repl != nil {
		// One lazy provider instead of a map entry per placeholder: most
		// configs read none of them.
		b.repl.Map(func(key string) (any, bool) {
			switch key {
			case "ai_gateway.cost":
				return keystore.FormatAmount(c.Cost), true
			case "ai_gateway.cost_nano":
				return c.Cost, true
			case "ai_gateway.tokens.prompt":
				return c.PromptTokens, true
			case "ai_gateway.tokens.completion":
				return c.CompletionTokens, true
			case "ai_gateway.tokens.cached":
				return c.CachedTokens, true
			case "ai_gateway.tokens.reasoning":
				return c.ReasoningTokens, true
			case "ai_gateway.estimated":
				return c.Estimated, true
			case "ai_gateway.request_id":
				return c.RequestID, true
			}
			return nil, false
		})
	}
	if extra, ok := b.r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Set(zap.String("ai_gateway_model", c.Model))
		extra.Set(zap.String("ai_gateway_request_id", c.RequestID))
		extra.Set(zap.Stringer("ai_gateway_cost", amount(c.Cost)))
		extra.Set(zap.Int64("ai_gateway_prompt_tokens", c.PromptTokens))
		extra.Set(zap.Int64("ai_gateway_completion_tokens", c.CompletionTokens))
		extra.Set(zap.Int64("ai_gateway_cached_tokens", c.CachedTokens))
		if c.Estimated {
			extra.Set(zap.Bool("ai_gateway_estimated", true))
		}
	}
	lm := b.rate.metrics // resolved for every price in Provision
	lm.request(status)
	for i, n := range [4]int64{c.PromptTokens, c.CompletionTokens, c.CachedTokens, c.ReasoningTokens} {
		if n > 0 {
			lm.tokens[i].Add(float64(n))
		}
	}
	if c.Cost > 0 {
		lm.cost.Add(nanoToUnits(c.Cost))
	}
	if c.Estimated {
		lm.estimated.Inc()
	}
}

// amount formats nano-units only when a log encoder asks for it.
type amount int64

func (a amount) String() string { return keystore.FormatAmount(int64(a)) }
