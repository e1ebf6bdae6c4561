package keystore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The tables and triggers that let several instances share one PostgreSQL
// database (cluster.go). They exist only in PostgreSQL and are versioned on
// their own (aigw_cluster_schema), applied by clusterMigrate under an
// advisory lock so that instances starting together apply them once.
//
// aigw_changes is the change feed: a row for every administrative change
// (a key created, updated, rotated or deleted: one row per key hash it made
// stale; an account created, renamed, disabled or enabled; a balance
// adjusted), appended by Store.logChange inside the change's own
// transaction, just before it commits. logChange first takes the advisory
// lock changeFeedLock, held to the commit, so change rows are numbered in
// commit order: polling seq > n never skips a row committed later than n.
// The lock is the last one such a transaction takes (it has made all its
// row changes), so it cannot be part of a deadlock.
//
// aigw_leases holds, per instance and account, the part of the balance that
// instance may spend without asking the database again (lease.go);
// expires_at lets the leases of an instance that died lapse.
//
// aigw_settle_batches records the id of every committed batch of usage
// rows, so that a batch whose COMMIT had an unknown outcome (the connection
// broke during it) is not applied twice on retry.
var clusterMigrations = []string{
	// 1: change feed, leases, settled batch ids.
	`
CREATE TABLE aigw_changes (
	seq        bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
	at         timestamptz NOT NULL DEFAULT now(),
	kind       text NOT NULL,            -- 'key' | 'account' | 'balance'
	account_id text NOT NULL DEFAULT '',
	key_id     text NOT NULL DEFAULT '', -- kind 'key'
	key_hash   bytea                     -- kind 'key': a hash whose cached state is stale
);
CREATE INDEX aigw_changes_at ON aigw_changes(at);

CREATE TABLE aigw_leases (
	instance_id text   NOT NULL,
	account_id  text   NOT NULL,
	amount      bigint NOT NULL,          -- nano-units reserved for the instance
	expires_at  timestamptz NOT NULL,
	PRIMARY KEY (account_id, instance_id)
);
CREATE INDEX aigw_leases_instance ON aigw_leases(instance_id);

CREATE TABLE aigw_settle_batches (
	id         text PRIMARY KEY,          -- instance id '/' batch number
	created_at timestamptz NOT NULL DEFAULT now()
);
`,
}

// changeFeedLock is the advisory lock that orders the change feed
// ("aigwchg1").
const (
	changeFeedLock int64 = 0x6169677763686731
	// clusterMigrateLock serialises clusterMigrate ("aigwclu1").
	clusterMigrateLock int64 = 0x61696777636c7531
	// pruneLock serialises the ledger pruning of the instances
	// ("aigwprn1").
	pruneLock int64 = 0x6169677770726e31
)

// clusterMigrate applies the cluster migrations the database lacks, each in
// its own transaction, under a session advisory lock; a database with a newer
// cluster schema is refused.
func clusterMigrate(ctx context.Context, pool *pgxpool.Pool) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrating cluster tables: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, clusterMigrateLock); err != nil {
		return fmt.Errorf("migrating cluster tables: %w", err)
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, clusterMigrateLock)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS aigw_cluster_schema (version integer NOT NULL)`); err != nil {
		return fmt.Errorf("migrating cluster tables: %w", err)
	}
	var v int
	if err := conn.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM aigw_cluster_schema`).Scan(&v); err != nil {
		return fmt.Errorf("reading cluster schema version: %w", err)
	}
	if v > len(clusterMigrations) {
		return fmt.Errorf("cluster schema version %d is newer than this build supports (%d)", v, len(clusterMigrations))
	}
	for i := v; i < len(clusterMigrations); i++ {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return fmt.Errorf("applying cluster migration %d: %w", i+1, err)
		}
		if _, err := tx.Exec(ctx, clusterMigrations[i]); err != nil {
			tx.Rollback(ctx)
			return fmt.Errorf("applying cluster migration %d: %w", i+1, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM aigw_cluster_schema; INSERT INTO aigw_cluster_schema VALUES (`+fmt.Sprint(i+1)+`)`); err != nil {
			tx.Rollback(ctx)
			return fmt.Errorf("recording cluster migration %d: %w", i+1, err)
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("committing cluster migration %d: %w", i+1, err)
		}
	}
	return nil
}
