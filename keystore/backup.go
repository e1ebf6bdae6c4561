package keystore

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// ErrBackupPostgres is Backup's error on a PostgreSQL store.
var ErrBackupPostgres = errors.New("the database is PostgreSQL: back it up with pg_dump (e.g. pg_dump --format=custom), not with the gateway's backup")

// Backup writes a consistent copy of the database to dest while the store
// keeps serving: charges settled before the call are committed first (as by
// Flush) so the copy holds them, and the copy is taken in one read
// transaction (VACUUM INTO), so it is a database as of one commit, which
// Open can use as it is. A PostgreSQL store has no file to copy: Backup
// fails with ErrBackupPostgres (wrapping ErrInvalid), and pg_dump is the
// tool. dest must not exist; it is created with mode 0600,
// like the database. A failed backup removes what it wrote.
func (s *Store) Backup(ctx context.Context, dest string) error {
	if s.isClosed() {
		return ErrClosed
	}
	if s.dialect == dialectPostgres {
		return fmt.Errorf("%w: %w", ErrInvalid, ErrBackupPostgres)
	}
	if err := s.Flush(ctx); err != nil {
		return fmt.Errorf("backing up database: %w", err)
	}
	// Created here, empty, so that it is private from the start and an
	// existing file is never overwritten (VACUUM INTO accepts an empty
	// file).
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backing up database: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(dest)
		return fmt.Errorf("backing up database: %w", err)
	}
	if _, err := s.r.ExecContext(ctx, `VACUUM INTO ?`, dest); err != nil {
		os.Remove(dest)
		return fmt.Errorf("backing up database to %s: %w", dest, err)
	}
	return nil
}
