package caddyproxy

import (
	"math"
	"math/big"
	"testing"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
)

// oracleCost is the rounding rule computed with math/big, independently of
// rate.cost's 128-bit arithmetic:
//
//	ceil((uncached_prompt*input + cached*cached_price + completion*output) / 1e6)
//
// with negative counts and prices taken as 0, cached clamped to prompt and
// the result saturating at MaxInt64.
func oracleCost(r rate, u openaiwire.Usage) int64 {
	nonNeg := func(n int64) *big.Int {
		if n < 0 {
			n = 0
		}
		return big.NewInt(n)
	}
	prompt, cached, completion := nonNeg(u.PromptTokens), nonNeg(u.CachedTokens), nonNeg(u.CompletionTokens)
	if cached.Cmp(prompt) > 0 {
		cached.Set(prompt)
	}
	uncached := new(big.Int).Sub(prompt, cached)
	sum := new(big.Int).Mul(uncached, nonNeg(r.input))
	sum.Add(sum, new(big.Int).Mul(cached, nonNeg(r.cached)))
	sum.Add(sum, new(big.Int).Mul(completion, nonNeg(r.output)))
	q, rem := new(big.Int).QuoRem(sum, big.NewInt(1_000_000), new(big.Int))
	if rem.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() {
		return math.MaxInt64
	}
	return q.Int64()
}

func TestCostTable(t *testing.T) {
	const max = math.MaxInt64
	// 0.15 / 0.60 / 0.075 per 1M tokens, in nano-units per 1M tokens.
	std := rate{input: 150_000_000, output: 600_000_000, cached: 75_000_000}
	// 1 nano-unit per 1M tokens everywhere: every token costs 1e-6 nano.
	tiny := rate{input: 1, output: 1, cached: 1}
	// Prices with all nine decimals, so that nearly every sum has a remainder.
	odd := rate{input: 123_456_789, output: 987_654_321, cached: 1_000_001}
	cases := []struct {
		name string
		r    rate
		u    openaiwire.Usage
		want int64
	}{
		{"zero usage", std, openaiwire.Usage{}, 0},
		{"zero prices", rate{}, openaiwire.Usage{PromptTokens: 1 << 40, CompletionTokens: 1 << 40}, 0},
		{"one prompt token", std, openaiwire.Usage{PromptTokens: 1}, 150},
		{"one completion token", std, openaiwire.Usage{CompletionTokens: 1}, 600},
		{"exact sum", std, openaiwire.Usage{PromptTokens: 1000, CompletionTokens: 500, CachedTokens: 200},
			800*150 + 200*75 + 500*600},
		{"rounds up a remainder", tiny, openaiwire.Usage{PromptTokens: 1}, 1},
		{"rounds once, not per part", tiny, openaiwire.Usage{PromptTokens: 2, CachedTokens: 1, CompletionTokens: 1}, 1},
		{"exactly one nano", tiny, openaiwire.Usage{PromptTokens: 600_000, CompletionTokens: 400_000}, 1},
		{"one token past one nano", tiny, openaiwire.Usage{PromptTokens: 600_000, CompletionTokens: 400_001}, 2},
		{"one token short of one nano", tiny, openaiwire.Usage{PromptTokens: 999_999}, 1},
		{"odd prices", odd, openaiwire.Usage{PromptTokens: 7, CachedTokens: 3, CompletionTokens: 11},
			(4*123_456_789 + 3*1_000_001 + 11*987_654_321 + 999_999) / 1_000_000},
		{"cached clamped to prompt", std, openaiwire.Usage{PromptTokens: 10, CachedTokens: 50}, 10 * 75},
		{"cached without prompt is free", std, openaiwire.Usage{CachedTokens: 1_000_000}, 0},
		{"negative counts are zero", std, openaiwire.Usage{PromptTokens: -5, CompletionTokens: -1, CachedTokens: -9}, 0},
		{"negative cached is zero", std, openaiwire.Usage{PromptTokens: 2, CachedTokens: -1}, 300},
		{"negative price is zero", rate{input: -1_000_000, output: 2_000_000}, openaiwire.Usage{PromptTokens: 5, CompletionTokens: 5}, 10},
		{"reasoning is not added again", std, openaiwire.Usage{CompletionTokens: 10, ReasoningTokens: 8}, 6000},
		{"quotient exactly MaxInt64", rate{input: 1_000_000}, openaiwire.Usage{PromptTokens: max}, max},
		{"one past MaxInt64 saturates", rate{input: 1_000_000, output: 1}, openaiwire.Usage{PromptTokens: max, CompletionTokens: 1}, max},
		{"2^64 quotient saturates", rate{input: 2_000_000, output: 2_000_000}, openaiwire.Usage{PromptTokens: max, CompletionTokens: 1}, max},
		{"huge everything saturates", rate{input: max, output: max, cached: max},
			openaiwire.Usage{PromptTokens: max, CompletionTokens: max, CachedTokens: max / 2}, max},
		{"huge tokens at a tiny price", tiny, openaiwire.Usage{PromptTokens: max, CompletionTokens: max},
			18_446_744_073_710}, // 2*(2^63-1) = 18446744073709551614, /1e6 rounded up
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.r.cost(c.u)
			if o := oracleCost(c.r, c.u); o != c.want {
				t.Fatalf("test table is wrong: oracle says %d, table %d", o, c.want)
			}
			if got != c.want {
				t.Fatalf("cost(%+v) at %+v = %d, want %d", c.u, c.r, got, c.want)
			}
		})
	}
}

