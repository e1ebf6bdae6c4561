package caddyproxy

import (
	"fmt"
	"path"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// Price is what one model (or a glob of models) costs, as decimal amounts
// of the currency per 1,000,000 tokens. Amounts are strings in JSON so that
// no float ever touches money ("0.15", not 0.15). A price gives token
// prices (Input and Output), media prices (Images, Characters, Request:
// see media.go), or both.
type Price struct {
	// Model name or glob pattern (path.Match syntax: "gpt-4o*").
	Model string `json:"model"`
	// Price of 1M prompt (input) tokens. Set together with Output, or
	// leave both empty for a model priced by media prices only.
	Input string `json:"input,omitempty"`
	// Price of 1M completion (output) tokens.
	Output string `json:"output,omitempty"`
	// Price of 1M cached prompt tokens. Empty: same as Input.
	Cached string `json:"cached,omitempty"`
	// Media prices: per image, per 1M input characters, per request.
	MediaPrices

	inputNano, outputNano, cachedNano int64
	hasTokens                         bool // Input and Output are set
	metrics                           *labelMetrics
}

// UnknownModel says what to do with a model that no price matches.
type UnknownModel struct {
	// "reject" (400 model_not_priced) or "price" (use Input/Output).
	Action string `json:"action"`
	// Price of 1M input tokens when Action is "price".
	Input string `json:"input,omitempty"`
	// Price of 1M output tokens when Action is "price".
	Output string `json:"output,omitempty"`

	inputNano, outputNano int64
	metrics               *labelMetrics
}

// provision validates a price and converts it to nano-units per 1M tokens.
func (p *Price) provision() error {
	if p.Model == "" {
		return fmt.Errorf("price without a model")
	}
	if _, err := path.Match(p.Model, ""); err != nil {
		return fmt.Errorf("price for %q: bad pattern: %w", p.Model, err)
	}
	if p.Input == "" && p.Output == "" && p.Cached == "" && p.hasMedia() {
		return p.provisionMedia()
	}
	p.hasTokens = true
	var err error
	if p.inputNano, err = parsePrice(p.Input); err != nil {
		return fmt.Errorf("price for %q: input: %w", p.Model, err)
	}
	if p.outputNano, err = parsePrice(p.Output); err != nil {
		return fmt.Errorf("price for %q: output: %w", p.Model, err)
	}
	p.cachedNano = p.inputNano
	if p.Cached != "" {
		if p.cachedNano, err = parsePrice(p.Cached); err != nil {
			return fmt.Errorf("price for %q: cached: %w", p.Model, err)
		}
	}
	return p.provisionMedia()
}

func parsePrice(s string) (int64, error) {
	n, err := keystore.ParseAmount(s)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("price %q is negative", s)
	}
	return n, nil
}

func (u *UnknownModel) provision() error {
	switch u.Action {
	case "reject":
		if u.Input != "" || u.Output != "" {
			return fmt.Errorf("unknown_model reject takes no prices")
		}
	case "price":
		var err error
		if u.inputNano, err = parsePrice(u.Input); err != nil {
			return fmt.Errorf("unknown_model price: input: %w", err)
		}
		if u.outputNano, err = parsePrice(u.Output); err != nil {
			return fmt.Errorf("unknown_model price: output: %w", err)
		}
	default:
		return fmt.Errorf("unknown_model must be 'reject' or 'price <input> <output>', got %q", u.Action)
	}
	return nil
}
