package keystore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// Several gateway instances may share one PostgreSQL database. Each Store
// keeps caches (keys, accounts, spend counters) that another instance's
// administrative change makes stale; the change feed (cluster_schema.go)
// tells every instance about every such change, in commit order:
//
//   - each Store polls aigw_changes for rows it has not applied every
//     ClusterOptions.PollInterval, and at once when a LISTEN connection
//     hears the pg_notify of a new row (the notification is only a wake-up:
//     the poll is the guarantee, so a lost listener connection delays
//     nothing beyond the poll interval);
//   - applying a row drops the key from the cache (positive and negative),
//     and reloads the account row and the lineage's spend limit;
//   - a Store remembers when the last poll it fully applied was sent. While
//     that is longer ago than ClusterOptions.RevocationStaleness,
//     Authenticate and ReserveFor fail with ErrUnavailable (the gateway
//     answers 503 store_unavailable): an instance that cannot hear about
//     revocations stops trusting its cache. It recovers by itself with the
//     next successful poll.
//
// The rule that follows: a change committed at time T (a key deleted,
// rotated without grace, its expiry moved, an account disabled) is in force
// on every instance for every request that reaches Authenticate or
// ReserveFor after T + RevocationStaleness. A poll sent after T sees the
// change (the database's snapshot is taken after the poll is sent), and a
// Store only serves while its last applied poll was sent less than
// RevocationStaleness ago.

// ClusterOptions configure a Store on PostgreSQL shared by several
// instances. They are ignored on SQLite. The zero value is usable.
type ClusterOptions struct {
	// InstanceID names this process among the instances (leases, settled
	// batch ids, logs). Default: random at each Open. A configured id must
	// be unique among the running instances: Open gives back the leases
	// found under it (a previous run's).
	InstanceID string
	// PollInterval is how often the change feed is polled when no
	// notification arrives. Default 200ms.
	PollInterval time.Duration
	// RevocationStaleness bounds how old the last applied poll of the change
	// feed may be while the Store still serves from its caches; past it,
	// Authenticate and ReserveFor fail with ErrUnavailable. It is the
	// revocation bound across instances. Default 1s; at least twice
	// PollInterval.
	RevocationStaleness time.Duration
	// Lease is how much of an account's balance an instance takes at a
	// time, in nano-units, to admit requests without asking the database
	// (lease mode). 0 selects exact mode: every admission is checked
	// against the balance in the database, the single-instance bound.
	// Negative means the default, 1.00 (one unit of the currency).
	Lease int64
	// LeaseTTL is how long a lease outlives the last heartbeat of the
	// instance that holds it (a killed instance's leases lapse after it).
	// Default 30s.
	LeaseTTL time.Duration
}

// Cluster defaults.
const (
	defaultPollInterval        = 200 * time.Millisecond
	defaultRevocationStaleness = time.Second
	defaultLease               = NanoPerUnit
	defaultLeaseTTL            = 30 * time.Second
	// changeRetention is how long rows of the change feed are kept; an
	// instance cut off for longer than staleReset (or a third of the lease
	// TTL) drops all its caches and its budgets when it comes back instead
	// of relying on rows that may be gone and leases that may have lapsed.
	changeRetention = time.Hour
	staleReset      = 10 * time.Minute
	changeBatch     = 1000
)

// Validate checks the options as Open would, defaults filled in.
func (o ClusterOptions) Validate() error {
	_, err := o.withDefaults()
	return err
}

// Effective returns the options with the defaults Open fills in (an
// empty InstanceID stays empty: Open draws a random one), so that two
// configurations can be compared by what they do: a lease of -1 (the
// default) and an explicit 1.00 are the same.
func (o ClusterOptions) Effective() ClusterOptions {
	if o.PollInterval <= 0 {
		o.PollInterval = defaultPollInterval
	}
	if o.RevocationStaleness <= 0 {
		o.RevocationStaleness = defaultRevocationStaleness
	}
	if o.Lease < 0 {
		o.Lease = defaultLease
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = defaultLeaseTTL
	}
	return o
}

