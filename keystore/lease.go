package keystore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// One balance across instances. An account's balance lives in PostgreSQL;
// an instance admits requests against the part of it that it has reserved
// for itself, its lease (a row of aigw_leases), so that the balance is
// never spent twice:
//
//   - In memory, on an instance sharing the database, accountState.balance
//     is the instance's budget on the account: what it has leased minus the
//     charges it settled since (committed or not). ReserveFor applies the
//     usual rule to it (budget minus holds > 0, or the options' stricter
//     rules), so everything in holds.go and settle.go works unchanged.
//   - A grant is one transaction: lock the account row, free = balance -
//     sum of the live leases of every instance, and add to this instance's
//     lease at most what is free. The budget grows by the same amount once
//     it commits.
//   - A batch of usage rows (writer.go) is one transaction that locks the
//     accounts it charges, lowers their balances, inserts the rows and
//     lowers this instance's leases by the charges: a charged amount leaves
//     the lease exactly when it leaves the balance, so balance - sum(leases)
//     is at every commit what no instance has reserved.
//   - Unused budget goes back (a return lowers lease and budget together),
//     by the lease loop: of accounts idle for leaseIdle, of accounts another
//     instance found short of free balance (it sends a pg_notify on
//     aigw_pressure), and in exact mode at every round.
//
// Lease mode (ClusterOptions.Lease > 0): ReserveFor admits from the budget
// in memory and asks the database only when the budget does not cover the
// request; it then leases max(Lease, what is missing), at most what is free.
// Exact mode (Lease 0): every ReserveFor asks the database, and the rule is
// applied to balance - sum(leases) + this instance's unused budget: the
// available balance of the whole cluster, as one instance sees its own.
//
// Bound. Leases are granted only from free balance, so at any commit
// sum(leases) <= balance + (charges beyond a lease, see below). Each
// instance admits on its budget by the single-instance rule, so each
// overshoots its lease by at most its last admitted request plus the
// overruns of requests in flight with it (holds.go). Summed over the k
// instances that hold a lease on the account:
//
//	final balance >= -k × (largest single request cost) - Σ overruns.
//
// Exact mode applies the rule to the cluster's available balance under the
// account's row lock, which gives back the single-instance bound (k = 1).
// A partitioned instance stops admitting after RevocationStaleness, far
// within LeaseTTL, so it never admits on a lease that may have lapsed; the
// charges it settled before and commits after the partition are covered by
// its lease unless the lease lapsed meanwhile (an outage longer than
// LeaseTTL), which can add at most that lease to the overdraft.

// leaseState is an account's lease bookkeeping on this instance.
type leaseState struct {
	// mu serialises this instance's grant transactions on the account.
	mu sync.Mutex
	// The fields below are guarded by Store.acctMu.
	denyUntil int64 // cluster clock: no grant attempt before (none was free)
	lastUse   int64 // cluster clock of the last admission
	pressed   bool  // another instance found too little free: give back unused budget now
	// seenBalance is the committed balance as this instance last saw it
	// (Available, Balance).
	seenBalance int64
	seen        bool
}

// denyFor is how long an instance does not ask again for a lease on an
// account that had none free; a top-up is thus spendable within it.
const denyFor = 100 * time.Millisecond

// pressureReturn bounds how long a grant that found the balance leased
// by other instances waits for them to give back their unused leases
// (they do at their lease loop's next round, every poll interval, after
// the pressure notification), trying again every pressureRetry.
const (
	pressureReturn = time.Second
	pressureRetry  = 50 * time.Millisecond
)

// grantTimeout bounds a grant transaction on the request path.
const grantTimeout = 5 * time.Second

// leaseOf returns the lease state of an account, creating it.
func (c *cluster) leaseOf(accountID string) *leaseState {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	l := c.leases[accountID]
	if l == nil {
		l = &leaseState{}
		c.leases[accountID] = l
	}
	return l
}

// peekLease returns the lease state of an account, nil if it has none.
func (c *cluster) peekLease(accountID string) *leaseState {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	return c.leases[accountID]
}

// noteBalance records an account's committed balance as just seen (for
// Available and Balance); the caller holds Store.acctMu.
func (c *cluster) noteBalance(accountID string, balance int64) {
	l := c.leaseOf(accountID)
	l.seenBalance, l.seen = balance, true
}

// grantResult is what a grant transaction saw and did.
type grantResult struct {
	balance int64 // committed balance
	leased  int64 // sum of all live leases before the grant
	granted int64 // added to this instance's lease (and budget)
}

