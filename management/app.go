// Package management is how an operator runs caddy-ai-gateway: the
// ai_gateway app that owns the key store, its Caddyfile global option, the
// admin API routes under /ai-gateway/, the `caddy ai-gateway` command, and
// the one set of API types those and the dashboard share. Handlers find the
// store through [LoadApp].
package management

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
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

// App is the ai_gateway app. It owns the key store (SQLite or PostgreSQL) that the
// api_key_auth, balance_guard, ai_dashboard and admin API modules use. It is
// loaded automatically (with defaults) when a handler needs it, so
// configuring it is only necessary to change the defaults.
//
// The database is opened when the config starts, not when it is
// provisioned: `caddy validate` and `caddy adapt` never open, create or lock
// it. A reload that keeps the same database shares the open store of the
// running config (nothing is closed or reopened).
type App struct {
	// The database: the path of an SQLite file, or a PostgreSQL
	// connection string, a postgres:// (postgresql://) URL such as
	// "postgres://aigw:{env.AIGW_DB_PASSWORD}@db.internal/aigw?sslmode=verify-full"
	// or a key=value string such as "host=db dbname=aigw user=aigw".
	// Default: "ai-gateway.db" in Caddy's data directory. Placeholders
	// such as {env.VAR} are expanded when the config loads, so a password
	// can stay out of the config; logs and the admin API show a
	// PostgreSQL password as "xxxxx". The PostgreSQL database must exist;
	// the gateway creates its tables. See docs/operations.md, "PostgreSQL".
	Database string `json:"database,omitempty"`

	// Currency code shown next to amounts (display only; default "USD").
	Currency string `json:"currency,omitempty"`

	// Maximum number of API keys kept in the in-memory lookup cache.
	// Default 100000. Keys beyond it are looked up in SQLite.
	KeyCacheSize int `json:"key_cache_size,omitempty"`

	// Whether a metered response's final bytes (the last byte of a JSON
	// body, the terminating event of a stream) wait until its ledger row is
	// committed, so that no client holds a complete answer a crash could
	// leave unbilled. Default true. With false, a crash (kill -9, power
	// loss) can lose the rows of the last commit interval (about 10 ms of
	// traffic) although their answers were delivered.
	DurableBilling *bool `json:"durable_billing,omitempty"`

	// How long raw ledger rows are kept, e.g. "2160h" (90 days). Older
	// rows are deleted in the background, a few thousand at a time; their
	// sum is carried forward per account, so balances and usage totals are
	// unchanged (totals over pruned time are exact to the hour). Default 0:
	// keep every row forever.
	LedgerRetention caddy.Duration `json:"ledger_retention,omitempty"`

	// The settings below apply only to a PostgreSQL database, which
	// several gateway instances may share (docs/operations.md, "Several
	// instances"); an SQLite database ignores them.

	// How much of an account's balance an instance takes at a time (a
	// lease, in currency units such as "1.00") to admit requests without
	// asking the database. The cluster-wide overdraft bound is one request
	// per instance holding a lease on the account, plus overruns. "0"
	// selects exact mode: every admission is checked against the balance
	// in the database, which gives the single-instance bound (one request
	// plus overruns) at the cost of a database round trip per request.
	// Default "1.00".
	Lease string `json:"lease,omitempty"`

	// How long a lease outlives the last heartbeat of the instance holding
	// it, so that the leases of a killed instance lapse. Default 30s; at
	// least ten times revocation_staleness.
	LeaseTTL caddy.Duration `json:"lease_ttl,omitempty"`

	// How long an instance keeps serving from its caches without hearing
	// from the database's change feed. A key revoked or an account
	// disabled on any instance at time T is refused by every instance for
	// every request after T + revocation_staleness; an instance cut off
	// from the database for longer answers billed requests with 503
	// store_unavailable until it hears again. The feed is polled every
	// revocation_staleness/5 (at most 200ms) and pushed at once by
	// LISTEN/NOTIFY. Default 1s.
	RevocationStaleness caddy.Duration `json:"revocation_staleness,omitempty"`

	// Names this instance in the database (its leases and settled
	// batches). Default: random at each start, which is what a process
	// needs; set it only to recognise an instance's rows, and then to a
	// name no other running instance has (a start gives back the leases
	// of a previous run under the same name).
	InstanceID string `json:"instance_id,omitempty"`

	dbPath string // resolved: an absolute SQLite path or a PostgreSQL connection string
	dbName string // dbPath for logs: a PostgreSQL password redacted
	logger *zap.Logger

	// taken: this config holds a reference on the pooled store (for
	// Cleanup). live is set up by Provision.
	taken   bool
	live    *liveStore
	metrics *storeMetrics
}

