// Package keystore keeps accounts, API keys, balances and the ledger of a
// caddy-ai-gateway in one SQLite database or one PostgreSQL database. It
// knows nothing of Caddy or HTTP.
//
// One Store owns one database (Options.Path: a file path for SQLite, a
// connection string for PostgreSQL; the two behave the same). The store keeps every account's balance in
// memory (it is the only writer, so memory and disk agree once pending writes
// are committed) and caches looked-up keys, so that authenticating a request,
// admitting it against the balance (Reserve) and charging it (Hold.Settle) do
// no SQL on the request path.
//
// Administrative changes (accounts, keys, AdjustBalance) go through a
// transaction first and touch memory only after the commit succeeded. Usage
// charges go the other way: Settle changes the balance in memory at once and
// queues the ledger row for a single writer goroutine, which commits queued
// rows in batches (group commit). Each batch is one transaction holding both
// the ledger rows and the matching balance updates, so after every commit,
// and after a crash, accounts.balance = SUM(ledger.amount) for every account.
package keystore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver (pure Go)
)

// Options configure Open. The zero value is usable apart from Path.
type Options struct {
	// Path is the database: the path of an SQLite file, created with its
	// directory if missing (Open also creates <Path>.lock beside it, see
	// Open), or a PostgreSQL connection string, a postgres:// or
	// postgresql:// URL or a key=value string (see IsPostgres), whose
	// database must exist (Open creates the tables). Errors and Path()
	// show a PostgreSQL password as "xxxxx" (RedactDatabase).
	Path string
	// KeyCacheSize bounds the number of keys held in memory. Default 100000.
	KeyCacheSize int
	// LastUsedFlushInterval is how often last-used times collected in memory
	// are written to the database. Default 10s. They are also written on Close.
	LastUsedFlushInterval time.Duration
	// Now overrides the clock (tests). Default time.Now.
	Now func() time.Time
	// OnWriteError, if set, is called from the ledger writer goroutine each
	// time a batch of ledger rows fails to commit (the batch is retried
	// with backoff, nothing is lost) and once more if Close gives up, with
	// the error and the number of balance changes waiting for a commit
	// (PendingWrites) at that moment. It must return quickly and must not
	// call the Store methods that wait for the writer (Flush, WaitCommitted,
	// Backup, Ledger, UsageTotals, AdjustBalance, Close): they would
	// deadlock. Log the error and alert on it: while it fires, charges
	// accumulate in memory only. A failed batch of retention pruning
	// (LedgerRetention) is reported here too; it is retried at the next
	// pruning round and loses nothing. So is a failed sync of rate limit
	// counts with other instances (RateSyncInterval), retried at the next.
	OnWriteError func(err error, pending int)
	// MaxPendingWrites and MaxPendingAge bound the backlog of balance
	// changes waiting for a commit: past either, WriteBacklog and Reserve
	// fail with ErrBacklog (see WriteBacklog), so that a failing database
	// stops admission instead of piling up uncommitted charges. Defaults
	// 100000 rows and 30s; negative: no bound.
	MaxPendingWrites int
	MaxPendingAge    time.Duration
	// CommitHook is a test and fault-injection hook: if set, it is called
	// before each batch of usage rows is committed, and when it returns an
	// error the batch fails with that error as if the disk had failed (the
	// transaction is rolled back and retried later). Leave it nil in
	// production.
	CommitHook func() error
	// DrainTimeout bounds how long Close keeps retrying ledger rows that
	// fail to commit before it gives up on them (and reports how many were
	// lost). Rows that commit normally are always written, however long
	// that takes. Default 30s.
	DrainTimeout time.Duration
	// CommitInterval paces the ledger writer: after committing usage rows it
	// waits this long before the next batch, so that under load one
	// transaction (and one fsync) carries many rows instead of one each.
	// Settle never waits for it; Flush, WaitCommitted, AdjustBalance,
	// Close and a full batch cut the wait short. It is also the most
	// billing a kill -9 can lose. Default 10ms; negative: no pacing.
	CommitInterval time.Duration
	// OnMigrationProgress, if set, is called by Open while it upgrades the
	// schema of an existing database: when each phase of a migration starts
	// and when the migration is committed. Upgrading a large ledger takes a
	// while (version 4 builds the usage rollups from every ledger row); log
	// the calls so that an operator sees why startup waits.
	OnMigrationProgress func(MigrationProgress)
	// RateSyncInterval is how often a store on PostgreSQL shares its rate
	// limit counts with the other stores on the database (several gateway
	// instances; see ratelimit_sync.go for the bound). Default 100ms;
	// negative: never (each instance counts alone). Ignored on SQLite,
	// where a store is alone on its database.
	RateSyncInterval time.Duration
	// LedgerRetention, if positive, is how long raw ledger rows are kept:
	// a background task deletes older rows in small batches (see
	// Store.PruneLedger), carrying their sum forward per account so that
	// balances, LedgerSum and usage totals are unchanged. 0 keeps every
	// row forever.
	LedgerRetention time.Duration
	// Cluster, if set, makes a Store on PostgreSQL one of several
	// instances sharing the database (cluster.go, lease.go): it follows
	// the change feed, fails closed when it cannot, and spends balances
	// through leases. Ignored on SQLite.
	Cluster *ClusterOptions
}

