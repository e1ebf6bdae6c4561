package keystore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
)

// copyTables are the tables CopyToPostgres copies, in an order that
// satisfies their foreign keys (accounts before what refers to them), with
// the column that orders the copy. Every table of the schema is listed:
// TestCopyTablesCoverSchema fails when a migration adds one that is not.
var copyTables = []struct{ name, order string }{
	{"accounts", "id"},
	{"api_keys", "id"},
	{"ledger", "id"},
	{"ledger_pruned", "account_id"},
	{"usage_hourly", "hour, account_id, key_id, model"},
	{"usage_daily", "day, account_id, key_id, model"},
	{"provider_objects", "id"},
	{"audit", "id"},
	{"rate_counts", "instance, scope, span, bucket"}, // empty on SQLite (ratelimit_sync.go)
}

// CopyReport is what CopyToPostgres copied: rows per table, in copy order.
type CopyReport struct {
	Tables []CopiedTable `json:"tables"`
	// Accounts whose balance was checked against the sum of their ledger
	// (carried-forward amount included) on the copy.
	AccountsChecked int `json:"accounts_checked"`
}

// CopiedTable is one table of a CopyReport.
type CopiedTable struct {
	Name string `json:"name"`
	Rows int64  `json:"rows"`
}

// CopyToPostgres copies the SQLite store in the file from into the
// PostgreSQL database to, which must hold no gateway data (its tables are
// created if missing; a database with rows in any of them is refused):
// accounts, keys (hashes, lineages, policies: the same plaintexts keep
// working), the ledger with its ids and balance_after values, the carried-
// forward totals of pruned rows, the usage rollups, provider objects and
// the audit log.
//
// The source is opened like Open does (so it is migrated to this build's
// schema first, and no running Caddy may have it open: ErrLocked), and read
// in one read transaction. Everything is written in one PostgreSQL
// transaction, which commits only after checking, on the copy, that every
// table has as many rows as the source and that every account's balance
// equals its carried-forward amount plus the sum of its ledger rows, and
// equals the source's balance. progress, if set, is called as each table
// is copied.
func CopyToPostgres(ctx context.Context, from, to string, progress func(table string, rows int64)) (CopyReport, error) {
	var rep CopyReport
	if IsPostgres(from) {
		return rep, fmt.Errorf("%w: the source must be an SQLite file, not %s", ErrInvalid, RedactDatabase(from))
	}
	if !IsPostgres(to) {
		return rep, fmt.Errorf("%w: the target must be a PostgreSQL connection string (postgres://…), not %q", ErrInvalid, to)
	}
	if _, err := os.Stat(from); err != nil {
		return rep, fmt.Errorf("source database: %w", err)
	}
	if progress == nil {
		progress = func(string, int64) {}
	}
	src, err := Open(ctx, Options{Path: from})
	if err != nil {
		return rep, fmt.Errorf("opening the source: %w", err)
	}
	defer src.Close()

	target := RedactDatabase(to)
	if _, _, err := Migrate(ctx, to, nil); err != nil {
		return rep, err
	}
	conn, err := pgx.Connect(ctx, to)
	if err != nil {
		return rep, fmt.Errorf("connecting to %s: %w", target, redactErr(to, err))
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		return rep, fmt.Errorf("copying to %s: %w", target, err)
	}
	defer tx.Rollback(context.Background())
	for _, t := range copyTables {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+t.name).Scan(&n); err != nil {
			return rep, fmt.Errorf("checking that %s is empty: %w", target, err)
		}
		if n > 0 {
			return rep, fmt.Errorf("%w: the target %s is not empty (table %s has %d rows); copy into an empty database",
				ErrExists, target, t.name, n)
		}
	}
	// Nothing else writes to the locked source; one read transaction
	// makes it one snapshot anyway.
	stx, err := src.r.BeginTx(ctx, nil)
	if err != nil {
		return rep, fmt.Errorf("reading the source: %w", err)
	}
	defer stx.Rollback()
	for _, t := range copyTables {
		n, err := copyTable(ctx, stx, tx, t.name, t.order)
		if err != nil {
			return rep, fmt.Errorf("copying table %s: %w", t.name, err)
		}
		rep.Tables = append(rep.Tables, CopiedTable{Name: t.name, Rows: n})
		progress(t.name, n)
	}
	// New ledger and audit rows continue after the copied ids.
	for _, table := range []string{"ledger", "audit"} {
		if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence('`+table+`', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM `+table); err != nil {
			return rep, fmt.Errorf("advancing the %s id sequence: %w", table, err)
		}
	}
	// So do new audit entries.
	if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence('audit', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM audit`); err != nil {
		return rep, fmt.Errorf("advancing the audit id sequence: %w", err)
	}
	if rep.AccountsChecked, err = verifyCopy(ctx, stx, tx, rep); err != nil {
		return rep, err
	}
	if err := tx.Commit(ctx); err != nil {
		return rep, fmt.Errorf("committing the copy to %s: %w", target, err)
	}
	return rep, nil
}