// withDefaults fills in the zero fields.
func (o ClusterOptions) withDefaults() (ClusterOptions, error) {
	if o.PollInterval <= 0 {
		o.PollInterval = defaultPollInterval
	}
	if o.RevocationStaleness <= 0 {
		o.RevocationStaleness = defaultRevocationStaleness
	}
	if o.RevocationStaleness < 2*o.PollInterval {
		return o, fmt.Errorf("%w: revocation staleness %s must be at least twice the poll interval %s", ErrInvalid, o.RevocationStaleness, o.PollInterval)
	}
	if o.Lease < 0 {
		o.Lease = defaultLease
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = defaultLeaseTTL
	}
	if o.LeaseTTL < 10*o.RevocationStaleness {
		return o, fmt.Errorf("%w: lease TTL %s must be at least ten times the revocation staleness %s", ErrInvalid, o.LeaseTTL, o.RevocationStaleness)
	}
	if o.InstanceID == "" {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return o, err
		}
		o.InstanceID = hex.EncodeToString(b[:])
	}
	return o, nil
}

// feedRow is one row of the change feed.
type feedRow struct {
	seq       int64
	kind      string // changeKey, changeAccount or changeBalance
	accountID string
	keyID     string
	keyHash   []byte // kind changeKey: nil, or a hash whose cached state is stale
}