// Store is the handle on one database. It is safe for concurrent use.
type Store struct {
	path    string  // as given in Options.Path
	dialect dialect // of the database: SQLite or PostgreSQL
	w       *sql.DB // single connection: every write is serialised here
	r       *sql.DB // read pool
	now     func() time.Time

	// logChange, if set, is called inside every administrative
	// transaction (accounts, keys, adjustments) before it commits, with
	// what it changed; an error rolls the change back. It is the hook of
	// multi-instance coordination (a change feed other instances apply);
	// nil for a store alone on its database.
	logChange func(ctx context.Context, tx *sql.Tx, c change) error

	// writeMu serialises "commit, then update memory" so that memory sees
	// changes in commit order.
	writeMu sync.Mutex

	acctMu   sync.RWMutex
	accounts map[string]*accountState

	// holdCount and holdAmount total the holds in flight; guarded by
	// acctMu.
	holdCount  int
	holdAmount int64

	keys *keyCache
	// keyLookups counts the keys Authenticate looked up in the database.
	keyLookups atomic.Int64
	// newPlaintext makes new keys' plaintexts (newPlaintextKey; tests
	// replace it to know a key before it exists).
	newPlaintext func() (string, error)
	// unknownLookedUp, if set (tests), runs between the database saying a
	// key is unknown and Authenticate caching that answer.
	unknownLookedUp func()

	// spend holds the spend counters of key lineages with a limit, by
	// lineage; guarded by acctMu.
	spend map[string]*spendState
	// keyRates and modelRates hold the rate limit states of key lineages
	// (by lineage) and model limits (by name); accounts keep theirs in
	// accountState.rate. Guarded by acctMu.
	keyRates   map[string]*rateState
	modelRates map[string]*rateState
	// The rate limit sync with other stores on a PostgreSQL database
	// (ratelimit_sync.go): this store's name in rate_counts, the interval
	// (0: no sync), the other instances' counts by scope (under acctMu),
	// and the loop's state.
	instanceID    string
	rateSyncEvery time.Duration
	rateRemote    map[string]*remoteCounts
	rateOthers    int          // live other instances at the last sync (under acctMu)
	rateSynced    []*rateState // every state that syncs (under acctMu)
	rateSyncMu    sync.Mutex   // one SyncRates at a time
	rateSyncRound int          // under rateSyncMu
	rateSyncDone  chan struct{}

	lastUsed *lastUsedTracker

	// queue feeds the ledger writer goroutine (writer.go).
	queue         *writeQueue
	onWriteError  func(error, int)
	maxPending    int           // see Options.MaxPendingWrites
	maxPendingAge time.Duration // see Options.MaxPendingAge
	commitHook    func() error  // see Options.CommitHook
	// lastWriteErr is the error of the last failed batch, nil once a batch
	// commits again (for WriteBacklog's message).
	lastWriteErr atomic.Pointer[error]
	drainTimeout time.Duration
	commitEvery  time.Duration                        // see Options.CommitInterval
	inserts      map[int]*sql.Stmt                    // prepared multi-row ledger inserts, by rows
	upserts      [len(rollupLevels)]map[int]*sql.Stmt // prepared multi-row rollup upserts, by level and rows
	scratch      writerScratch                        // the writer's reused buffers, under writeMu
	// batches counts committed usage batches (tests check that rows are
	// grouped).
	batches atomic.Int64
	// writerDone is closed when the writer goroutine has drained the queue
	// after Close; writerErr is set before that if it had to give up.
	writerDone chan struct{}
	writerErr  error

	// objects records provider-side objects (objects.go).
	objects *objectLog
	// retention is Options.LedgerRetention (SetLedgerRetention); the prune
	// goroutine (prune.go) wakes on pruneWake and closes pruneDone when it
	// has stopped after Close.
	retention atomic.Int64
	pruneWake chan struct{}
	pruneDone chan struct{}

	// cluster links the store with the other instances on its PostgreSQL
	// database (cluster.go); nil on SQLite and for a store alone.
	cluster *cluster

	// lock holds the exclusive process lock (lock.go) until Close; nil on
	// PostgreSQL.
	lock *os.File

	closeOnce sync.Once
	closed    chan struct{}
	flushDone chan struct{}
	closeErr  error
}