// copyTable streams the rows of table from the source transaction into the
// target with COPY, and returns how many.
func copyTable(ctx context.Context, stx *sql.Tx, tx pgx.Tx, table, order string) (int64, error) {
	rows, err := stx.QueryContext(ctx, `SELECT * FROM `+table+` ORDER BY `+order)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, err
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if !rows.Next() {
			return nil, rows.Err()
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		return vals, nil
	})
	return tx.CopyFrom(ctx, pgx.Identifier{table}, cols, src)
}

// verifyCopy checks the copy inside its transaction: the same number of
// rows per table as the source, and for every account balance =
// carried-forward + sum(ledger) and the source's balance. It returns the
// number of accounts checked.
func verifyCopy(ctx context.Context, stx *sql.Tx, tx pgx.Tx, rep CopyReport) (int, error) {
	var errs []string
	for _, t := range rep.Tables {
		var srcN, dstN int64
		if err := stx.QueryRowContext(ctx, `SELECT count(*) FROM `+t.Name).Scan(&srcN); err != nil {
			return 0, err
		}
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+t.Name).Scan(&dstN); err != nil {
			return 0, err
		}
		if srcN != dstN || dstN != t.Rows {
			errs = append(errs, fmt.Sprintf("table %s: %d rows in the source, %d copied, %d in the target", t.Name, srcN, t.Rows, dstN))
		}
	}
	srcBal := map[string]int64{}
	rows, err := stx.QueryContext(ctx, `SELECT id, balance FROM accounts`)
	if err != nil {
		return 0, err
	}
	for rows.Next() {
		var id string
		var b int64
		if err := rows.Scan(&id, &b); err != nil {
			rows.Close()
			return 0, err
		}
		srcBal[id] = b
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	prow, err := tx.Query(ctx, `SELECT a.id, a.balance,
		COALESCE((SELECT amount FROM ledger_pruned p WHERE p.account_id = a.id), 0)
		+ COALESCE((SELECT SUM(amount) FROM ledger l WHERE l.account_id = a.id), 0)::bigint
		FROM accounts a ORDER BY a.id`)
	if err != nil {
		return 0, err
	}
	defer prow.Close()
	n := 0
	for prow.Next() {
		var id string
		var bal, sum int64
		if err := prow.Scan(&id, &bal, &sum); err != nil {
			return 0, err
		}
		n++
		if bal != sum {
			errs = append(errs, fmt.Sprintf("account %s: balance %d, ledger sum %d", id, bal, sum))
		}
		if want, ok := srcBal[id]; !ok || want != bal {
			errs = append(errs, fmt.Sprintf("account %s: balance %d in the copy, %d in the source", id, bal, want))
		}
	}
	if err := prow.Err(); err != nil {
		return 0, err
	}
	if n != len(srcBal) {
		errs = append(errs, fmt.Sprintf("%d accounts in the copy, %d in the source", n, len(srcBal)))
	}
	if len(errs) > 0 {
		if len(errs) > 10 {
			errs = append(errs[:10], fmt.Sprintf("and %d more", len(errs)-10))
		}
		return 0, fmt.Errorf("the copy does not check out, nothing was committed: %w", errors.New(strings.Join(errs, "; ")))
	}
	return n, nil
}
