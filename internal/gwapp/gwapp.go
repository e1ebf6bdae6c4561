// Package gwapp is how the gateway's handlers find the key store of the
// ai_gateway app without importing the root package (which imports them).
package gwapp

import (
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// StoreSource is what the ai_gateway app offers its handlers.
type StoreSource interface {
	Store() *keystore.Store
	CurrencyCode() string
}

// ErrNoStore: the ai_gateway app has no key store.
var ErrNoStore = errors.New("the ai_gateway app has no key store")

// LoadStore finds the ai_gateway app (loading it with defaults if the config
// does not mention it) and returns its store and display currency.
func LoadStore(ctx caddy.Context) (*keystore.Store, string, error) {
	app, err := ctx.App("ai_gateway")
	if err != nil {
		return nil, "", fmt.Errorf("loading the ai_gateway app: %w", err)
	}
	src, ok := app.(StoreSource)
	if !ok || src.Store() == nil {
		return nil, "", ErrNoStore
	}
	return src.Store(), src.CurrencyCode(), nil
}
