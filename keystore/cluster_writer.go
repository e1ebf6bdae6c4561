package keystore

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"time"
)

// The ledger writer's part in a store shared by several instances: every
// batch locks the account rows it charges (in id order, so two instances'
// batches cannot deadlock) and takes balance_after from the locked rows,
// lowers this instance's leases by what it charges, and records its batch
// id, so that a batch whose COMMIT outcome is unknown is never applied twice.

// batchID names a batch of usage rows: this process (runID, random even
// when the instance id is configured, since queue positions start again at
// each start) and the queue position of its first row, the same on every
// attempt.
func (c *cluster) batchID(batch []*writeOp) string {
	return fmt.Sprintf("%s/%s/%d", c.opts.InstanceID, c.runID, batch[0].seq)
}

// batchCommitted reports whether the batch with this id was committed (by an
// earlier attempt whose COMMIT reported an error).
func (c *cluster) batchCommitted(ctx context.Context, id string) (bool, error) {
	var n int
	if err := c.db.QueryRowContext(ctx, `SELECT count(*) FROM aigw_settle_batches WHERE id = $1`, id).Scan(&n); err != nil {
		return false, err
	}
	return n > 0, nil
}

// lockBatchAccounts locks the rows of the accounts a batch charges, in id
// order, and sets each account's durable to its committed balance, the base
// of the batch's balance_after values. Only the writer calls it, under
// writeMu.
func (c *cluster) lockBatchAccounts(ctx context.Context, tx *sql.Tx, batch []*writeOp) error {
	byID := map[string]*accountState{}
	for _, op := range batch {
		byID[op.acct.id] = op.acct
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	rows, err := tx.QueryContext(ctx, `SELECT id, balance FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids)
	if err != nil {
		return fmt.Errorf("locking accounts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id      string
			balance int64
		)
		if err := rows.Scan(&id, &balance); err != nil {
			return fmt.Errorf("locking accounts: %w", err)
		}
		byID[id].durable = balance
	}
	return rows.Err()
}

// addToBalances adds delta(a) to the stored balance of every account of
// accts in one statement, inside the batch's transaction.
func (c *cluster) addToBalances(ctx context.Context, tx *sql.Tx, accts []*accountState, delta func(*accountState) int64) error {
	ids := make([]string, len(accts))
	deltas := make([]int64, len(accts))
	for i, a := range accts {
		ids[i], deltas[i] = a.id, delta(a)
	}
	res, err := tx.ExecContext(ctx, `UPDATE accounts a SET balance = a.balance + d.delta
		FROM unnest($1::text[], $2::bigint[]) AS d(id, delta) WHERE a.id = d.id`, ids, deltas)
	if err != nil {
		return fmt.Errorf("updating balances: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != int64(len(ids)) {
		return fmt.Errorf("updating balances: %d of %d accounts changed (%v)", n, len(ids), err)
	}
	return nil
}

// settleLeases lowers this instance's leases by what the batch charges
// (never below zero: a charge beyond the lease is already off the balance)
// and records the batch id, inside the batch's transaction.
func (c *cluster) settleLeases(ctx context.Context, tx *sql.Tx, id string, charged map[string]int64) error {
	ids := make([]string, 0, len(charged))
	amounts := make([]int64, 0, len(charged))
	for acct, amt := range charged {
		if amt > 0 {
			ids = append(ids, acct)
			amounts = append(amounts, amt)
		}
	}
	if len(ids) > 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE aigw_leases l SET amount = GREATEST(l.amount - c.amount, 0)
			FROM unnest($1::text[], $2::bigint[]) AS c(account_id, amount)
			WHERE l.account_id = c.account_id AND l.instance_id = $3`, ids, amounts, c.opts.InstanceID); err != nil {
			return fmt.Errorf("lowering leases: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO aigw_settle_batches (id) VALUES ($1)`, id); err != nil {
		return fmt.Errorf("recording batch: %w", err)
	}
	return nil
}

// leaseLoop renews this instance's leases, gives back unused budget (of
// accounts idle for leaseIdle in lease mode; all of it in exact mode) and
// deletes lapsed leases of dead instances.
func (s *Store) leaseLoop(ctx context.Context) {
	c := s.cluster
	defer c.wg.Done()
	t := time.NewTicker(c.opts.PollInterval)
	defer t.Stop()
	var renewed, cleaned time.Time
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		if time.Since(renewed) >= c.opts.LeaseTTL/6 {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := c.db.ExecContext(rctx, `UPDATE aigw_leases SET expires_at = now() + $2::interval WHERE instance_id = $1`,
				c.opts.InstanceID, c.opts.LeaseTTL.String()); err == nil {
				renewed = time.Now()
			}
			cancel()
		}
		if time.Since(cleaned) >= time.Minute {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := c.db.ExecContext(rctx, `DELETE FROM aigw_leases WHERE expires_at < now() - interval '1 minute'`); err == nil {
				cleaned = time.Now()
			}
			cancel()
		}
		s.returnUnused(ctx)
	}
}

// leaseIdle is how long an account goes without an admission on this
// instance before its unused budget is given back (lease mode), unless
// another instance asks for it sooner (pressure, lease.go).
const leaseIdle = 10 * time.Second

// lineageIdle is the same for the budgets of spend limits, which are leased
// per request.
const lineageIdle = time.Second

// returnUnused gives back the unused budget (budget minus holds) of the
// accounts it applies to. The budget is lowered first and restored only if
// the transaction surely did not commit, so it is never spent twice.
func (s *Store) returnUnused(ctx context.Context) {
	c := s.cluster
	now := c.clock()
	type ret struct {
		budget *int64 // an account's balance or a lineage's budget
		scope  string
		r      int64
	}
	var rets []ret
	// acctMu before leaseMu, as everywhere (noteBalance, shownBalance).
	s.acctMu.Lock()
	c.leaseMu.Lock()
	for id, l := range c.leases {
		a := s.accounts[id]
		if a == nil || (c.opts.Lease > 0 && now-l.lastUse < int64(leaseIdle) && !l.pressed) {
			continue
		}
		l.pressed = false
		if r := a.balance - a.held; r > 0 {
			a.balance -= r
			rets = append(rets, ret{&a.balance, id, r})
		}
	}
	// Spend limits: what is unused once the lineage is idle.
	for lineage, st := range s.spend {
		scope := lineageScope(lineage, st.start)
		if l := c.leases[scope]; l != nil && now-l.lastUse < int64(lineageIdle) {
			continue
		}
		if r := st.budget - st.held; r > 0 {
			st.budget -= r
			rets = append(rets, ret{&st.budget, scope, r})
		}
	}
	c.leaseMu.Unlock()
	s.acctMu.Unlock()
	if len(rets) == 0 {
		return
	}
	ids := make([]string, len(rets))
	amounts := make([]int64, len(rets))
	for i, r := range rets {
		ids[i], amounts[i] = r.scope, r.r
	}
	restore := func() {
		s.acctMu.Lock()
		for _, r := range rets {
			*r.budget += r.r
		}
		s.acctMu.Unlock()
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tx, err := c.db.BeginTx(rctx, nil)
	if err != nil {
		restore()
		return
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(rctx, `UPDATE aigw_leases l SET amount = GREATEST(l.amount - c.amount, 0)
		FROM unnest($1::text[], $2::bigint[]) AS c(account_id, amount)
		WHERE l.account_id = c.account_id AND l.instance_id = $3`, ids, amounts, c.opts.InstanceID); err != nil {
		restore()
		return
	}
	// A COMMIT that fails leaves the outcome unknown: keep the budget
	// lowered (the lease then reserves more than this instance uses,
	// which only makes others refuse sooner, until it lapses).
	_ = tx.Commit()
}

// dropLeases deletes this instance's leases (Close, once every charge is
// committed).
func (c *cluster) dropLeases() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.db.ExecContext(ctx, `DELETE FROM aigw_leases WHERE instance_id = $1`, c.opts.InstanceID)
	return err
}