// accountState is the in-memory copy of an account row. Fields are guarded by
// Store.acctMu, except durable, which belongs to the ledger writer.
type accountState struct {
	id        string
	name      string
	balance   int64 // committed balance plus settled charges not yet committed
	held      int64 // sum of the account's holds in flight
	disabled  bool
	createdAt int64      // unix ms
	rate      *rateState // rate limits and their counts; nil: none yet

	// durable is the balance as of the last committed ledger row. Only the
	// ledger writer reads or writes it, under Store.writeMu (and Open
	// before the writer starts); it is the base of balance_after.
	durable int64
}

// Open opens (creating if needed) the database at opts.Path, migrates its
// schema to the current version and loads accounts into memory.
//
// Only one Store may have an SQLite database open at a time: Open takes an
// exclusive lock on the file <Path>.lock (created beside the database and
// left there) and fails at once, with an error wrapping ErrLocked, while
// another process or another Store of this process holds it. Close releases
// it. The database, -wal and -shm files are made readable by the owner only
// (mode 0600) before SQLite opens them.
//
// A PostgreSQL database (opts.Path a connection string) takes no lock
// file; its migrations run under a PostgreSQL advisory lock, so that stores
// opening one database together migrate it once. Running several stores
// on one PostgreSQL database needs the multi-instance coordination; alone,
// a Store on PostgreSQL behaves exactly as on SQLite.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Path == "" {
		return nil, fmt.Errorf("%w: empty database path", ErrInvalid)
	}
	if opts.KeyCacheSize <= 0 {
		opts.KeyCacheSize = 100_000
	}
	if opts.LastUsedFlushInterval <= 0 {
		opts.LastUsedFlushInterval = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CommitInterval == 0 {
		opts.CommitInterval = 10 * time.Millisecond
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 30 * time.Second
	}
	if opts.MaxPendingWrites == 0 {
		opts.MaxPendingWrites = 100_000
	}
	if opts.MaxPendingAge == 0 {
		opts.MaxPendingAge = 30 * time.Second
	}
	var (
		s   *Store
		err error
	)
	if IsPostgres(opts.Path) {
		s, err = openPostgresStore(ctx, opts)
		if err == nil && opts.Cluster != nil {
			if err = s.joinCluster(ctx, opts.Path, *opts.Cluster); err != nil {
				s.closeUnstarted()
				err = redactErr(opts.Path, fmt.Errorf("joining the instances on %s: %w", RedactDatabase(opts.Path), err))
			}
		}
	} else {
		s, err = openSQLiteStore(ctx, opts)
	}
	if err != nil {
		return nil, err
	}
	s.start(opts)
	return s, nil
}