// liveStore is the store of one config as its handlers see it: set once the
// config holds a reference on the pooled store; ready is closed when Start
// has opened it or failed to, so a request that arrives while another app of
// the same config starts waits for it instead of failing.
type liveStore struct {
	store     atomic.Pointer[keystore.Store]
	ready     chan struct{}
	readyOnce sync.Once
}

func (l *liveStore) markReady() { l.readyOnce.Do(func() { close(l.ready) }) }

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "ai_gateway",
		New: func() caddy.Module { return new(App) },
	}
}

// pooledStore lets the usage pool close the store when the last config using
// it goes away.
type pooledStore struct {
	*keystore.Store
	// cluster is what the store was opened with on PostgreSQL (nil on
	// SQLite): a reload cannot change it, so it warns when it differs.
	cluster *keystore.ClusterOptions
}

// Destruct implements caddy.Destructor.
func (p pooledStore) Destruct() error { return p.Close() }

// Provision checks the settings. It touches no file: when the running
// config already uses the same database it shares that store at once,
// otherwise Start opens it.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.live = &liveStore{ready: make(chan struct{})}
	if a.KeyCacheSize < 0 {
		return fmt.Errorf("key_cache_size must not be negative, got %d", a.KeyCacheSize)
	}
	if a.LedgerRetention < 0 {
		return fmt.Errorf("ledger_retention must not be negative, got %s", time.Duration(a.LedgerRetention))
	}
	if a.Currency == "" {
		a.Currency = "USD"
	}
	if _, err := a.clusterOptions(); err != nil {
		return err
	}
	repl := caddy.NewReplacer()
	path := strings.TrimSpace(repl.ReplaceKnown(a.Database, ""))
	if path == "" {
		path = filepath.Join(caddy.AppDataDir(), "ai-gateway.db")
	}
	var err error
	if keystore.IsPostgres(path) {
		// The pool key is the connection string itself.
		a.dbPath = path
	} else if a.dbPath, err = filepath.Abs(path); err != nil {
		return fmt.Errorf("resolving database path %q: %w", path, err)
	}
	a.dbName = keystore.RedactDatabase(a.dbPath)
	if a.metrics, err = loadStoreMetrics(ctx); err != nil {
		return err
	}
	if _, open := storePool.References(a.dbPath); open {
		// A reload: share the running config's store (no I/O), so that
		// requests never see this config without it.
		return a.take()
	}
	return nil
}

// Start opens the database unless Provision could share it. A database
// another process holds, or one that cannot be opened, fails the config.
func (a *App) Start() error {
	defer a.live.markReady()
	if a.taken {
		return nil
	}
	return a.take()
}