// grant runs a grant transaction on accountID: decide(free) returns how much
// to add to this instance's lease given what is free, or an error to refuse
// with (the transaction then changes nothing).
func (s *Store) grant(ctx context.Context, accountID string, decide func(balance, leased int64) (int64, error)) (grantResult, error) {
	c := s.cluster
	var res grantResult
	ctx, cancel := context.WithTimeout(ctx, grantTimeout)
	defer cancel()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return res, fmt.Errorf("%w: leasing balance of %q: %v", ErrUnavailable, accountID, err)
	}
	defer tx.Rollback()
	var disabled int64
	err = tx.QueryRowContext(ctx, `SELECT balance, disabled FROM accounts WHERE id = $1 FOR UPDATE`, accountID).Scan(&res.balance, &disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return res, fmt.Errorf("account %q: %w", accountID, ErrNotFound)
	}
	if err != nil {
		return res, fmt.Errorf("%w: leasing balance of %q: %v", ErrUnavailable, accountID, err)
	}
	if disabled != 0 {
		return res, fmt.Errorf("account %q: %w", accountID, ErrAccountDisabled)
	}
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(sum(amount), 0) FROM aigw_leases
		WHERE account_id = $1 AND expires_at > now()`, accountID).Scan(&res.leased); err != nil {
		return res, fmt.Errorf("%w: leasing balance of %q: %v", ErrUnavailable, accountID, err)
	}
	g, err := decide(res.balance, res.leased)
	if err != nil {
		return res, err
	}
	if g > 0 {
		if _, err := tx.ExecContext(ctx, `INSERT INTO aigw_leases (instance_id, account_id, amount, expires_at)
			VALUES ($1, $2, $3, now() + $4::interval)
			ON CONFLICT (account_id, instance_id) DO UPDATE SET
				amount = CASE WHEN aigw_leases.expires_at > now() THEN aigw_leases.amount ELSE 0 END + EXCLUDED.amount,
				expires_at = EXCLUDED.expires_at`,
			c.opts.InstanceID, accountID, g, c.opts.LeaseTTL.String()); err != nil {
			return res, fmt.Errorf("%w: leasing balance of %q: %v", ErrUnavailable, accountID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return res, fmt.Errorf("%w: leasing balance of %q: %v", ErrUnavailable, accountID, err)
	}
	res.granted = max(g, 0)
	return res, nil
}

// reserveCluster is ReserveFor on a store shared by several instances.
func (s *Store) reserveCluster(id Identity, amount int64, opt ReserveOption, rate *RateRequest) (*Hold, error) {
	c := s.cluster
	if err := c.check(); err != nil {
		return nil, err
	}
	accountID := id.AccountID
	// Created by another instance a moment ago, maybe.
	kctx, cancel := context.WithTimeout(context.Background(), grantTimeout)
	err := s.knowAccount(kctx, accountID)
	cancel()
	if err != nil {
		return nil, err
	}
	if err := s.reserveLineage(id, amount); err != nil {
		return nil, err
	}
	l := c.leaseOf(accountID)
	if c.opts.Lease > 0 {
		// Lease mode: from the budget when it covers the request.
		if h, err, ok := s.reserveLocal(id, amount, opt, rate, l, true); ok {
			return h, err
		}
		return s.reserveLeased(id, amount, opt, rate, l)
	}
	return s.reserveExact(id, amount, opt, rate, l)
}

// reserveLocal admits from the budget in memory. With onlyIfCovered it
// gives up (ok false) unless the budget covers the whole request, so that
// the caller can lease more first.
func (s *Store) reserveLocal(id Identity, amount int64, opt ReserveOption, rate *RateRequest, l *leaseState, onlyIfCovered bool) (h *Hold, err error, ok bool) {
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	a, found := s.accounts[id.AccountID]
	if !found {
		return nil, fmt.Errorf("account %q: %w", id.AccountID, ErrNotFound), true
	}
	if onlyIfCovered {
		avail, okSub := subInt64(a.balance, a.held)
		if !okSub || avail <= 0 || avail < amount {
			return nil, nil, false
		}
	}
	h, err = s.reserveLocked(a, id, amount, opt, rate, false)
	if err == nil {
		l.lastUse = s.cluster.clock()
	}
	return h, err, true
}

// reserveLeased is lease mode when the budget does not cover the request:
// lease what is missing (at least ClusterOptions.Lease) if the balance has
// it free, then admit from the budget by the usual rule.
func (s *Store) reserveLeased(id Identity, amount int64, opt ReserveOption, rate *RateRequest, l *leaseState) (*Hold, error) {
	c := s.cluster
	l.mu.Lock()
	defer l.mu.Unlock()
	// Another request may have leased while this one waited.
	if h, err, ok := s.reserveLocal(id, amount, opt, rate, l, true); ok {
		return h, err
	}
	s.acctMu.RLock()
	a := s.accounts[id.AccountID]
	missing := amount
	if a != nil {
		missing = amount - max(a.balance-a.held, 0)
	}
	deny := l.denyUntil
	s.acctMu.RUnlock()
	if c.clock() >= deny {
		decide := func(balance, leased int64) (int64, error) {
			free := balance - leased
			if free <= 0 {
				return 0, nil
			}
			return min(max(c.opts.Lease, missing), free), nil
		}
		res, err := s.grant(context.Background(), id.AccountID, decide)
		if err != nil {
			return nil, err
		}
		if res.granted < missing {
			// Others may hold unused leases on the account: ask them
			// to give them back (cluster.go delivers it as pressure).
			nctx, cancel := context.WithTimeout(context.Background(), grantTimeout)
			_, _ = c.db.ExecContext(nctx, `SELECT pg_notify('aigw_pressure', $1)`, id.AccountID)
			cancel()
			s.acctMu.RLock()
			own := int64(0)
			if a != nil {
				own = max(a.balance, 0)
			}
			s.acctMu.RUnlock()
			// Leases beyond this instance's own hold the rest of the
			// balance: wait for them to come back (their holders give
			// back unused lease at their lease loop's next round) and
			// try again, rather than refusing a request that a balance
			// spread over instances could pay for.
			for deadline := time.Now().Add(pressureReturn); res.granted == 0 && res.leased > own && time.Now().Before(deadline); {
				time.Sleep(pressureRetry)
				if res, err = s.grant(context.Background(), id.AccountID, decide); err != nil {
					return nil, err
				}
			}
		}
		s.acctMu.Lock()
		if a = s.accounts[id.AccountID]; a != nil {
			a.balance += res.granted
		}
		l.seenBalance, l.seen = res.balance, true
		if res.granted == 0 {
			l.denyUntil = c.clock() + int64(denyFor)
		}
		s.acctMu.Unlock()
	}
	h, err, _ := s.reserveLocal(id, amount, opt, rate, l, false)
	return h, err
}

// reserveExact is exact mode: the rule is applied, under the account's row
// lock, to balance - sum(leases) + this instance's unused budget, and the
// lease grows by what the hold needs beyond that budget.
func (s *Store) reserveExact(id Identity, amount int64, opt ReserveOption, rate *RateRequest, l *leaseState) (*Hold, error) {
	c := s.cluster
	l.mu.Lock()
	defer l.mu.Unlock()
	s.acctMu.RLock()
	a := s.accounts[id.AccountID]
	var unused int64
	if a != nil {
		unused = max(a.balance-a.held, 0)
	}
	s.acctMu.RUnlock()
	hold := amount
	res, err := s.grant(context.Background(), id.AccountID, func(balance, leased int64) (int64, error) {
		avail, ok := subInt64(balance, leased-unused)
		if !ok {
			avail = -1
		}
		var fits bool
		if hold, fits = opt.fit(amount, avail); !fits {
			return 0, &BalanceError{AccountID: id.AccountID, Balance: balance, Held: leased - unused, Wanted: opt.wanted(amount)}
		}
		if avail <= 0 {
			return 0, fmt.Errorf("account %q: available balance %s: %w", id.AccountID, FormatAmount(avail), ErrInsufficientBalance)
		}
		return hold - unused, nil
	})
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	if res.balance != 0 || res.leased != 0 {
		l.seenBalance, l.seen = res.balance, true
	}
	if err != nil {
		return nil, err
	}
	if a = s.accounts[id.AccountID]; a == nil {
		return nil, fmt.Errorf("account %q: %w", id.AccountID, ErrNotFound)
	}
	a.balance += res.granted
	l.lastUse = c.clock()
	// The cluster-wide rule admitted it: hold exactly what was decided.
	return s.reserveLocked(a, id, hold, ReserveOption{}, rate, true)
}

// Spend limits across instances. A key lineage's limit is shared the same
// way as a balance, with leases of scope lineageScope (a row of
// aigw_leases whose account_id is "lineage:<lineage>:<period start>"):
// what the lineage may still spend in the period is
// limit - committed spend (the usage rollups) - sum(leases of the scope),
// a batch of usage rows lowers the lease by what it charges in the
// transaction that adds it to the rollups, and the limit's rule applies to
// the instance's budget on the scope. Lineages are always admitted in exact
// mode: every request on a key with a limit asks the database, so the limit
// is exceeded by at most one request plus overruns across all instances, as
// on one.

// lineageScope names the lease scope of a lineage's limit in the period
// starting at start (unix ms; 0 for a total limit). Account ids cannot
// contain ':', so scopes never collide with accounts.
func lineageScope(lineage string, start int64) string {
	return fmt.Sprintf("lineage:%s:%d", lineage, start)
}

// lineageCommitted returns a lineage's committed spend since start and the
// sum of the live leases on its scope.
func (s *Store) lineageCommitted(ctx context.Context, lineage string, start int64) (spent, leased int64, err error) {
	db := s.cluster.db
	// Leases first: a batch committing in between moves a charge from a
	// lease to the rollups, which is then counted twice (on the safe side)
	// rather than not at all.
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(sum(amount), 0) FROM aigw_leases WHERE account_id = $1 AND expires_at > now()`,
		lineageScope(lineage, start)).Scan(&leased); err != nil {
		return 0, 0, fmt.Errorf("reading spend of key lineage %q: %w", lineage, err)
	}
	if err := db.QueryRowContext(ctx, rewritePlaceholders(lineageSpendSQL), start, lineage).Scan(&spent); err != nil {
		return 0, 0, fmt.Errorf("reading spend of key lineage %q: %w", lineage, err)
	}
	return spent, leased, nil
}

