package keystore

import (
	"context"
	"fmt"
	"os"
)

// Backup writes a consistent copy of the database to dest while the store
// keeps serving: charges settled before the call are committed first (as by
// Flush) so the copy holds them, and the copy is taken in one read
// transaction (VACUUM INTO), so it is a database as of one commit, which
// Open can use as it is. dest must not exist; it is created with mode 0600,
// like the database. A failed backup removes what it wrote.
func (s *Store) Backup(ctx context.Context, dest string) error {
	if s.isClosed() {
		return ErrClosed
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
