package keystore

import (
	"context"
	"fmt"
)

// exportPageSize is how many rows one query of ExportLedger reads.
const exportPageSize = 1000

// ExportLedger calls fn with every ledger row matching f, oldest (lowest id)
// first, and stops at the first error fn returns, returning it. f.Limit is
// ignored: every matching row is exported.
//
// The export covers the rows committed when it starts: it first waits for
// Flush, notes the highest row id, and never goes past it, so that an
// export of a busy gateway ends. It reads the rows in pages of a
// thousand by keyset (id > last id seen), each page its own short query:
// no read transaction stays open for the whole export (a long one would
// keep the WAL from being checkpointed) and memory stays flat whatever the
// number of rows. Rows deleted while the export runs (retention) may or may
// not be in it; a row is never repeated.
//
// Fails with ErrInvalid for a malformed filter and ErrClosed on a closed
// store.
func (s *Store) ExportLedger(ctx context.Context, f LedgerFilter, fn func(LedgerEntry) error) error {
	return s.exportLedger(ctx, f, exportPageSize, fn, nil)
}

// exportLedger is ExportLedger with the page size given; onPage, if set,
// is called with the number of rows of each page read (tests).
func (s *Store) exportLedger(ctx context.Context, f LedgerFilter, pageSize int, fn func(LedgerEntry) error, onPage func(int)) error {
	f.Limit = 0
	where, args, err := f.where()
	if err != nil {
		return err
	}
	if s.isClosed() {
		return ErrClosed
	}
	if err := s.Flush(ctx); err != nil {
		return err
	}
	var maxID int64
	if err := s.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM ledger`).Scan(&maxID); err != nil {
		return fmt.Errorf("exporting ledger: %w", err)
	}
	q := `SELECT ` + ledgerColumns + ` FROM ledger WHERE ` + where + ` AND id > ? AND id <= ? ORDER BY id LIMIT ?`
	var last int64
	page := make([]LedgerEntry, 0, pageSize)
	for {
		page = page[:0]
		if err := s.readPage(ctx, q, append(args, last, maxID, pageSize), &page); err != nil {
			return err
		}
		if onPage != nil {
			onPage(len(page))
		}
		// The page's query is over before fn runs: a slow reader of the
		// export holds no database connection.
		for _, e := range page {
			if err := fn(e); err != nil {
				return err
			}
			last = e.ID
		}
		if len(page) < pageSize {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// readPage appends the rows of one page query to page.
func (s *Store) readPage(ctx context.Context, q string, args []any, page *[]LedgerEntry) error {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("exporting ledger: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanLedgerEntry(rows)
		if err != nil {
			return fmt.Errorf("exporting ledger: %w", err)
		}
		*page = append(*page, e)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("exporting ledger: %w", err)
	}
	return nil
}
