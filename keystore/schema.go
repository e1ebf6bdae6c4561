package keystore

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations upgrade the schema one version at a time. migrations[i] takes a
// database from user_version i to i+1. Released entries are never edited:
// a change to the schema is a new entry at the end.
var migrations = []string{
	// 1: accounts, keys, ledger.
	`
CREATE TABLE accounts (
	id         TEXT    PRIMARY KEY,
	name       TEXT    NOT NULL,
	balance    INTEGER NOT NULL DEFAULT 0,  -- nano-units
	disabled   INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL             -- unix ms
) STRICT;

CREATE TABLE api_keys (
	id           TEXT    PRIMARY KEY,
	account_id   TEXT    NOT NULL REFERENCES accounts(id),
	name         TEXT    NOT NULL,
	hash         BLOB    NOT NULL UNIQUE,   -- sha256 of the plaintext key
	hint         TEXT    NOT NULL,          -- "sk-…wxyz"
	created_at   INTEGER NOT NULL,
	last_used_at INTEGER,
	expires_at   INTEGER,
	deleted_at   INTEGER,
	replaced_by  TEXT                       -- id of the key that rotated this one
) STRICT;
CREATE INDEX api_keys_account ON api_keys(account_id);

-- One row per change of balance. amount is the signed change (top-ups
-- positive, spend negative), so for every account
--   balance = sum(amount).
CREATE TABLE ledger (
	id                INTEGER PRIMARY KEY AUTOINCREMENT,
	created_at        INTEGER NOT NULL,
	account_id        TEXT    NOT NULL REFERENCES accounts(id),
	key_id            TEXT,
	kind              TEXT    NOT NULL,     -- 'adjustment' | 'usage'
	amount            INTEGER NOT NULL,
	balance_after     INTEGER NOT NULL,
	note              TEXT,
	model             TEXT,
	prompt_tokens     INTEGER,
	completion_tokens INTEGER,
	cached_tokens     INTEGER,
	reasoning_tokens  INTEGER,
	status            INTEGER,
	duration_ms       INTEGER,
	request_id        TEXT,
	estimated         INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX ledger_account_time ON ledger(account_id, created_at);
CREATE INDEX ledger_key_time ON ledger(key_id, created_at);
`,
	// 2: an index for ledger queries and usage totals by time across
	// accounts. (Queries by model use the account, key or time index and
	// filter: every index costs each settled request a B-tree insert.)
	`
CREATE INDEX ledger_time ON ledger(created_at);
`,
	// 3: key policies. A lineage is a key and its rotation successors: they
	// share the policy and the spend counter. allowed_models is a JSON
	// array of globs (NULL: any model); spend_limit is in nano-units per
	// limit_period ('total', 'day' or 'month'; NULL: no limit).
	`
ALTER TABLE api_keys ADD COLUMN lineage TEXT;
UPDATE api_keys SET lineage = id;
ALTER TABLE api_keys ADD COLUMN allowed_models TEXT;
ALTER TABLE api_keys ADD COLUMN spend_limit INTEGER;
ALTER TABLE api_keys ADD COLUMN limit_period TEXT;
CREATE INDEX api_keys_lineage ON api_keys(lineage);
`,
	// N (objects): provider-side objects created through the gateway (for
	// now stored Responses API responses), so that only the account that
	// created one may continue, read or delete it. input_tokens and
	// output_tokens are the usage of that response: the context the
	// provider re-reads when a request continues it. No foreign key: a row
	// must never be able to fail its batch (objects.go).
	`
CREATE TABLE provider_objects (
	id            TEXT    PRIMARY KEY,
	kind          TEXT    NOT NULL,          -- 'response'
	account_id    TEXT    NOT NULL,
	key_id        TEXT,
	created_at    INTEGER NOT NULL,          -- unix ms
	input_tokens  INTEGER NOT NULL DEFAULT 0,
	output_tokens INTEGER NOT NULL DEFAULT 0,
	deleted_at    INTEGER                    -- unix ms; NULL while it exists
) STRICT;
CREATE INDEX provider_objects_account ON provider_objects(account_id, created_at);
`,
}

// SchemaVersion is the schema version this build writes.
func SchemaVersion() int { return len(migrations) }

// migrate applies the migrations the database has not seen yet, each in its
// own transaction together with the bump of PRAGMA user_version. A database
// written by a newer release is refused rather than misread.
func migrate(ctx context.Context, db *sql.DB) error {
	var v int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this build supports (%d)", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("beginning migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("applying migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, i+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("recording migration %d: %w", i+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("committing migration %d: %w", i+1, err)
		}
	}
	return nil
}
