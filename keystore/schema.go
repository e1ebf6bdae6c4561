package keystore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
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
	// 4: usage rollups and the carried-forward totals of pruned ledger rows.
	// usage_hourly and usage_daily sum the usage rows per UTC hour (day),
	// account, key and model; they are written in the transaction that
	// inserts the rows they sum, and usage totals read them instead of the
	// ledger (ledger.go). hour and day are the unix ms of the start of the
	// period; rows without a key or a model count under ''. Only
	// usage_daily has secondary indexes (by account and by key, for
	// all-time totals and key spend): a report reads at most the 23 hours
	// at either end of its range from usage_hourly, a short range of its
	// primary key, and every index costs the writer an upsert per group. ledger_pruned carries forward, per account, what retention
	// deleted from the ledger: balance = ledger_pruned.amount + sum(ledger).
	// The ledger's per-account and per-key indexes lose created_at: with
	// totals served by rollups they serve Ledger listings, newest first,
	// which (account_id) and (key_id) give in id order without sorting all
	// of an account's rows (ledger_account_time made SQLite sort them). The
	// partial hours at the edges of a report read ledger_time (at most an
	// hour of rows per end).
	`
-- phase: creating tables
CREATE TABLE usage_hourly (
	hour              INTEGER NOT NULL,
	account_id        TEXT    NOT NULL,
	key_id            TEXT    NOT NULL,
	model             TEXT    NOT NULL,
	requests          INTEGER NOT NULL,
	prompt_tokens     INTEGER NOT NULL,
	completion_tokens INTEGER NOT NULL,
	cached_tokens     INTEGER NOT NULL,
	reasoning_tokens  INTEGER NOT NULL,
	estimated         INTEGER NOT NULL,
	cost              INTEGER NOT NULL,     -- nano-units: -sum(amount)
	PRIMARY KEY (hour, account_id, key_id, model)
) STRICT, WITHOUT ROWID;
CREATE TABLE usage_daily (
	day               INTEGER NOT NULL,
	account_id        TEXT    NOT NULL,
	key_id            TEXT    NOT NULL,
	model             TEXT    NOT NULL,
	requests          INTEGER NOT NULL,
	prompt_tokens     INTEGER NOT NULL,
	completion_tokens INTEGER NOT NULL,
	cached_tokens     INTEGER NOT NULL,
	reasoning_tokens  INTEGER NOT NULL,
	estimated         INTEGER NOT NULL,
	cost              INTEGER NOT NULL,
	PRIMARY KEY (day, account_id, key_id, model)
) STRICT, WITHOUT ROWID;
CREATE TABLE ledger_pruned (
	account_id TEXT    PRIMARY KEY REFERENCES accounts(id),
	amount     INTEGER NOT NULL,            -- sum of the pruned rows' amounts
	rows       INTEGER NOT NULL,            -- how many rows were pruned
	until      INTEGER NOT NULL             -- unix ms, an hour boundary: rows before it are pruned
) STRICT;
-- phase: building usage rollups from the ledger
INSERT INTO usage_hourly (hour, account_id, key_id, model, requests, prompt_tokens, completion_tokens,
	cached_tokens, reasoning_tokens, estimated, cost)
SELECT (created_at / 3600000 - (created_at < 0 AND created_at % 3600000 != 0)) * 3600000 AS h,
	account_id, COALESCE(key_id, '') AS k, COALESCE(model, '') AS m, COUNT(*),
	COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cached_tokens), 0),
	COALESCE(SUM(reasoning_tokens), 0), COALESCE(SUM(estimated), 0), -COALESCE(SUM(amount), 0)
FROM ledger WHERE kind = 'usage'
GROUP BY h, account_id, k, m
ORDER BY h, account_id, k, m;
-- phase: summing the hourly rollups by day
INSERT INTO usage_daily (day, account_id, key_id, model, requests, prompt_tokens, completion_tokens,
	cached_tokens, reasoning_tokens, estimated, cost)
SELECT (hour / 86400000 - (hour < 0 AND hour % 86400000 != 0)) * 86400000 AS d,
	account_id, key_id, model, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens),
	SUM(reasoning_tokens), SUM(estimated), SUM(cost)
FROM usage_hourly
GROUP BY d, account_id, key_id, model
ORDER BY d, account_id, key_id, model;
-- phase: indexing usage rollups
CREATE INDEX usage_daily_account ON usage_daily(account_id, day);
CREATE INDEX usage_daily_key ON usage_daily(key_id, day);
-- phase: re-indexing the ledger
DROP INDEX ledger_account_time;
DROP INDEX ledger_key_time;
CREATE INDEX ledger_account ON ledger(account_id);
CREATE INDEX ledger_key ON ledger(key_id) WHERE key_id IS NOT NULL;
`,
	// 5: provider-side objects created through the gateway (for
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
	// 6: a key can be disabled (and enabled again) without deleting it,
	// by the account holder or by an operator (disabled_by_admin: then
	// only an operator may enable it again); the admin_* columns hold the
	// policy an operator set on a key lineage, the ceiling within which
	// its account holder may narrow the key's own policy (policies set
	// before this version were set by operators: they become the ceiling).
	// audit records every change of accounts, balances and keys, in the
	// transaction of the change; detail is a JSON object.
	`
ALTER TABLE api_keys ADD COLUMN disabled_at INTEGER;
ALTER TABLE api_keys ADD COLUMN disabled_by_admin INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN admin_models TEXT;
ALTER TABLE api_keys ADD COLUMN admin_spend_limit INTEGER;
ALTER TABLE api_keys ADD COLUMN admin_limit_period TEXT;
UPDATE api_keys SET admin_models = allowed_models, admin_spend_limit = spend_limit, admin_limit_period = limit_period;
CREATE TABLE audit (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	created_at INTEGER NOT NULL,            -- unix ms
	actor      TEXT    NOT NULL,            -- "dashboard:alice", "admin API 127.0.0.1:5555", "cli (…)"
	account_id TEXT,
	target     TEXT    NOT NULL,            -- key id or account id
	action     TEXT    NOT NULL,            -- "key.rotate", "balance.topup", …
	detail     TEXT    NOT NULL             -- JSON object: what changed
) STRICT;
CREATE INDEX audit_account ON audit(account_id);
CREATE INDEX audit_time ON audit(created_at);
`,
	// 7: rate
	// limits of key lineages (the same on every live key of a lineage) and
	// accounts, a JSON object {"rpm","tpm","concurrency","rpd","tpd"}
	// (NULL: none). rate_counts shares the counts of several stores on
	// one PostgreSQL database (ratelimit_sync.go; unused on SQLite): per
	// instance, scope ('k:<lineage>', 'a:<account>', 'm:<model>') and
	// bucket, the requests and tokens counted ('s': a second, bucket in
	// unix s; 'd': a UTC day, bucket in unix ms) or in flight ('c').
	`
ALTER TABLE api_keys ADD COLUMN rate_limits TEXT;
ALTER TABLE accounts ADD COLUMN rate_limits TEXT;
CREATE TABLE rate_counts (
	instance   TEXT    NOT NULL,
	scope      TEXT    NOT NULL,
	span       TEXT    NOT NULL,
	bucket     INTEGER NOT NULL,
	requests   INTEGER NOT NULL,
	tokens     INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,            -- unix ms
	PRIMARY KEY (instance, scope, span, bucket)
) STRICT, WITHOUT ROWID;
`,
}

