package caddyproxy

import (
	"math"
	"math/bits"
	"path"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
)

// tokensPerPriceUnit is the number of tokens a configured price is for.
const tokensPerPriceUnit = 1_000_000

// rate is a resolved price: nano-units per 1M tokens, and the name under
// which metrics count it (the configured pattern, so label values are
// bounded by the config and never by what clients send).
type rate struct {
	input, output, cached int64
	label                 string
	metrics               *labelMetrics // the counters of label
}

// priceFor returns the rate of a model: the first price with token prices
// whose pattern matches, else the unknown_model price, else ok == false (reject).
func (g *BalanceGuard) priceFor(model string) (rate, bool) {
	for i := range g.Prices {
		p := &g.Prices[i]
		if !p.hasTokens {
			continue // media prices only (media.go)
		}
		if ok, _ := path.Match(p.Model, model); ok {
			return rate{input: p.inputNano, output: p.outputNano, cached: p.cachedNano, label: p.Model, metrics: p.metrics}, true
		}
	}
	if g.UnknownModel.Action == "price" {
		return rate{input: g.UnknownModel.inputNano, output: g.UnknownModel.outputNano,
			cached: g.UnknownModel.inputNano, label: "unknown", metrics: g.UnknownModel.metrics}, true
	}
	return rate{}, false
}

// cost is the one rounding rule of the gateway:
//
//	cost = ceil((uncached_prompt × input + cached × cached_price + completion × output) / 1,000,000)
//
// in nano-units, where prices are nano-units per 1M tokens and
// uncached_prompt = prompt − cached. The sum is exact (128-bit) and rounded
// up once per request, so a request is never charged less than its tokens
// cost and at most one nano-unit more. Reasoning tokens are part of the
// completion tokens (as providers report them) and are not added again.
// The result saturates at math.MaxInt64 rather than overflowing.
func (r rate) cost(u openaiwire.Usage) int64 {
	prompt, cached, completion := clamp(u.PromptTokens), clamp(u.CachedTokens), clamp(u.CompletionTokens)
	if cached > prompt {
		cached = prompt
	}
	var hi, lo uint64
	add := func(tokens, price int64) {
		h, l := bits.Mul64(uint64(tokens), uint64(clamp(price)))
		var c uint64
		lo, c = bits.Add64(lo, l, 0)
		hi, _ = bits.Add64(hi, h, c)
	}
	add(prompt-cached, r.input)
	add(cached, r.cached)
	add(completion, r.output)
	if hi >= tokensPerPriceUnit {
		return math.MaxInt64 // quotient would not fit in 64 bits
	}
	q, rem := bits.Div64(hi, lo, tokensPerPriceUnit)
	if rem != 0 {
		q++
	}
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(q)
}

func clamp(n int64) int64 {
	if n < 0 {
		return 0
	}
	return n
}