// execer runs a statement in a transaction (*sql.Tx).
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// appendChange appends an administrative change to the feed inside its
// transaction tx, which must commit (or roll back) right after: it takes
// changeFeedLock, held until then, so that rows are numbered in commit
// order. A key change appends a row per hash; pg_notify wakes the
// instances once the transaction commits.
func appendChange(ctx context.Context, tx execer, kind, accountID, keyID string, hashes [][32]byte) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, changeFeedLock); err != nil {
		return fmt.Errorf("ordering change feed: %w", err)
	}
	if len(hashes) == 0 {
		if _, err := tx.ExecContext(ctx, `INSERT INTO aigw_changes (kind, account_id, key_id) VALUES ($1, $2, $3)`,
			kind, accountID, keyID); err != nil {
			return fmt.Errorf("appending to change feed: %w", err)
		}
	}
	for _, h := range hashes {
		if _, err := tx.ExecContext(ctx, `INSERT INTO aigw_changes (kind, account_id, key_id, key_hash) VALUES ($1, $2, $3, $4)`,
			kind, accountID, keyID, h[:]); err != nil {
			return fmt.Errorf("appending to change feed: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_notify('aigw_changes', '')`); err != nil {
		return fmt.Errorf("appending to change feed: %w", err)
	}
	return nil
}

// changeApplier is what the feed changes: the Store (feed_apply.go).
type changeApplier interface {
	// applyChanges makes the caches forget what the changes touched. An
	// error leaves the changes to be applied again by the next poll.
	applyChanges(ctx context.Context, rows []feedRow) error
	// resetCaches drops every cache, after a gap in the feed.
	resetCaches(ctx context.Context) error
	// pressure says that another instance could not lease enough of an
	// account's balance.
	pressure(accountID string)
}

// cluster is a Store's link with the other instances on the same
// PostgreSQL database: the change feed and its staleness.
type cluster struct {
	opts  ClusterOptions
	runID string // random per process: batch ids
	pool  *pgxpool.Pool
	db    *sql.DB // the same pool through database/sql
	apply changeApplier

	leaseMu sync.Mutex
	leases  map[string]*leaseState // by account id (lease.go)

	base time.Time // origin of clock (monotonic)
	// fresh is the clock (ns since base, plus one) at which the last fully
	// applied poll was sent; 0: none yet.
	fresh atomic.Int64
	// applied is the seq of the last change applied; only the poller
	// writes it.
	applied atomic.Int64
	// polls counts the polls applied (tests).
	polls atomic.Int64

	wake     chan struct{} // capacity 1: poll now
	stop     chan struct{}
	stopOnce sync.Once
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	// listenerPID is the backend pid of the LISTEN connection, 0 while
	// it is down (tests terminate it).
	listenerPID atomic.Uint32
	// lastErr is the last poll error, for ErrUnavailable's message.
	lastErr atomic.Pointer[error]
	// uncertain is the id of the batch of usage rows whose COMMIT last
	// failed (writer.go); only the writer uses it, under writeMu.
	uncertain string
}

// newCluster migrates the cluster tables and reads the feed's current
// position; the caller loads its caches after that and then calls run.
func newCluster(ctx context.Context, pool *pgxpool.Pool, opts ClusterOptions, apply changeApplier) (*cluster, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := clusterMigrate(ctx, pool); err != nil {
		return nil, err
	}
	c := &cluster{opts: opts, pool: pool, db: stdlib.OpenDBFromPool(pool), apply: apply, base: time.Now(),
		leases: make(map[string]*leaseState), wake: make(chan struct{}, 1), stop: make(chan struct{})}
	var rb [8]byte
	if _, err := rand.Read(rb[:]); err != nil {
		return nil, err
	}
	c.runID = hex.EncodeToString(rb[:])
	// Leases under this instance id are a previous run's (a configured
	// instance_id): this run has no budget behind them.
	if _, err := pool.Exec(ctx, `DELETE FROM aigw_leases WHERE instance_id = $1`, opts.InstanceID); err != nil {
		return nil, fmt.Errorf("clearing leases of a previous run: %w", err)
	}
	var last int64
	sent := c.clock()
	if err := pool.QueryRow(ctx, `SELECT COALESCE(max(seq), 0) FROM aigw_changes`).Scan(&last); err != nil {
		return nil, fmt.Errorf("reading change feed position: %w", err)
	}
	c.applied.Store(last)
	c.fresh.Store(sent + 1)
	return c, nil
}

// run starts the poller and the listener, and extra, if not nil, on the
// same lifetime (it must call c.wg.Done when it returns).
func (c *cluster) run(extra func(context.Context)) {
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(2)
	go c.pollLoop(runCtx)
	go c.listenLoop(runCtx)
	if extra != nil {
		c.wg.Add(1)
		go extra(runCtx)
	}
}

// startCluster is newCluster then run.
func startCluster(ctx context.Context, pool *pgxpool.Pool, opts ClusterOptions, apply changeApplier) (*cluster, error) {
	c, err := newCluster(ctx, pool, opts, apply)
	if err != nil {
		return nil, err
	}
	c.run(nil)
	return c, nil
}

// clock is a monotonic time in nanoseconds since base.
func (c *cluster) clock() int64 { return int64(time.Since(c.base)) }

// close stops the goroutines; it does not close the pool.
func (c *cluster) close() {
	c.stopOnce.Do(func() {
		close(c.stop)
		if c.cancel != nil {
			c.cancel()
		}
		c.wg.Wait()
	})
}

func (c *cluster) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// check returns nil while the last applied poll of the feed was sent less
// than RevocationStaleness ago, and an error wrapping ErrUnavailable
// otherwise. It does no I/O.
func (c *cluster) check() error {
	at := c.fresh.Load()
	age := time.Duration(c.clock() - (at - 1))
	if at != 0 && age <= c.opts.RevocationStaleness {
		return nil
	}
	last := ""
	if e := c.lastErr.Load(); e != nil {
		last = ": " + (*e).Error()
	}
	return fmt.Errorf("%w: no news from PostgreSQL for %s (revocation staleness %s)%s",
		ErrUnavailable, age.Round(time.Millisecond), c.opts.RevocationStaleness, last)
}

// pollLoop polls the feed every PollInterval, and at once when woken.
func (c *cluster) pollLoop(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTimer(c.opts.PollInterval)
	defer t.Stop()
	lastPrune := time.Now()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		case <-c.wake:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		}
		sent := c.clock()
		err := c.pollOnce(ctx, sent)
		if err != nil {
			c.lastErr.Store(&err)
		} else {
			c.lastErr.Store(nil)
			c.fresh.Store(sent + 1)
			c.polls.Add(1)
		}
		if time.Since(lastPrune) > time.Minute && err == nil {
			lastPrune = time.Now()
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, _ = c.pool.Exec(pctx, `DELETE FROM aigw_changes WHERE at < now() - $1::interval`, changeRetention.String())
			// A batch id is only looked up by the retry of its own batch.
			_, _ = c.pool.Exec(pctx, `DELETE FROM aigw_settle_batches WHERE created_at < now() - $1::interval`, changeRetention.String())
			cancel()
		}
		t.Reset(c.opts.PollInterval)
	}
}