// SchemaVersion is the schema version this build writes.
func SchemaVersion() int { return len(migrations) }

// MigrationProgress reports a schema migration as it runs (see
// Options.OnMigrationProgress). A migration that rewrites a large table
// (version 4 sums the whole ledger into rollups) can take minutes on a big
// file; it runs in phases, each reported when it starts, and once more when
// the migration is committed.
type MigrationProgress struct {
	// Version is the schema version the migration moves to.
	Version int
	// Phase describes what runs now; "done" once committed.
	Phase string
	// Step counts the phases from 1 to Steps; Step > Steps once done.
	Step, Steps int
	// LedgerRows is the number of ledger rows at the start of the
	// migration, the measure of how long it may take.
	LedgerRows int64
	// Elapsed is the time since the migration started.
	Elapsed time.Duration
}

// phasePrefix starts a line that names the next phase of a migration.
const phasePrefix = "-- phase: "

// migrationPhases cuts a migration at its phase lines; a migration without
// them is one phase.
func migrationPhases(script string) (names, scripts []string) {
	for i, part := range strings.Split("\n"+script, "\n"+phasePrefix) {
		name := "migrating"
		if i > 0 { // the part follows a phase line: its first line is the name
			name, part, _ = strings.Cut(part, "\n")
		}
		if strings.TrimSpace(part) == "" {
			continue
		}
		names = append(names, name)
		scripts = append(scripts, part)
	}
	return names, scripts
}

// migrate applies the migrations the database has not seen yet, each in its
// own transaction together with the bump of PRAGMA user_version. A database
// written by a newer release is refused rather than misread.
func migrate(ctx context.Context, db *sql.DB) error { return migrateReporting(ctx, db, nil) }

// migrateReporting is migrate telling progress, if not nil, about each phase.
func migrateReporting(ctx context.Context, db *sql.DB, progress func(MigrationProgress)) error {
	var v int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this build supports (%d)", v, len(migrations))
	}
	if progress == nil {
		progress = func(MigrationProgress) {}
	}
	for i := v; i < len(migrations); i++ {
		if err := migrateOne(ctx, db, i, progress); err != nil {
			return err
		}
	}
	return nil
}

// migrateOne applies migrations[i] in one transaction.
func migrateOne(ctx context.Context, db *sql.DB, i int, progress func(MigrationProgress)) error {
	start := time.Now()
	names, scripts := migrationPhases(migrations[i])
	p := MigrationProgress{Version: i + 1, Steps: len(names)}
	if i > 0 { // version 0 has no ledger yet
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM ledger`).Scan(&p.LedgerRows); err != nil {
			return fmt.Errorf("counting ledger rows before migration %d: %w", i+1, err)
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning migration %d: %w", i+1, err)
	}
	defer tx.Rollback()
	for j, script := range scripts {
		p.Phase, p.Step, p.Elapsed = names[j], j+1, time.Since(start)
		progress(p)
		if _, err := tx.ExecContext(ctx, script); err != nil {
			return fmt.Errorf("applying migration %d (%s): %w", i+1, names[j], err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, i+1)); err != nil {
		return fmt.Errorf("recording migration %d: %w", i+1, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing migration %d: %w", i+1, err)
	}
	p.Phase, p.Step, p.Elapsed = "done", len(names)+1, time.Since(start)
	progress(p)
	return nil
}
