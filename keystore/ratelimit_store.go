package keystore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Rate limits stored on key lineages (api_keys.rate_limits, the same on
// every live key of a lineage) and on accounts (accounts.rate_limits), as
// JSON objects of RateLimits; NULL: none. They are loaded into memory when
// the store opens and changed there after each commit, so admission reads
// no database.

// loadRateLimits loads the stored rate limits of lineages and accounts. It
// runs in Open, after loadAccounts.
func (s *Store) loadRateLimits(ctx context.Context) error {
	rows, err := s.r.QueryContext(ctx, `SELECT lineage, rate_limits FROM api_keys
		WHERE deleted_at IS NULL AND rate_limits IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("loading key rate limits: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var lineage, raw string
		if err := rows.Scan(&lineage, &raw); err != nil {
			return fmt.Errorf("loading key rate limits: %w", err)
		}
		l, err := decodeRateLimits(raw)
		if err != nil {
			return fmt.Errorf("loading rate limits of key lineage %q: %w", lineage, err)
		}
		if l != nil {
			s.rateStateLocked(s.keyRates, "k:", lineage).own = *l
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("loading key rate limits: %w", err)
	}
	arows, err := s.r.QueryContext(ctx, `SELECT id, rate_limits FROM accounts WHERE rate_limits IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("loading account rate limits: %w", err)
	}
	defer arows.Close()
	for arows.Next() {
		var id, raw string
		if err := arows.Scan(&id, &raw); err != nil {
			return fmt.Errorf("loading account rate limits: %w", err)
		}
		l, err := decodeRateLimits(raw)
		if err != nil {
			return fmt.Errorf("loading rate limits of account %q: %w", id, err)
		}
		if a := s.accounts[id]; a != nil && l != nil {
			s.accountRateLocked(a).own = *l
		}
	}
	return arows.Err()
}

// setKeyRateLimits puts a lineage's own limits in place in memory (nil:
// none), keeping its counts.
func (s *Store) setKeyRateLimits(lineage string, l *RateLimits) {
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	var own RateLimits
	if l != nil {
		own = *l
	}
	if st := s.keyRates[lineage]; st != nil || !own.IsZero() {
		s.rateStateLocked(s.keyRates, "k:", lineage).own = own
	}
}

// SetAccountRateLimits sets an account's own rate limits, which apply
// across all its keys from the next request on; nil or zero removes them.
// Counts in the current windows are kept.
func (s *Store) SetAccountRateLimits(ctx context.Context, id string, l *RateLimits) (Account, error) {
	if l != nil {
		if err := l.Validate(); err != nil {
			return Account{}, err
		}
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.isClosed() {
		return Account{}, ErrClosed
	}
	s.acctMu.RLock()
	a, ok := s.accounts[id]
	s.acctMu.RUnlock()
	if !ok {
		return Account{}, fmt.Errorf("account %q: %w", id, ErrNotFound)
	}
	var prev *RateLimits
	s.acctMu.RLock()
	if a.rate != nil && !a.rate.own.IsZero() {
		own := a.rate.own
		prev = &own
	}
	s.acctMu.RUnlock()
	err := s.adminTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET rate_limits = ? WHERE id = ?`, encodeRateLimits(l), id); err != nil {
			return err
		}
		if err := s.writeAudit(ctx, tx, id, id, ActionAccountRateLimits, map[string]any{"rate_limits": Change{prev, l}}); err != nil {
			return err
		}
		return s.recordChange(ctx, tx, change{kind: changeAccount, accountID: id})
	})
	if err != nil {
		return Account{}, fmt.Errorf("updating account %q: %w", id, err)
	}
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	var own RateLimits
	if l != nil {
		own = *l
	}
	if a.rate != nil || !own.IsZero() {
		s.accountRateLocked(a).own = own
	}
	return s.snapshotOf(a), nil
}

// reloadRateLimits reads again the own rate limits of accounts and of the
// lineages of keys that another instance changed (the change feed,
// cluster_apply.go); the counts are kept.
func (s *Store) reloadRateLimits(ctx context.Context, accountIDs, keyIDs []string) error {
	type acct struct {
		id string
		l  *RateLimits
	}
	var accts []acct
	for _, id := range accountIDs {
		var raw sql.NullString
		err := s.r.QueryRowContext(ctx, `SELECT rate_limits FROM accounts WHERE id = ?`, id).Scan(&raw)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reloading rate limits of account %q: %w", id, err)
		}
		l, err := decodeRateLimits(raw.String)
		if err != nil {
			return fmt.Errorf("reloading rate limits of account %q: %w", id, err)
		}
		accts = append(accts, acct{id, l})
	}
	for _, id := range keyIDs {
		var (
			lineage string
			raw     sql.NullString
		)
		err := s.r.QueryRowContext(ctx, `SELECT lineage, rate_limits FROM api_keys WHERE id = ?`, id).Scan(&lineage, &raw)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reloading rate limits of key %q: %w", id, err)
		}
		l, err := decodeRateLimits(raw.String)
		if err != nil {
			return fmt.Errorf("reloading rate limits of key %q: %w", id, err)
		}
		s.setKeyRateLimits(lineage, l)
	}
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	for _, x := range accts {
		a := s.accounts[x.id]
		if a == nil {
			continue
		}
		var own RateLimits
		if x.l != nil {
			own = *x.l
		}
		if a.rate != nil || !own.IsZero() {
			s.accountRateLocked(a).own = own
		}
	}
	return nil
}
