package caddyproxy

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// HeaderMaxTokensCapped is the response header that tells a client its
// request, which set no output limit, was sent upstream with one because
// the balance covered no more: its value is the limit per completion.
const HeaderMaxTokensCapped = "X-AI-Gateway-Max-Tokens-Capped"

// minOutput is the smallest output limit per completion the guard caps a
// request without a limit of its own to: below it the request is refused.
// One token (the least a provider can return) except for the Responses API,
// where OpenAI refuses max_output_tokens below 16.
func minOutput(ep endpoint) int64 {
	if ep == epResponses {
		return 16
	}
	return 1
}

// limitMember is the output limit member the guard writes for an endpoint
// ("" for embeddings, which have no output).
func limitMember(ep endpoint) string {
	switch ep {
	case epChat:
		return openaiwire.MemberMaxCompletionTokens
	case epCompletions:
		return openaiwire.MemberMaxTokens
	case epResponses:
		return openaiwire.MemberMaxOutputTokens
	}
	return ""
}

// reserve holds a request's worst case on the account, which must cover it
// (no request takes the balance below zero by itself), and returns the
// hold and the output limit per completion to send upstream (0: none).
//
//   - A request that sets its own output limit (and an embeddings request,
//     which has no output) is held at holdFor and refused with 403
//     insufficient_balance when the available balance does not cover that.
//   - A request that sets none is held at holdFor (default_max_tokens) when
//     the balance covers it; otherwise at what is available, and its output
//     is capped to what that hold pays for, split evenly between its
//     completions. When even the prompt estimate plus minOutput per
//     completion is not covered, it is refused as above.
//
// The store checks and holds under its lock (keystore.RequireCovered,
// keystore.UpTo), so the cap is derived from the very amount held.
//
// rateOpt applies the rate limits (rateOption).
func (g *BalanceGuard) reserve(id keystore.Identity, ep endpoint, info openaiwire.RequestInfo, raw []byte, rt rate, rateOpt keystore.ReserveOption) (*keystore.Hold, int64, *openaiwire.APIError) {
	full := g.holdFor(ep, info, rt)
	member := limitMember(ep)
	if info.MaxTokens > 0 || member == "" {
		hold, err := g.st().ReserveFor(id, full, keystore.RequireCovered, rateOpt)
		if err != nil {
			return nil, 0, g.notCovered(id, err, ep, info, raw, rt, full)
		}
		return hold, 0, nil
	}
	completions := max(info.Completions, 1)
	least := min(rt.cost(openaiwire.Usage{PromptTokens: info.EstimatedPromptTokens,
		CompletionTokens: mulSat(minOutput(ep), completions)}), full)
	hold, err := g.st().ReserveFor(id, full, keystore.UpTo(least), rateOpt)
	if err != nil {
		return nil, 0, g.notCovered(id, err, ep, info, raw, rt, full)
	}
	if hold.Amount() >= full {
		return hold, 0, nil
	}
	limit := affordableOutput(rt, info.EstimatedPromptTokens, hold.Amount()) / completions
	return hold, max(limit, 1), nil
}

