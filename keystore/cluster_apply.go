package keystore

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// How a Store sharing its database applies the change feed (cluster.go),
// and what it reads from the database instead of memory.

// applyChanges drops the cached state the changes made stale: key cache
// entries by hash, account rows (reloaded), spend limits and rate limits of
// the changed keys' lineages and accounts (reloaded), and the "nothing
// free" mark of accounts whose balance was adjusted.
func (s *Store) applyChanges(ctx context.Context, rows []feedRow) error {
	accounts := map[string]bool{}
	var keyIDs []string
	for _, r := range rows {
		switch r.kind {
		case changeKey:
			if len(r.keyHash) == 32 {
				s.keys.invalidate([32]byte(r.keyHash))
			}
			if r.keyID != "" {
				keyIDs = append(keyIDs, r.keyID)
			}
		case changeAccount:
			accounts[r.accountID] = true
		case changeBalance:
			if l := s.cluster.leaseOf(r.accountID); l != nil {
				s.acctMu.Lock()
				l.denyUntil = 0
				s.acctMu.Unlock()
			}
		}
	}
	if len(accounts) > 0 {
		ids := make([]string, 0, len(accounts))
		for id := range accounts {
			ids = append(ids, id)
		}
		if err := s.reloadAccounts(ctx, ids); err != nil {
			return err
		}
	}
	if len(keyIDs) > 0 {
		if err := s.reloadLimits(ctx, keyIDs); err != nil {
			return err
		}
	}
	if len(accounts) > 0 || len(keyIDs) > 0 {
		ids := make([]string, 0, len(accounts))
		for id := range accounts {
			ids = append(ids, id)
		}
		if err := s.reloadRateLimits(ctx, ids, keyIDs); err != nil {
			return err
		}
	}
	return nil
}

// pressure marks an account whose unused budget the lease loop gives back
// at its next round.
func (s *Store) pressure(accountID string) {
	if l := s.cluster.peekLease(accountID); l != nil {
		s.acctMu.Lock()
		l.pressed = true
		s.acctMu.Unlock()
	}
}

// resetCaches drops every cached key, reloads every account and drops the
// budgets beyond the holds in flight (the leases behind them may have
// lapsed), after a long gap in the feed.
func (s *Store) resetCaches(ctx context.Context) error {
	s.keys.clear()
	s.acctMu.Lock()
	for _, a := range s.accounts {
		a.balance = min(a.balance, a.held)
	}
	s.acctMu.Unlock()
	return s.reloadAccounts(ctx, nil)
}

// joinCluster links a store on PostgreSQL with the other instances on the
// same database: it opens the cluster's own connections on dsn, reads the
// feed position, then reloads what Open loaded (a change committed in
// between is either in the reload or after the position), starts with no
// budget on any account, and starts the feed and lease goroutines. Open
// calls it before the store's own goroutines start.
func (s *Store) joinCluster(ctx context.Context, dsn string, opts ClusterOptions) error {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("cluster connection: %w", err)
	}
	cfg.MaxConns = 4
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "caddy-ai-gateway-cluster"
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("cluster connection: %w", err)
	}
	c, err := newCluster(ctx, pool, opts, s)
	if err != nil {
		pool.Close()
		return err
	}
	s.cluster = c
	fail := func(err error) error {
		s.cluster = nil
		pool.Close()
		return err
	}
	if err := s.reloadAccounts(ctx, nil); err != nil {
		return fail(err)
	}
	s.acctMu.Lock()
	for _, a := range s.accounts {
		a.balance = 0
	}
	s.acctMu.Unlock()
	clear(s.spend)
	if err := s.loadSpendStates(ctx); err != nil {
		return fail(err)
	}
	s.logChange = func(ctx context.Context, tx *sql.Tx, ch change) error {
		return appendChange(ctx, tx, ch.kind, ch.accountID, ch.keyID, ch.keyHashes)
	}
	c.run(s.leaseLoop)
	return nil
}

// leaveCluster stops the feed and lease goroutines, gives back this
// instance's leases and closes the cluster's connections. Close calls it
// once every charge is committed.
func (s *Store) leaveCluster() error {
	c := s.cluster
	c.close()
	err := c.dropLeases()
	c.db.Close()
	c.pool.Close()
	return err
}