// take gets this config's reference on the pooled store, opening it if no
// config holds it yet.
func (a *App) take() error {
	cacheSize, path, name := a.KeyCacheSize, a.dbPath, a.dbName
	var cluster *keystore.ClusterOptions
	if keystore.IsPostgres(path) {
		// Another instance may share the database: always run as one of
		// several (change feed, leases).
		var err error
		if cluster, err = a.clusterOptions(); err != nil {
			return err
		}
	}
	val, loaded, err := storePool.LoadOrNew(path, func() (caddy.Destructor, error) {
		openCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := keystore.Open(openCtx, keystore.Options{
			Path:                path,
			KeyCacheSize:        cacheSize,
			OnWriteError:        writeErrorReporter(name, a.metrics),
			LedgerRetention:     time.Duration(a.LedgerRetention),
			OnMigrationProgress: migrationLogger(a.logger, name),
			Cluster:             cluster,
		})
		if err != nil {
			return nil, err
		}
		return pooledStore{Store: s, cluster: cluster}, nil
	})
	if err != nil {
		return fmt.Errorf("opening ai gateway database: %w", err)
	}
	a.taken = true
	a.live.store.Store(val.(pooledStore).Store)
	if !loaded {
		a.warnIfSwitched()
	} else {
		// a reload sharing the open store: apply this config's retention
		val.(pooledStore).SetLedgerRetention(time.Duration(a.LedgerRetention))
		if p := val.(pooledStore); p.cluster != nil && cluster != nil && p.cluster.Effective() != cluster.Effective() {
			was, now := p.cluster.Effective(), cluster.Effective()
			a.logger.Warn("lease, lease_ttl, revocation_staleness and instance_id apply when the database is opened: this reload keeps the running values; restart the process to change them",
				zap.String("database", name),
				zap.String("running_lease", keystore.FormatAmount(was.Lease)), zap.String("configured_lease", keystore.FormatAmount(now.Lease)),
				zap.Duration("running_lease_ttl", was.LeaseTTL), zap.Duration("configured_lease_ttl", now.LeaseTTL),
				zap.Duration("running_revocation_staleness", was.RevocationStaleness),
				zap.Duration("configured_revocation_staleness", now.RevocationStaleness),
				zap.String("running_instance_id", was.InstanceID), zap.String("configured_instance_id", now.InstanceID))
		}
	}
	a.logger.Info("ai gateway store ready",
		zap.String("database", name),
		zap.String("backend", val.(pooledStore).Backend()),
		zap.Bool("shared_with_previous_config", loaded))
	return nil
}

// warnIfSwitched logs when this config opens another database than the one
// the running config uses: a reload that drops the ai_gateway block or
// changes its database serves other (maybe no) accounts and keys.
func (a *App) warnIfSwitched() {
	storePool.Range(func(key, _ any) bool {
		if old, ok := key.(string); ok && old != a.dbPath {
			a.logger.Warn("the ai_gateway database changes with this config: accounts, keys and balances of the old database are not served by it",
				zap.String("old_database", keystore.RedactDatabase(old)), zap.String("new_database", a.dbName))
		}
		return true
	})
}

// writeErrorReporter logs and counts every batch of ledger rows the store
// fails to commit (the store retries it until it commits; past the backlog
// bound billed requests get 503 until it drains). It logs through Caddy's
// default logger as it is at the time, rather than one config's, because the
// store outlives the config that opened it.
func writeErrorReporter(path string, m *storeMetrics) func(error, int) {
	var errs prometheus.Counter
	if m != nil {
		errs = m.writeErrors.WithLabelValues(keystore.RedactDatabase(path))
	}
	return func(err error, pending int) {
		if errs != nil {
			errs.Inc()
		}
		caddy.Log().Named("ai_gateway.store").Error("ledger write failed; retrying",
			zap.String("database", path), zap.Int("rows_waiting", pending), zap.Error(err))
	}
}

// migrationLogger logs the phases of a schema upgrade, which on a large
// ledger (building the usage rollups) can hold startup for minutes.
func migrationLogger(l *zap.Logger, path string) func(keystore.MigrationProgress) {
	return func(p keystore.MigrationProgress) {
		if l == nil {
			return
		}
		l.Info("upgrading ai gateway database",
			zap.String("database", path),
			zap.Int("schema_version", p.Version),
			zap.String("phase", p.Phase),
			zap.Int("step", p.Step),
			zap.Int("steps", p.Steps),
			zap.Int64("ledger_rows", p.LedgerRows),
			zap.Duration("elapsed", p.Elapsed))
	}
}