// TestCostNeverUndercharges checks the documented bound on a grid: the cost
// is at least the exact price of the tokens and less than one nano-unit
// more.
func TestCostNeverUndercharges(t *testing.T) {
	prices := []int64{0, 1, 7, 999_999, 1_000_000, 1_000_001, 150_000_000, 123_456_789, 2_500_000_000_000}
	counts := []int64{0, 1, 3, 999, 1_000_000, 123_457, 1 << 31}
	for _, in := range prices {
		for _, out := range prices[len(prices)/2:] {
			r := rate{input: in, output: out, cached: in / 2}
			for _, p := range counts {
				for _, c := range counts {
					u := openaiwire.Usage{PromptTokens: p, CompletionTokens: c, CachedTokens: p / 3}
					got := r.cost(u)
					if want := oracleCost(r, u); got != want {
						t.Fatalf("cost(%+v) at %+v = %d, oracle %d", u, r, got, want)
					}
					exact := new(big.Rat).SetFrac(
						new(big.Int).Add(new(big.Int).Add(
							new(big.Int).Mul(big.NewInt(p-p/3), big.NewInt(in)),
							new(big.Int).Mul(big.NewInt(p/3), big.NewInt(in/2))),
							new(big.Int).Mul(big.NewInt(c), big.NewInt(out))),
						big.NewInt(1_000_000))
					g := new(big.Rat).SetInt64(got)
					if g.Cmp(exact) < 0 || new(big.Rat).Sub(g, exact).Cmp(big.NewRat(1, 1)) >= 0 {
						t.Fatalf("cost %d is not within [exact, exact+1) of %s", got, exact.FloatString(6))
					}
				}
			}
		}
	}
}

// TestPriceForResolvesRates checks that Caddyfile prices become nano-units
// per 1M tokens and that the first matching pattern wins.
func TestPriceForResolvesRates(t *testing.T) {
	g := &BalanceGuard{
		Prices: []Price{
			{Model: "gpt-4o-mini*", Input: "0.15", Output: "0.60"},
			{Model: "gpt-4o*", Input: "2.5", Output: "10", Cached: "1.25"},
		},
		UnknownModel: &UnknownModel{Action: "price", Input: "1", Output: "2"},
	}
	for i := range g.Prices {
		if err := g.Prices[i].provision(); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.UnknownModel.provision(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		model string
		want  rate
	}{
		{"gpt-4o-mini-2024", rate{input: 150_000_000, output: 600_000_000, cached: 150_000_000, label: "gpt-4o-mini*"}},
		{"gpt-4o", rate{input: 2_500_000_000, output: 10_000_000_000, cached: 1_250_000_000, label: "gpt-4o*"}},
		{"other", rate{input: 1_000_000_000, output: 2_000_000_000, cached: 1_000_000_000, label: "unknown"}},
	} {
		got, ok := g.priceFor(c.model)
		if !ok || got != c.want {
			t.Fatalf("priceFor(%q) = %+v, %v; want %+v", c.model, got, ok, c.want)
		}
	}
	g.UnknownModel = &UnknownModel{Action: "reject"}
	if _, ok := g.priceFor("other"); ok {
		t.Fatal("unknown model priced under unknown_model reject")
	}
}

func FuzzCost(f *testing.F) {
	f.Add(int64(1000), int64(500), int64(200), int64(0), int64(150_000_000), int64(600_000_000), int64(75_000_000))
	f.Add(int64(1), int64(0), int64(0), int64(0), int64(1), int64(1), int64(1))
	f.Add(int64(math.MaxInt64), int64(1), int64(0), int64(0), int64(1_000_000), int64(1), int64(0))
	f.Add(int64(-1), int64(-1), int64(-1), int64(-1), int64(-1), int64(-1), int64(-1))
	f.Fuzz(func(t *testing.T, prompt, completion, cached, reasoning, input, output, cachedPrice int64) {
		r := rate{input: input, output: output, cached: cachedPrice}
		u := openaiwire.Usage{PromptTokens: prompt, CompletionTokens: completion, CachedTokens: cached, ReasoningTokens: reasoning}
		got := r.cost(u)
		if want := oracleCost(r, u); got != want {
			t.Fatalf("cost(%+v) at %+v = %d, oracle %d", u, r, got, want)
		}
		if got < 0 {
			t.Fatalf("negative cost %d", got)
		}
	})
}