// affordableOutput is the most completion tokens that, with prompt tokens,
// cost at most amount at rt (at most 2⁶²−1, far above any output limit);
// -1 when the prompt alone costs more, and math.MaxInt64 when output is
// free.
func affordableOutput(rt rate, prompt, amount int64) int64 {
	at := func(out int64) int64 {
		return rt.cost(openaiwire.Usage{PromptTokens: prompt, CompletionTokens: out})
	}
	if at(0) > amount {
		return -1
	}
	if rt.output == 0 {
		return math.MaxInt64
	}
	lo, hi := int64(0), int64(1)<<62 // at(lo) <= amount < at(hi)
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if c := at(mid); c <= amount && c != math.MaxInt64 { // MaxInt64: saturated
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// mulSat is a*b for non-negative a and b, saturating at math.MaxInt64.
func mulSat(a, b int64) int64 {
	if a != 0 && b > math.MaxInt64/a {
		return math.MaxInt64
	}
	return a * b
}

// notCovered turns a refused hold into the error to answer. A hold the
// available balance did not cover says what the request asked for and
// what the balance affords; anything else is answered as before.
func (g *BalanceGuard) notCovered(id keystore.Identity, err error, ep endpoint, info openaiwire.RequestInfo, raw []byte, rt rate, full int64) *openaiwire.APIError {
	var be *keystore.BalanceError
	if !errors.As(err, &be) {
		return g.reserveError(id, err)
	}
	avail := be.Available()
	if avail <= 0 {
		return g.insufficient(id.AccountID, be.Balance, be.Held)
	}
	var asked, hint string
	covered := affordableOutput(rt, info.EstimatedPromptTokens, avail)
	switch {
	case ep == epEmbeddings:
		asked = fmt.Sprintf("an input of about %s tokens", groupDigits(info.EstimatedPromptTokens))
		hint = "Send less input"
	case info.MaxTokens > 0:
		out := mulSat(info.MaxTokens, max(info.Completions, 1))
		asked = fmt.Sprintf("up to %s output tokens (%s)", groupDigits(out), openaiwire.DescribeOutput(raw, ""))
		hint = "Lower the output limit"
		if info.Completions > 1 {
			hint += " or the number of completions"
		}
	default:
		out := mulSat(int64(g.DefaultMaxTokens), max(info.Completions, 1))
		asked = fmt.Sprintf("up to %s output tokens (%s; the request sets no output limit)",
			groupDigits(out), openaiwire.DescribeOutput(raw, "default_max_tokens="+strconv.Itoa(g.DefaultMaxTokens)))
		hint = "Send a shorter prompt"
	}
	affords := "the balance covers " + groupDigits(max(covered, 0))
	switch {
	case ep == epEmbeddings:
		affords = "the balance does not cover it"
	case covered < 0:
		affords = fmt.Sprintf("the balance does not cover even the prompt (about %s tokens)", groupDigits(info.EstimatedPromptTokens))
	case info.MaxTokens == 0:
		affords += fmt.Sprintf(", less than the %s per completion a capped request gets at least", groupDigits(minOutput(ep)))
	}
	msg := fmt.Sprintf("The request was not sent: it requested %s, %s. Account %q has %s %s available (balance %s %s",
		asked, affords, id.AccountID, keystore.FormatAmount(avail), g.currency, keystore.FormatAmount(be.Balance), g.currency)
	if be.Held > 0 {
		msg += fmt.Sprintf(", of which %s %s is held for requests in progress", keystore.FormatAmount(be.Held), g.currency)
	}
	msg += fmt.Sprintf("); the request could cost up to %s %s. %s, or top up the balance.",
		keystore.FormatAmount(full), g.currency, hint)
	return &openaiwire.APIError{
		Status: http.StatusForbidden, Type: openaiwire.TypeInsufficientQuota, Code: openaiwire.CodeInsufficientBalance,
		Reason:  "insufficient_balance",
		Message: msg,
	}
}

// groupDigits writes n with commas between thousands: 2,097,152.
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3+1)
	if neg {
		out = append(out, '-')
	}
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// capBody writes the output limit of a capped request into the body sent
// upstream.
func (a *admission) capBody(body []byte) ([]byte, *openaiwire.APIError) {
	if a.capped == 0 {
		return body, nil
	}
	capped, err := openaiwire.SetOutputLimit(body, limitMember(a.ep), a.capped)
	if err != nil {
		return nil, openaiwire.FromRequestError(openaiwire.InvalidJSON(err))
	}
	return capped, nil
}

// announceCap tells the client of a capped request its limit.
func (a *admission) announceCap(w http.ResponseWriter) {
	if a.capped > 0 {
		w.Header().Set(HeaderMaxTokensCapped, strconv.FormatInt(a.capped, 10))
	}
}

// capNote is the ledger note of a capped request ("" when not capped).
func (a *admission) capNote() string {
	if a.capped == 0 {
		return ""
	}
	return fmt.Sprintf("output capped by the balance: %s=%d sent upstream", limitMember(a.ep), a.capped)
}
