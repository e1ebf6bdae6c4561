package keystore

import (
	"context"
	"database/sql"
)

// What administrative transactions changed, for the multi-instance change
// feed. Every administrative transaction (accounts, keys, balance
// adjustments) calls Store.recordChange inside the transaction, just
// before it commits; with Store.logChange unset (a store alone on its
// database, always the case on SQLite) that does nothing.

// Kinds of change.
const (
	changeAccount = "account" // created, renamed, disabled or enabled
	changeBalance = "balance" // an adjustment committed
	changeKey     = "key"     // created, updated, rotated or deleted
)

// change is one administrative change, as recordChange reports it.
type change struct {
	kind      string
	accountID string
	keyID     string
	// keyHashes are the hashes of the keys whose cached state it made
	// stale (a new key's too: it may be cached as unknown).
	keyHashes [][32]byte
}

// recordChange passes c to the change log hook, if any, inside tx.
func (s *Store) recordChange(ctx context.Context, tx *sql.Tx, c change) error {
	if s.logChange == nil {
		return nil
	}
	return s.logChange(ctx, tx, c)
}
