// Package management is how an operator runs caddy-ai-gateway: the
// ai_gateway app that owns the key store, its Caddyfile global option, the
// admin API routes under /ai-gateway/, the `caddy ai-gateway` command, and
// the one set of API types those and the dashboard share. Handlers find the
// store through [LoadStore].
package management

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/keystore"
)

func init() {
	caddy.RegisterModule(App{})
}

// storePool shares one open database per path across config reloads: a new
// config's app takes a reference before the old config's app drops its own,
// so a reload never closes and reopens SQLite.
var storePool = caddy.NewUsagePool()

// App is the ai_gateway app. It owns the SQLite key store that the
// api_key_auth, balance_guard and admin API modules use. It is loaded
// automatically (with defaults) when a handler needs it, so configuring it
// is only necessary to change the defaults.
type App struct {
	// Path of the SQLite database. Default: "ai-gateway.db" in Caddy's
	// data directory. Placeholders such as {env.VAR} are expanded.
	Database string `json:"database,omitempty"`

	// Currency code shown next to amounts (display only; default "USD").
	Currency string `json:"currency,omitempty"`

	// Maximum number of API keys kept in the in-memory lookup cache.
	// Default 100000. Keys beyond it are looked up in SQLite.
	KeyCacheSize int `json:"key_cache_size,omitempty"`

	store  *keystore.Store
	dbPath string
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "ai_gateway",
		New: func() caddy.Module { return new(App) },
	}
}

// pooledStore lets the usage pool close the store when the last config using
// it goes away.
type pooledStore struct{ *keystore.Store }

// Destruct implements caddy.Destructor.
func (p pooledStore) Destruct() error { return p.Close() }

// Provision opens (or shares) the store.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	path := repl.ReplaceKnown(a.Database, "")
	if path == "" {
		path = filepath.Join(caddy.AppDataDir(), "ai-gateway.db")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("resolving database path %q: %w", path, err)
	}
	a.dbPath = abs
	if a.Currency == "" {
		a.Currency = "USD"
	}
	if a.KeyCacheSize < 0 {
		return fmt.Errorf("key_cache_size must not be negative")
	}
	cacheSize := a.KeyCacheSize
	val, loaded, err := storePool.LoadOrNew(abs, func() (caddy.Destructor, error) {
		openCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := keystore.Open(openCtx, keystore.Options{Path: abs, KeyCacheSize: cacheSize})
		if err != nil {
			return nil, err
		}
		return pooledStore{s}, nil
	})
	if err != nil {
		return fmt.Errorf("opening ai gateway database: %w", err)
	}
	a.store = val.(pooledStore).Store
	a.logger.Info("ai gateway store ready",
		zap.String("database", abs),
		zap.Bool("shared_with_previous_config", loaded))
	return nil
}

// Start implements caddy.App.
func (a *App) Start() error { return nil }

// Stop implements caddy.App.
func (a *App) Stop() error { return nil }

// Cleanup releases this config's reference to the store; the last reference
// closes it (flushing pending last-used times).
func (a *App) Cleanup() error {
	if a.dbPath == "" {
		return nil
	}
	_, err := storePool.Delete(a.dbPath)
	return err
}

// Store returns the key store. Handlers find it through ctx.App("ai_gateway").
func (a *App) Store() *keystore.Store { return a.store }

// CurrencyCode returns the configured display currency.
func (a *App) CurrencyCode() string { return a.Currency }

// DatabasePath returns the absolute path of the database in use.
func (a *App) DatabasePath() string { return a.dbPath }

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

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ caddy.Destructor   = pooledStore{}
	_ StoreSource        = (*App)(nil)
)