// Stop implements caddy.App. The store stays open for the next config;
// Cleanup releases it.
func (a *App) Stop() error { return nil }

// Cleanup releases this config's reference to the store, if it took one;
// the last reference closes it (committing pending ledger rows and
// last-used times). A config that failed before taking a reference
// releases nothing, so a rejected reload never disturbs the running one.
func (a *App) Cleanup() error {
	if a.live != nil {
		a.live.markReady()
	}
	releaseStoreMetrics(a.metrics)
	a.metrics = nil
	if !a.taken {
		return nil
	}
	a.taken = false
	_, err := storePool.Delete(a.dbPath)
	return err
}

// Store returns the key store, or nil before the config has started (or
// when it failed to open the database).
func (a *App) Store() *keystore.Store {
	if a.live == nil {
		return nil
	}
	return a.live.store.Load()
}

// WaitStore returns the key store, waiting while this config is still
// starting (other apps of a config may start serving before this one has
// opened its database). It fails with ErrNoStore when the store could not
// be opened or ctx ends first.
func (a *App) WaitStore(ctx context.Context) (*keystore.Store, error) {
	if a.live == nil {
		return nil, ErrNoStore
	}
	if s := a.live.store.Load(); s != nil {
		return s, nil
	}
	t := time.NewTimer(storeWait)
	defer t.Stop()
	select {
	case <-a.live.ready:
	case <-ctx.Done():
	case <-t.C:
	}
	if s := a.live.store.Load(); s != nil {
		return s, nil
	}
	return nil, ErrNoStore
}

// storeWait bounds how long a request waits for the store of a config that
// is starting.
const storeWait = 10 * time.Second

// DurableBillingEnabled reports whether responses wait for their ledger row
// (see DurableBilling).
func (a *App) DurableBillingEnabled() bool { return a.DurableBilling == nil || *a.DurableBilling }

// CurrencyCode returns the configured display currency.
func (a *App) CurrencyCode() string { return a.Currency }

// DatabasePath returns the database in use: the absolute path of the
// SQLite file, or the PostgreSQL connection string with its password
// redacted.
func (a *App) DatabasePath() string { return a.dbName }

// ErrNoStore: the ai_gateway app has no key store.
var ErrNoStore = errors.New("the ai_gateway app has no key store")

// LoadApp finds the ai_gateway app of the config being provisioned (loading
// it with defaults if the config does not mention it). Handlers keep it and
// ask it for the store per request (Store or WaitStore), because the store
// opens only when the config starts.
func LoadApp(ctx caddy.Context) (*App, error) {
	app, err := ctx.App("ai_gateway")
	if err != nil {
		return nil, fmt.Errorf("loading the ai_gateway app: %w", err)
	}
	ga, ok := app.(*App)
	if !ok {
		return nil, fmt.Errorf("the ai_gateway app is a %T", app)
	}
	return ga, nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ caddy.Destructor   = pooledStore{}
)

// clusterOptions are the store's settings for a database shared by several
// instances.
func (a *App) clusterOptions() (*keystore.ClusterOptions, error) {
	o := &keystore.ClusterOptions{Lease: -1, InstanceID: a.InstanceID, LeaseTTL: time.Duration(a.LeaseTTL),
		RevocationStaleness: time.Duration(a.RevocationStaleness)}
	if a.Lease != "" {
		n, err := keystore.ParseAmount(a.Lease)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("lease must be an amount such as 1.00 (0: exact mode), got %q", a.Lease)
		}
		o.Lease = n
	}
	if a.LeaseTTL < 0 || a.RevocationStaleness < 0 {
		return nil, fmt.Errorf("lease_ttl and revocation_staleness must not be negative")
	}
	if o.RevocationStaleness > 0 {
		o.PollInterval = min(o.RevocationStaleness/5, 200*time.Millisecond)
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return o, nil
}