// reserveLineage leases, of a lineage's limit, what a hold of amount needs
// beyond this instance's unused budget on it, if the limit has it free
// (limit - committed spend - leases + unused > 0, the single-instance rule);
// otherwise it fails with a *LimitError. Keys without a limit pass.
func (s *Store) reserveLineage(id Identity, amount int64) error {
	c := s.cluster
	s.acctMu.Lock()
	st := s.spend[id.lineage]
	if st == nil || id.lineage == "" {
		s.acctMu.Unlock()
		return nil
	}
	st.roll(unixMS(s.now()))
	start := st.start
	s.acctMu.Unlock()
	scope := lineageScope(id.lineage, start)
	l := c.leaseOf(scope)
	l.mu.Lock()
	defer l.mu.Unlock()

	s.acctMu.Lock()
	if st = s.spend[id.lineage]; st == nil {
		s.acctMu.Unlock()
		return nil
	}
	limit, resets := st.limit, st.resets()
	unused := max(st.budget-st.held, 0)
	s.acctMu.Unlock()
	if unused >= amount && amount > 0 {
		s.acctMu.Lock()
		l.lastUse = c.clock()
		s.acctMu.Unlock()
		return nil // already leased
	}

	ctx, cancel := context.WithTimeout(context.Background(), grantTimeout)
	defer cancel()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%w: leasing spend limit of key %q: %v", ErrUnavailable, id.KeyID, err)
	}
	defer tx.Rollback()
	// Grants on one scope take turns; batches need not (see above).
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, scope); err != nil {
		return fmt.Errorf("%w: leasing spend limit of key %q: %v", ErrUnavailable, id.KeyID, err)
	}
	var leased, spent int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(sum(amount), 0) FROM aigw_leases WHERE account_id = $1 AND expires_at > now()`,
		scope).Scan(&leased); err != nil {
		return fmt.Errorf("%w: leasing spend limit of key %q: %v", ErrUnavailable, id.KeyID, err)
	}
	if err := tx.QueryRowContext(ctx, rewritePlaceholders(lineageSpendSQL), start, id.lineage).Scan(&spent); err != nil {
		return fmt.Errorf("%w: leasing spend limit of key %q: %v", ErrUnavailable, id.KeyID, err)
	}
	if free := limit.Amount - spent - leased + unused; free <= 0 {
		return &LimitError{KeyID: id.KeyID, Limit: limit, Spent: spent, Held: leased - unused, Resets: resets}
	}
	g := amount - unused
	if g <= 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO aigw_leases (instance_id, account_id, amount, expires_at)
		VALUES ($1, $2, $3, now() + $4::interval)
		ON CONFLICT (account_id, instance_id) DO UPDATE SET
			amount = CASE WHEN aigw_leases.expires_at > now() THEN aigw_leases.amount ELSE 0 END + EXCLUDED.amount,
			expires_at = EXCLUDED.expires_at`,
		c.opts.InstanceID, scope, g, c.opts.LeaseTTL.String()); err != nil {
		return fmt.Errorf("%w: leasing spend limit of key %q: %v", ErrUnavailable, id.KeyID, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%w: leasing spend limit of key %q: %v", ErrUnavailable, id.KeyID, err)
	}
	s.acctMu.Lock()
	if st = s.spend[id.lineage]; st != nil && st.start == start {
		st.budget += g
	}
	l.lastUse = c.clock() // not given back before the hold is placed
	s.acctMu.Unlock()
	return nil
}
