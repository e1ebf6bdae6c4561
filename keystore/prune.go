package keystore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Retention. With Options.LedgerRetention set, a background goroutine
// deletes the raw ledger rows older than the retention, a few thousand per
// transaction. What it deletes is carried forward per account in
// ledger_pruned (the sum of the amounts, the number of rows, and the cut),
// in the same transaction as the delete, so that for every account, at
// every commit,
//
//	balance = carried_forward + sum(ledger)
//
// which LedgerSum returns. Usage rollups are never pruned. The cut is
// rounded down to an hour boundary, so no hour is ever half pruned: usage
// totals over pruned time stay exact to the hour (see UsageTotals).
// Pruning deletes the oldest rows only, never the newest, so the ledger's
// row ids keep growing.

const (
	// pruneBatchRows bounds the rows deleted per transaction.
	pruneBatchRows = 5000
	// pruneYield is the pause between two batches, in which the ledger
	// writer gets the connection.
	pruneYield = 10 * time.Millisecond
	// pruneEvery is how often the background task looks for rows past
	// the retention.
	pruneEvery = 10 * time.Minute
)

// Pruning deletes a prefix of the ledger in id (commit) order: the rows
// before the first row created at or after the cut (pruneKeepSQL). So every
// account's remaining rows still chain from its carried-forward amount:
// balance_after(first remaining) = carried_forward + amount(first remaining).
// A row created before the cut but committed after a row past it (clocks
// and commit order differ by milliseconds) waits for a later run.
const (
	pruneKeepSQL = `SELECT COALESCE((SELECT id FROM ledger WHERE +created_at >= ?1 ORDER BY id LIMIT 1),
		(SELECT COALESCE(MAX(id), 0) + 1 FROM ledger))`
	// pruneSelect picks the next batch: ?1 the first id to keep, ?2 the
	// batch size. Both statements of a batch run in one transaction and
	// select the same rows.
	pruneSelect = `SELECT id FROM ledger WHERE id < ?1 ORDER BY id LIMIT ?2`
	// pruneCarrySQL carries a batch forward; {max} is the two-argument
	// maximum of the dialect.
	pruneCarrySQL = `INSERT INTO ledger_pruned (account_id, amount, rows, until)
	SELECT account_id, SUM(amount), COUNT(*), CAST(?3 AS BIGINT) FROM ledger WHERE id IN (` + pruneSelect + `) GROUP BY account_id
	ON CONFLICT (account_id) DO UPDATE SET amount = ledger_pruned.amount + excluded.amount,
		rows = ledger_pruned.rows + excluded.rows, until = {max}(ledger_pruned.until, excluded.until)`
	pruneDeleteSQL = `DELETE FROM ledger WHERE id IN (` + pruneSelect + `)`
)

// SetLedgerRetention changes the retention of raw ledger rows (see
// Options.LedgerRetention) and, if it is positive, prunes soon; 0 stops
// pruning. A config reload that shares the open store calls it.
func (s *Store) SetLedgerRetention(d time.Duration) {
	s.retention.Store(int64(max(d, 0)))
	select {
	case s.pruneWake <- struct{}{}:
	default:
	}
}

// pruneLoop prunes past the retention when the store opens, every
// pruneEvery and after SetLedgerRetention, until Close.
func (s *Store) pruneLoop() {
	defer close(s.pruneDone)
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		if d := time.Duration(s.retention.Load()); d > 0 {
			_, err := s.PruneLedger(context.Background(), s.now().Add(-d))
			if err != nil && !errors.Is(err, ErrClosed) {
				s.reportWriteError(err)
			}
		}
		select {
		case <-s.closed:
			return
		case <-t.C:
		case <-s.pruneWake:
		}
	}
}

// PruneLedger deletes the ledger rows created before the hour that holds
// before (before rounded down to an hour boundary; see pruneKeepSQL for
// rows committed out of time order), in batches of a few
// thousand rows per transaction with a pause for the ledger writer between
// them, and carries their amounts forward per account (see LedgerSum). It
// returns how many rows it deleted. Usage rollups, balances, LedgerSum and
// usage totals over whole hours are unchanged. The background task of
// Options.LedgerRetention calls it; call it directly to prune once. It stops
// between batches when ctx ends or the store closes.
func (s *Store) PruneLedger(ctx context.Context, before time.Time) (int64, error) {
	cut := hourFloor(unixMS(before))
	if s.isClosed() {
		return 0, ErrClosed
	}
	var keep int64
	if err := s.r.QueryRowContext(ctx, pruneKeepSQL, cut).Scan(&keep); err != nil {
		return 0, fmt.Errorf("pruning ledger rows before %s: %w", fromMS(cut).Format(time.RFC3339), err)
	}
	var total int64
	for {
		if s.isClosed() {
			return total, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, err := s.pruneBatch(ctx, keep, cut)
		total += n
		if err != nil {
			return total, fmt.Errorf("pruning ledger rows before %s: %w", fromMS(cut).Format(time.RFC3339), err)
		}
		if n < pruneBatchRows {
			return total, nil
		}
		t := time.NewTimer(pruneYield)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		case <-s.closed:
			t.Stop()
		}
	}
}

// pruneBatch carries forward and deletes one batch in one transaction.
func (s *Store) pruneBatch(ctx context.Context, keep, cut int64) (int64, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	ctx, cancel := s.backgroundWriteContext(ctx)
	defer cancel()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if s.cluster != nil {
		// Several instances prune the same ledger: one batch at a time,
		// or two would carry the same rows forward.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, pruneLock); err != nil {
			return 0, err
		}
	}
	maxFunc := "MAX"
	if s.dialect == dialectPostgres {
		maxFunc = "GREATEST"
	}
	carry := strings.Replace(pruneCarrySQL, "{max}", maxFunc, 1)
	if _, err := tx.ExecContext(ctx, carry, keep, pruneBatchRows, cut); err != nil {
		return 0, fmt.Errorf("carrying forward: %w", err)
	}
	res, err := tx.ExecContext(ctx, pruneDeleteSQL, keep, pruneBatchRows)
	if err != nil {
		return 0, fmt.Errorf("deleting: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil // nothing carried forward either: leave the cut unrecorded
	}
	return n, tx.Commit()
}

// PrunedUntil returns the retention cut: raw ledger rows created before it
// may have been pruned (their amounts are carried forward, their usage is
// in the rollups). Zero when nothing was ever pruned.
func (s *Store) PrunedUntil(ctx context.Context) (time.Time, error) {
	var cut sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT MAX(until) FROM ledger_pruned`).Scan(&cut); err != nil {
		return time.Time{}, fmt.Errorf("reading retention cut: %w", err)
	}
	if !cut.Valid {
		return time.Time{}, nil
	}
	return fromMS(cut.Int64), nil
}