// pollOnce reads and applies every change after the last applied one. A
// Store that has not polled successfully for staleReset drops its caches
// first: rows it missed may have been pruned.
func (c *cluster) pollOnce(ctx context.Context, sent int64) error {
	ctx, cancel := context.WithTimeout(ctx, max(c.opts.RevocationStaleness, time.Second))
	defer cancel()
	if at := c.fresh.Load(); at != 0 && time.Duration(sent-(at-1)) > min(staleReset, c.opts.LeaseTTL/3) {
		var last int64
		if err := c.pool.QueryRow(ctx, `SELECT COALESCE(max(seq), 0) FROM aigw_changes`).Scan(&last); err != nil {
			return fmt.Errorf("polling change feed: %w", err)
		}
		if err := c.apply.resetCaches(ctx); err != nil {
			return err
		}
		c.applied.Store(last)
	}
	for {
		rows, err := c.pool.Query(ctx, `SELECT seq, kind, account_id, key_id, key_hash
			FROM aigw_changes WHERE seq > $1 ORDER BY seq LIMIT `+fmt.Sprint(changeBatch), c.applied.Load())
		if err != nil {
			return fmt.Errorf("polling change feed: %w", err)
		}
		var cs []feedRow
		for rows.Next() {
			var ch feedRow
			if err := rows.Scan(&ch.seq, &ch.kind, &ch.accountID, &ch.keyID, &ch.keyHash); err != nil {
				rows.Close()
				return fmt.Errorf("polling change feed: %w", err)
			}
			cs = append(cs, ch)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("polling change feed: %w", err)
		}
		if len(cs) == 0 {
			return nil
		}
		if err := c.apply.applyChanges(ctx, cs); err != nil {
			return fmt.Errorf("applying change feed: %w", err)
		}
		c.applied.Store(cs[len(cs)-1].seq)
		if len(cs) < changeBatch {
			return nil
		}
	}
}

// listenLoop keeps a LISTEN connection open and wakes the poller on every
// notification, and whenever it (re)connects, since notifications sent while
// it was away are lost.
func (c *cluster) listenLoop(ctx context.Context) {
	defer c.wg.Done()
	delay := 50 * time.Millisecond
	for {
		err := c.listen(ctx)
		if c.listenerPID.Swap(0) != 0 {
			delay = 50 * time.Millisecond // it was connected: retry soon
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.signal()
		}
		select {
		case <-c.stop:
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

func (c *cluster) listen(ctx context.Context) error {
	cfg := c.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "aigw-listen-" + c.opts.InstanceID
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN aigw_changes; LISTEN aigw_pressure`); err != nil {
		return err
	}
	c.listenerPID.Store(conn.PgConn().PID())
	c.signal()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		if n.Channel == "aigw_pressure" {
			c.apply.pressure(n.Payload)
			continue
		}
		c.signal()
	}
}
