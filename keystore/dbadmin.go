package keystore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
)

// Database maintenance without a Store: what `caddy ai-gateway db status`
// and `db migrate` do on a database (a file path or a PostgreSQL
// connection string, as Options.Path).

// DatabaseStatus describes a database's schema against this build.
type DatabaseStatus struct {
	// Backend is "sqlite" or "postgres".
	Backend string `json:"backend"`
	// Database names it, a PostgreSQL password redacted.
	Database string `json:"database"`
	// Exists is false for an SQLite file that does not exist yet (Open
	// would create it).
	Exists bool `json:"exists"`
	// SchemaVersion is the database's schema version (0: empty).
	SchemaVersion int `json:"schema_version"`
	// BuildVersion is the schema version this build writes.
	BuildVersion int `json:"build_version"`
	// Pending is the number of migrations Open (or Migrate) would apply;
	// 0 when the database is newer than the build (Open refuses it).
	Pending int `json:"pending_migrations"`
	// Newer is set when the database was written by a newer build.
	Newer bool `json:"newer_than_build"`
}

// Status reads the schema version of a database without changing it (an
// SQLite file that does not exist is not created) and compares it with
// this build's.
func Status(ctx context.Context, database string) (DatabaseStatus, error) {
	st := DatabaseStatus{Database: RedactDatabase(database), BuildVersion: SchemaVersion()}
	if database == "" {
		return st, fmt.Errorf("%w: empty database path", ErrInvalid)
	}
	if IsPostgres(database) {
		st.Backend = dialectPostgres.String()
		db, err := openPostgres(database)
		if err != nil {
			return st, fmt.Errorf("opening database %s: %w", st.Database, err)
		}
		defer db.Close()
		st.Exists = true
		if st.SchemaVersion, err = pgSchemaVersion(ctx, db); err != nil {
			return st, fmt.Errorf("database %s: %w", st.Database, redactErr(database, err))
		}
	} else {
		st.Backend = dialectSQLite.String()
		if _, err := os.Stat(database); errors.Is(err, os.ErrNotExist) {
			st.Pending = st.BuildVersion
			return st, nil
		} else if err != nil {
			return st, fmt.Errorf("database %s: %w", database, err)
		}
		st.Exists = true
		db, err := sql.Open("sqlite", "file:"+database+"?mode=ro&_pragma=busy_timeout(10000)")
		if err != nil {
			return st, fmt.Errorf("opening database %s: %w", database, err)
		}
		defer db.Close()
		if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&st.SchemaVersion); err != nil {
			return st, fmt.Errorf("reading schema version of %s: %w", database, err)
		}
	}
	if st.SchemaVersion > st.BuildVersion {
		st.Newer = true
	} else {
		st.Pending = st.BuildVersion - st.SchemaVersion
	}
	return st, nil
}

// Migrate applies the migrations a database lacks, as Open would, without
// opening a Store: before a rolling upgrade, so that the instances of the
// new build start on a migrated database. It returns the schema versions
// before and after. An SQLite file is created if missing and must not be
// open in a running Caddy (ErrLocked); a PostgreSQL database may be in use
// (migrations run under the advisory lock; expand-only migrations keep
// the old build working). A database newer than this build is refused.
func Migrate(ctx context.Context, database string, progress func(MigrationProgress)) (from, to int, err error) {
	st, err := Status(ctx, database)
	if err != nil {
		return 0, 0, err
	}
	if st.Newer {
		return st.SchemaVersion, st.SchemaVersion, fmt.Errorf("database %s: schema version %d is newer than this build supports (%d)",
			st.Database, st.SchemaVersion, st.BuildVersion)
	}
	if IsPostgres(database) {
		db, err := openPostgres(database)
		if err != nil {
			return st.SchemaVersion, st.SchemaVersion, err
		}
		defer db.Close()
		db.SetMaxOpenConns(1)
		if err := pgMigrate(ctx, db, progress); err != nil {
			return st.SchemaVersion, 0, fmt.Errorf("migrating database %s: %w", st.Database, redactErr(database, err))
		}
	} else {
		lock, err := lockDatabase(database)
		if err != nil {
			return st.SchemaVersion, st.SchemaVersion, err
		}
		defer lock.Close()
		if err := privateFiles(database); err != nil {
			return st.SchemaVersion, st.SchemaVersion, err
		}
		db, err := sql.Open("sqlite", dsn(database, true))
		if err != nil {
			return st.SchemaVersion, st.SchemaVersion, err
		}
		defer db.Close()
		db.SetMaxOpenConns(1)
		if err := migrateReporting(ctx, db, progress); err != nil {
			return st.SchemaVersion, 0, fmt.Errorf("migrating database %s: %w", database, err)
		}
	}
	after, err := Status(ctx, database)
	return st.SchemaVersion, after.SchemaVersion, err
}
