package caddyproxy

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// billing is one metered request from the moment forward hands it on:
// what the meter saw, and whether the request reached a provider. Its
// settle is called once, by admission.end.
type billing struct {
	*admission // who, which model at which price, and the hold
	g          *BalanceGuard
	r          *http.Request
	meter      *meter
	start      time.Time
	done       bool
	sent       atomic.Bool // the request was written to a provider
}

// wroteRequest is the httptrace hook that reports a request written upstream.
func (b *billing) wroteRequest(info httptrace.WroteRequestInfo) {
	if info.Err == nil {
		b.sent.Store(true)
	}
}

// settle replaces the hold with what the request cost:
//
//   - the provider reported usage: its tokens at the model's price, whatever
//     the status;
//   - a successful (2xx) response without usage, a stream cut by either side
//     or a JSON body without a usage object: an estimate, flagged in the
//     ledger: the prompt estimate of the request plus EstimateTokens of the
//     text streamed so far (for JSON, of the whole body; nothing for
//     embeddings, whose output is not billed as completion tokens);
//   - the client left (499) after the request was written to the provider
//     but before the answer: the prompt estimate, flagged (the provider has
//     the request and may bill it, so it is not free);
//   - reported usage whose cost does not fit in an amount
//     (keystore.MaxAmount): the estimate above instead, flagged;
//   - anything else (an upstream error status without usage, no response at
//     all): nothing.
//
// Every admitted request gets one ledger row, free ones included, so that
// the ledger shows failed requests too.
func (b *billing) settle(handlerErr error) {
	if b.done {
		return
	}
	b.done = true
	defer b.releaseRecorded()
	m := b.meter
	status := finalStatus(m.wroteHeader, m.status, handlerErr)
	u, ok, chars := m.usage()
	cost := b.rate.cost(u)
	note := ""
	outOfRange := ok && cost > keystore.MaxAmount
	if outOfRange {
		ok, note = false, fmt.Sprintf("estimated: reported usage out of range (prompt %d, completion %d tokens)", u.PromptTokens, u.CompletionTokens)
	}
	estimated := false
	if !ok {
		u = openaiwire.Usage{}
		switch {
		case m.wroteHeader && status >= 200 && status < 300, outOfRange:
			u.PromptTokens = b.info.EstimatedPromptTokens
			if b.ep != epEmbeddings {
				u.CompletionTokens = openaiwire.EstimateTokens(chars)
			}
			estimated = true
		case status == statusClientClosed && b.sent.Load():
			u.PromptTokens = b.info.EstimatedPromptTokens
			note, estimated = "estimated: client left before the response", true
		}
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
		cost = min(b.rate.cost(u), keystore.MaxAmount)
	}
	charge := keystore.Charge{
		KeyID:            b.id.KeyID,
		Model:            b.info.Model,
		RequestID:        b.requestID(),
		Cost:             cost,
		PromptTokens:     u.PromptTokens,
		CompletionTokens: u.CompletionTokens,
		CachedTokens:     min(u.CachedTokens, u.PromptTokens), // a provider's excess is not a token that was read
		ReasoningTokens:  u.ReasoningTokens,
		Status:           status,
		Duration:         time.Since(b.start),
		Estimated:        estimated,
	}
	if estimated {
		if note == "" {
			note = b.estimateNote(handlerErr)
		}
		charge.Note = note
	}
	if c := b.capNote(); c != "" {
		charge.Note = joinNotes(charge.Note, c)
	}
	b.recordResponse(status, charge)
	if b.commitCharge(charge) {
		b.record(charge, status)
	}
}

// commitCharge replaces the hold with charge and, with durable billing,
// releases the end of the answer once the ledger row is committed. It
// reports false when the charge could not be settled (logged; the hold is
// released); a hold already ended counts as settled.
func (b *billing) commitCharge(charge keystore.Charge) bool {
	entry, err := b.hold.Settle(charge)
	if err == nil {
		b.awaitCommit(func(ctx context.Context) error { return b.g.st().WaitCommitted(ctx, entry) })
		return true
	}
	b.hold.Release()
	if errors.Is(err, keystore.ErrSettled) {
		return true
	}
	b.g.logger.Error("settling a request failed; it was not charged",
		zap.String("account", b.id.AccountID), zap.String("key_id", b.id.KeyID),
		zap.String("model", b.info.Model), zap.Int64("cost_nano", charge.Cost),
		zap.Int64("prompt_tokens", charge.PromptTokens), zap.Int64("completion_tokens", charge.CompletionTokens),
		zap.Error(err))
	return false
}

// joinNotes joins two ledger notes with "; ".
func joinNotes(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
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

// statusClientClosed is the status reverse_proxy records when the client
// went away before the response ("client closed request").
const statusClientClosed = 499

// requestID is the provider's request id when it sent one, else one the
// gateway makes up: "gw-" and 16 hex digits. (Not Caddy's request UUID:
// Caddy creates that lazily in the request's variables, which a dial of
// reverse_proxy may still be reading when settlement runs.)
func (b *billing) requestID() string { return requestIDOf(b.meter.Header()) }

// requestIDOf is the request id of a response's header h, or a new one.
func requestIDOf(h http.Header) string {
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

// finalStatus is the status a request ended with: what the handler wrote,
// or, when nothing was written, the status of the handler's error (502 when
// it has none, as reverse_proxy answers a provider it cannot reach).
func finalStatus(wroteHeader bool, written int, handlerErr error) int {
	if wroteHeader {
		return written
	}
	var he caddyhttp.HandlerError
	if errors.As(handlerErr, &he) && he.StatusCode != 0 {
		return he.StatusCode
	}
	return http.StatusBadGateway
}