// closeUnstarted closes the database pools of a store whose goroutines
// never started (Open failing after the store was built).
func (s *Store) closeUnstarted() {
	for _, st := range s.inserts {
		st.Close()
	}
	for _, m := range s.upserts {
		for _, st := range m {
			st.Close()
		}
	}
	s.r.Close()
	s.w.Close()
}

// start starts the store's goroutines.
func (s *Store) start(opts Options) {
	go s.flushLoop(opts.LastUsedFlushInterval)
	go s.writeLoop()
	go s.objectLoop()
	go s.pruneLoop()
	if s.rateSyncEvery > 0 {
		go s.rateSyncLoop()
	} else {
		close(s.rateSyncDone)
	}
}

// openSQLiteStore is Open for an SQLite file.
func openSQLiteStore(ctx context.Context, opts Options) (*Store, error) {
	if dir := filepath.Dir(opts.Path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating database directory: %w", err)
		}
	}
	lock, err := lockDatabase(opts.Path)
	if err != nil {
		return nil, err
	}
	s, err := open(ctx, opts)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s.lock = lock
	return s, nil
}

// open is openSQLiteStore once the process lock is held.
func open(ctx context.Context, opts Options) (*Store, error) {
	// The file may hold keys' hashes and balances: keep it private.
	if err := privateFiles(opts.Path); err != nil {
		return nil, err
	}
	w, err := sql.Open("sqlite", dsn(opts.Path, true))
	if err != nil {
		return nil, fmt.Errorf("opening database %s: %w", opts.Path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)

	if err := migrateReporting(ctx, w, opts.OnMigrationProgress); err != nil {
		w.Close()
		return nil, fmt.Errorf("migrating database %s: %w", opts.Path, err)
	}
	r, err := sql.Open("sqlite", dsn(opts.Path, false))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening database %s: %w", opts.Path, err)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	return newStore(ctx, opts, dialectSQLite, w, r)
}

// openPostgresStore is Open for a PostgreSQL database.
func openPostgresStore(ctx context.Context, opts Options) (*Store, error) {
	name := RedactDatabase(opts.Path)
	w, err := openPostgres(opts.Path)
	if err != nil {
		return nil, fmt.Errorf("opening database %s: %w", name, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := pgMigrate(ctx, w, opts.OnMigrationProgress); err != nil {
		w.Close()
		return nil, fmt.Errorf("migrating database %s: %w", name, redactErr(opts.Path, err))
	}
	r, err := openPostgres(opts.Path)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening database %s: %w", name, err)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	s, err := newStore(ctx, opts, dialectPostgres, w, r)
	if err != nil {
		return nil, fmt.Errorf("opening database %s: %w", name, redactErr(opts.Path, err))
	}
	return s, nil
}

// newStore builds the Store over its migrated writer and reader pools and
// loads what it keeps in memory; it closes both pools if it fails.
func newStore(ctx context.Context, opts Options, d dialect, w, r *sql.DB) (*Store, error) {
	s := &Store{
		path:         opts.Path,
		dialect:      d,
		w:            w,
		r:            r,
		now:          opts.Now,
		accounts:     make(map[string]*accountState),
		spend:        make(map[string]*spendState),
		keyRates:     make(map[string]*rateState),
		modelRates:   make(map[string]*rateState),
		instanceID:   newInstanceID(),
		rateSyncDone: make(chan struct{}),
		keys:         newKeyCache(opts.KeyCacheSize),
		newPlaintext: newPlaintextKey,
		lastUsed:     newLastUsedTracker(),
		closed:       make(chan struct{}),
		flushDone:    make(chan struct{}),

		queue:         newWriteQueue(),
		onWriteError:  opts.OnWriteError,
		maxPending:    opts.MaxPendingWrites,
		maxPendingAge: opts.MaxPendingAge,
		commitHook:    opts.CommitHook,
		drainTimeout:  opts.DrainTimeout,
		commitEvery:   opts.CommitInterval,
		writerDone:    make(chan struct{}),
		objects:       newObjectLog(),
		pruneWake:     make(chan struct{}, 1),
		pruneDone:     make(chan struct{}),
	}
	s.retention.Store(int64(max(opts.LedgerRetention, 0)))
	if d == dialectPostgres {
		s.rateSyncEvery = opts.RateSyncInterval
		if s.rateSyncEvery == 0 {
			s.rateSyncEvery = 100 * time.Millisecond
		}
		s.rateSyncEvery = max(s.rateSyncEvery, 0)
	}
	// Prepared before the writer starts, so that its first commit does not
	// pay for them.
	if err := s.prepareInserts(ctx); err != nil {
		s.w.Close()
		s.r.Close()
		return nil, err
	}
	if err := s.loadAccounts(ctx); err != nil {
		s.w.Close()
		s.r.Close()
		return nil, err
	}
	if err := s.loadSpendStates(ctx); err != nil {
		s.w.Close()
		s.r.Close()
		return nil, err
	}
	if err := s.loadRateLimits(ctx); err != nil {
		s.w.Close()
		s.r.Close()
		return nil, err
	}
	return s, nil
}

// dsn builds the modernc.org/sqlite data source name. WAL lets readers run
// beside the single writer; synchronous=FULL makes a commit durable before it
// returns; the busy timeout rides out a checkpoint or a second process.
func dsn(path string, writer bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	if writer {
		q.Set("_txlock", "immediate")
	}
	return "file:" + path + "?" + q.Encode()
}

// Path returns the database: the SQLite file path, or the PostgreSQL
// connection string with its password redacted (RedactDatabase).
func (s *Store) Path() string { return RedactDatabase(s.path) }

// Backend returns "sqlite" or "postgres".
func (s *Store) Backend() string { return s.dialect.String() }

// Close stops admitting new work, commits every ledger row settled before it
// (graceful stop or reload loses no row), flushes pending last-used times and
// closes the database. If the database keeps refusing the pending rows, Close
// gives up after Options.DrainTimeout and its error says how many rows were
// lost; the database is still consistent (each batch is all or nothing). It
// is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.queue.close()
		<-s.writerDone
		<-s.objects.done
		<-s.flushDone
		<-s.pruneDone
		<-s.rateSyncDone
		for _, st := range s.inserts { // the writer is gone: no one uses them
			st.Close()
		}
		for _, m := range s.upserts {
			for _, st := range m {
				st.Close()
			}
		}
		err := s.flushLastUsed(context.Background())
		if s.cluster != nil {
			// Every charge is committed: the leases can go.
			err = errors.Join(err, s.leaveCluster())
		}
		err = errors.Join(s.writerErr, s.objects.err, err, s.r.Close(), s.w.Close())
		// Last: the next Open may start as soon as the lock is free.
		if s.lock != nil {
			err = errors.Join(err, s.lock.Close())
		}
		s.closeErr = err
	})
	return s.closeErr
}

func (s *Store) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if s.isClosed() {
		return ErrClosed
	}
	return s.r.PingContext(ctx)
}

func (s *Store) flushLoop(every time.Duration) {
	defer close(s.flushDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.closed:
			return
		case <-t.C:
			_ = s.flushLastUsed(context.Background())
		}
	}
}

// unixMS converts a time to the integer milliseconds stored in the database.
func unixMS(t time.Time) int64 { return t.UnixMilli() }

// fromMS converts stored milliseconds back to a UTC time.
func fromMS(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// nullMS converts a nullable column to an optional time.
func nullMS(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMS(v.Int64)
	return &t
}