// reloadAccounts reads account rows (ids nil: all) and updates memory:
// name, disabled, and the committed balance (durable); a new account starts
// with no budget.
func (s *Store) reloadAccounts(ctx context.Context, ids []string) error {
	q := `SELECT id, name, balance, disabled, created_at FROM accounts`
	var args []any
	if ids != nil {
		q += ` WHERE id = ANY($1)`
		args = append(args, ids)
	}
	rows, err := s.cluster.db.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("reloading accounts: %w", err)
	}
	defer rows.Close()
	type row struct {
		id, name           string
		balance, createdAt int64
		disabled           int64
	}
	var got []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.name, &r.balance, &r.disabled, &r.createdAt); err != nil {
			return fmt.Errorf("reloading accounts: %w", err)
		}
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reloading accounts: %w", err)
	}
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	for _, r := range got {
		s.cluster.noteBalance(r.id, r.balance)
		a := s.accounts[r.id]
		if a == nil {
			// durable belongs to the writer; a new account has no rows
			// queued, and the writer refreshes it under the row lock.
			s.accounts[r.id] = &accountState{id: r.id, name: r.name, disabled: r.disabled != 0, createdAt: r.createdAt, durable: r.balance}
			continue
		}
		a.name, a.disabled = r.name, r.disabled != 0
	}
	return nil
}

// knowAccount loads an account this instance does not know yet.
func (s *Store) knowAccount(ctx context.Context, id string) error {
	s.acctMu.RLock()
	_, known := s.accounts[id]
	s.acctMu.RUnlock()
	if known {
		return nil
	}
	if err := s.reloadAccounts(ctx, []string{id}); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// reloadLimits reads the spend limits of the lineages of keyIDs and puts
// the counters in place (installSpendState: a new or changed period loads
// the committed spend; a removed limit drops the counter).
func (s *Store) reloadLimits(ctx context.Context, keyIDs []string) error {
	rows, err := s.cluster.db.QueryContext(ctx, `SELECT l.lineage, max(k.spend_limit), max(k.limit_period)
		FROM (SELECT DISTINCT lineage FROM api_keys WHERE id = ANY($1)) l
		LEFT JOIN api_keys k ON k.lineage = l.lineage AND k.deleted_at IS NULL
		GROUP BY l.lineage`, keyIDs)
	if err != nil {
		return fmt.Errorf("reloading spend limits: %w", err)
	}
	defer rows.Close()
	type lim struct {
		lineage string
		limit   *SpendLimit
	}
	var got []lim
	for rows.Next() {
		var (
			lineage string
			amount  sql.NullInt64
			period  sql.NullString
		)
		if err := rows.Scan(&lineage, &amount, &period); err != nil {
			return fmt.Errorf("reloading spend limits: %w", err)
		}
		got = append(got, lim{lineage, decodeLimit(amount, period)})
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reloading spend limits: %w", err)
	}
	for _, l := range got {
		if _, err := s.installSpendState(l.lineage, l.limit); err != nil {
			return err
		}
	}
	return nil
}

// reservedSQL sums the live leases of the account of the row.
const reservedSQL = `(SELECT COALESCE(sum(l.amount), 0) FROM aigw_leases l
	WHERE l.account_id = accounts.id AND l.expires_at > now())`

// clusterAccount reads an account's committed state from the database.
func (s *Store) clusterAccount(ctx context.Context, id string) (Account, error) {
	var (
		a        Account
		disabled int64
		created  int64
	)
	err := s.cluster.db.QueryRowContext(ctx, `SELECT id, name, balance, disabled, created_at, `+reservedSQL+`
		FROM accounts WHERE id = $1`, id).
		Scan(&a.ID, &a.Name, &a.Balance, &disabled, &created, &a.reserved)
	if err == sql.ErrNoRows {
		return Account{}, fmt.Errorf("account %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Account{}, fmt.Errorf("reading account %q: %w", id, err)
	}
	a.Disabled, a.CreatedAt, a.hasReserved = disabled != 0, fromMS(created), true
	return a, nil
}

// clusterAccounts reads every account's committed state from the database;
// ok is false when it cannot.
func (s *Store) clusterAccounts(ctx context.Context) ([]Account, bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rows, err := s.cluster.db.QueryContext(ctx, `SELECT id, name, balance, disabled, created_at, `+reservedSQL+`
		FROM accounts ORDER BY id`)
	if err != nil {
		return nil, false
	}
	defer rows.Close()
	out := []Account{}
	for rows.Next() {
		var (
			a                 Account
			disabled, created int64
		)
		if err := rows.Scan(&a.ID, &a.Name, &a.Balance, &disabled, &created, &a.reserved); err != nil {
			return nil, false
		}
		a.Disabled, a.CreatedAt, a.hasReserved = disabled != 0, fromMS(created), true
		out = append(out, a)
	}
	if rows.Err() != nil {
		return nil, false
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, true
}
