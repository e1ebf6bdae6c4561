package keystore

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// LedgerFilter selects ledger rows for Ledger and UsageTotals. Zero-valued
// fields do not filter.
type LedgerFilter struct {
	// AccountID, KeyID, Model and Kind match the row's field exactly.
	AccountID, KeyID, Model, Kind string
	// Status selects by the HTTP status a request ended with: "ok" (2xx),
	// "error" (any other known status), "4xx", "5xx", or one status
	// ("429"). Rows without a status (adjustments) match none of them.
	Status string
	// Since (inclusive) and Until (exclusive) bound created_at; a zero time
	// leaves that end open.
	Since, Until time.Time
	// Limit is the maximum number of rows Ledger returns: 0 means 100,
	// more than 10000 means 10000. UsageTotals ignores it.
	Limit int
	// BeforeID keeps only rows with id < BeforeID, for paging: pass the
	// smallest id of the previous page.
	BeforeID int64
}

// Limits of LedgerFilter.Limit.
const (
	defaultLedgerLimit = 100
	maxLedgerLimit     = 10_000
)

// where validates f and renders it as a SQL condition with its arguments.
func (f *LedgerFilter) where() (string, []any, error) { return f.whereHinted("", "") }

// whereHinted is where with a prefix for the columns account_id and key_id
// and one for created_at: "+" keeps SQLite from using their indexes (see
// usageQueryBuilder.raw).
func (f *LedgerFilter) whereHinted(byWho, byTime string) (string, []any, error) {
	switch f.Kind {
	case "", KindAdjustment, KindUsage:
	default:
		return "", nil, fmt.Errorf("%w: ledger kind %q must be %q or %q", ErrInvalid, f.Kind, KindAdjustment, KindUsage)
	}
	if f.Limit < 0 {
		return "", nil, fmt.Errorf("%w: limit must not be negative", ErrInvalid)
	}
	if f.BeforeID < 0 {
		return "", nil, fmt.Errorf("%w: before id must not be negative", ErrInvalid)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return "", nil, fmt.Errorf("%w: until %s is before since %s", ErrInvalid,
			f.Until.UTC().Format(time.RFC3339), f.Since.UTC().Format(time.RFC3339))
	}
	status, statusArgs, err := statusCondition(f.Status)
	if err != nil {
		return "", nil, err
	}
	conds := []string{"1 = 1"}
	var args []any
	add := func(cond string, arg any) {
		conds = append(conds, cond)
		args = append(args, arg)
	}
	if status != "" {
		conds = append(conds, status)
		args = append(args, statusArgs...)
	}
	if f.AccountID != "" {
		add(byWho+"account_id = ?", f.AccountID)
	}
	if f.KeyID != "" {
		add(byWho+"key_id = ?", f.KeyID)
	}
	if f.Model != "" {
		add("model = ?", f.Model)
	}
	if f.Kind != "" {
		add("kind = ?", f.Kind)
	}
	if !f.Since.IsZero() {
		add(byTime+"created_at >= ?", unixMS(f.Since))
	}
	if !f.Until.IsZero() {
		add(byTime+"created_at < ?", unixMS(f.Until))
	}
	if f.BeforeID > 0 {
		add("id < ?", f.BeforeID)
	}
	return strings.Join(conds, " AND "), args, nil
}

// statusCondition renders LedgerFilter.Status as a SQL condition.
func statusCondition(st string) (string, []any, error) {
	switch st {
	case "":
		return "", nil, nil
	case "ok":
		return "status >= 200 AND status < 300", nil, nil
	case "error":
		return "status > 0 AND (status < 200 OR status >= 300)", nil, nil
	case "4xx":
		return "status >= 400 AND status < 500", nil, nil
	case "5xx":
		return "status >= 500 AND status < 600", nil, nil
	}
	if n, err := strconv.Atoi(st); err == nil && n >= 100 && n <= 599 && len(st) == 3 {
		return "status = ?", []any{n}, nil
	}
	return "", nil, fmt.Errorf("%w: status %q must be ok, error, 4xx, 5xx or an HTTP status such as 429", ErrInvalid, st)
}

const ledgerColumns = `id, created_at, account_id, key_id, kind, amount, balance_after, note,
	model, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, status, duration_ms, request_id, estimated`

func scanLedgerEntry(row interface{ Scan(...any) error }) (LedgerEntry, error) {
	var (
		e                                  LedgerEntry
		created                            int64
		keyID, note, model, requestID      sql.NullString
		prompt, completion, cached, reason sql.NullInt64
		status, duration                   sql.NullInt64
		estimated                          int64
	)
	if err := row.Scan(&e.ID, &created, &e.AccountID, &keyID, &e.Kind, &e.Amount, &e.BalanceAfter, &note,
		&model, &prompt, &completion, &cached, &reason, &status, &duration, &requestID, &estimated); err != nil {
		return LedgerEntry{}, err
	}
	e.CreatedAt = fromMS(created)
	e.KeyID, e.Note, e.Model, e.RequestID = keyID.String, note.String, model.String, requestID.String
	e.PromptTokens, e.CompletionTokens = prompt.Int64, completion.Int64
	e.CachedTokens, e.ReasoningTokens = cached.Int64, reason.Int64
	e.Status = int(status.Int64)
	e.DurationMS = duration.Int64
	e.Estimated = estimated != 0
	return e, nil
}

// RowLimit is the number of rows Ledger returns at most for f: Limit, or
// the default of 100 when it is 0, capped at 10000. A page as long as this
// may have older rows after it (page on with BeforeID).
func (f LedgerFilter) RowLimit() int {
	switch {
	case f.Limit <= 0:
		return defaultLedgerLimit
	case f.Limit > maxLedgerLimit:
		return maxLedgerLimit
	}
	return f.Limit
}

// Ledger returns the ledger rows matching f, newest (highest id, i.e. latest
// committed) first. It first waits for Flush, so the result includes every
// charge settled before the call. Fails with ErrInvalid for a malformed
// filter and ErrClosed on a closed store.
func (s *Store) Ledger(ctx context.Context, f LedgerFilter) ([]LedgerEntry, error) {
	where, args, err := f.where()
	if err != nil {
		return nil, err
	}
	limit := f.RowLimit()
	if s.isClosed() {
		return nil, ErrClosed
	}
	if err := s.Flush(ctx); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx,
		`SELECT `+ledgerColumns+` FROM ledger WHERE `+where+` ORDER BY id DESC LIMIT ?`,
		append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("reading ledger: %w", err)
	}
	defer rows.Close()
	out := []LedgerEntry{}
	for rows.Next() {
		e, err := scanLedgerEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("reading ledger: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading ledger: %w", err)
	}
	return out, nil
}

// UsageTotal sums the usage rows of one group.
type UsageTotal struct {
	// Group is the model, day (UTC, YYYY-MM-DD), key id or account id the
	// row is about; empty for the overall total and for rows without one
	// (e.g. no key).
	Group string `json:"group"`
	// Requests is the number of usage rows.
	Requests int64 `json:"requests"`
	// Token sums.
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	CachedTokens     int64 `json:"cached_tokens"`
	ReasoningTokens  int64 `json:"reasoning_tokens"`
	// Cost charged, in nano-units, positive (minus the sum of amounts).
	Cost int64 `json:"cost_nano"`
	// Estimated is the number of rows charged by estimate.
	Estimated int64 `json:"estimated"`
}

// usageGroup returns the SQL expressions of UsageTotals' groupBy over raw
// ledger rows and over a rollup table, where {t} stands for its time column.
func usageGroup(d dialect, groupBy string) (raw, rollup string, ok bool) {
	if groupBy == "day" && d == dialectPostgres {
		return `to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')`,
			`to_char(to_timestamp({t} / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')`, true
	}
	switch groupBy {
	case "":
		return `''`, `''`, true
	case "model":
		return `COALESCE(model, '')`, `model`, true
	case "day":
		return `strftime('%Y-%m-%d', created_at / 1000, 'unixepoch')`, `strftime('%Y-%m-%d', {t} / 1000, 'unixepoch')`, true
	case "key":
		return `COALESCE(key_id, '')`, `key_id`, true
	case "account":
		return `account_id`, `account_id`, true
	}
	return "", "", false
}

// UsageTotals sums the usage rows (kind "usage") matching f, grouped by
// groupBy: "model", "day" (UTC date YYYY-MM-DD), "key", "account", or "" for
// one overall total (always one element, zero when nothing matched). Groups
// come in ascending order of Group. It first waits for Flush, so totals
// include every charge settled before the call. Fails with ErrInvalid for
// another groupBy, a filter kind other than "" or "usage", or a malformed
// filter, and with ErrClosed on a closed store.
//
// The totals come from the daily usage rollups for the whole UTC days
// between Since and Until, the hourly rollups for the whole hours left at
// either end, and the raw ledger rows of the partial hours left at the ends,
// so they are exact for any Since and Until. Where retention
// has pruned the raw rows (before the cut reported by PrunedUntil), a Since
// or Until off an hour boundary counts from the start of its hour: totals
// over pruned time are exact to the hour. With BeforeID, the rows with a
// larger id are read raw and taken off.
func (s *Store) UsageTotals(ctx context.Context, f LedgerFilter, groupBy string) ([]UsageTotal, error) {
	rawGroup, rollGroup, ok := usageGroup(s.dialect, groupBy)
	if !ok {
		return nil, fmt.Errorf("%w: group by %q must be one of model, day, key, account or empty", ErrInvalid, groupBy)
	}
	if f.Kind != "" && f.Kind != KindUsage {
		return nil, fmt.Errorf("%w: usage totals cover only %q rows, not %q", ErrInvalid, KindUsage, f.Kind)
	}
	f.Kind = KindUsage
	if _, _, err := f.where(); err != nil {
		return nil, err
	}
	if s.isClosed() {
		return nil, ErrClosed
	}
	if err := s.Flush(ctx); err != nil {
		return nil, err
	}
	// One read transaction: the cut of retention and the sums are of the
	// same snapshot.
	opts := &sql.TxOptions{ReadOnly: true}
	if s.dialect == dialectPostgres {
		// SQLite's read transactions see one snapshot; PostgreSQL's
		// default (read committed) gives each statement its own.
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := s.r.BeginTx(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("summing usage: %w", err)
	}
	defer tx.Rollback()
	var cut sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(until) FROM ledger_pruned`).Scan(&cut); err != nil {
		return nil, fmt.Errorf("summing usage: %w", err)
	}
	q, args := usageQuery(s.dialect, f, groupBy != "", rawGroup, rollGroup, cut)
	if f.Status != "" {
		// The rollups do not keep the status: sum the rows still in the
		// ledger.
		q, args = rawUsageQuery(s.dialect, f, groupBy != "", rawGroup)
	}
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("summing usage: %w", err)
	}
	defer rows.Close()
	out := []UsageTotal{}
	for rows.Next() {
		var t UsageTotal
		if err := rows.Scan(&t.Group, &t.Requests, &t.PromptTokens, &t.CompletionTokens,
			&t.CachedTokens, &t.ReasoningTokens, &t.Cost, &t.Estimated); err != nil {
			return nil, fmt.Errorf("summing usage: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("summing usage: %w", err)
	}
	return out, nil
}

// usageQuery builds UsageTotals' query for a validated filter of usage rows:
// a UNION ALL of parts, each summed by group, summed again by group
// outside. The range [since, until) is covered by the whole days inside it
// (usage_daily), the whole hours left at either end (usage_hourly), and the
// raw rows of the partial hours left at the ends (ledger); with BeforeID,
// the raw rows at or after it are taken off. cut, if valid, is the hour
// before which raw rows may be pruned: an edge before it is rounded down to
// its hour.
func usageQuery(d dialect, f LedgerFilter, grouped bool, rawGroup, rollGroup string, cut sql.NullInt64) (string, []any) {
	var since, until *int64 // the range, in ms; nil: open
	if !f.Since.IsZero() {
		v := unixMS(f.Since)
		if cut.Valid && v < cut.Int64 {
			v = hourFloor(v) // its partial hour was pruned: count the whole hour
		}
		since = &v
	}
	if !f.Until.IsZero() {
		v := unixMS(f.Until)
		if cut.Valid && v < cut.Int64 {
			v = hourFloor(v)
		}
		until = &v
	}
	b := usageQueryBuilder{f: f, rawGroup: rawGroup, rollGroup: rollGroup, dialect: d}
	if grouped {
		b.groupBy = ` GROUP BY grp`
	}
	b.cover(since, until, 0)
	if f.BeforeID > 0 {
		b.raw(since, until, " AND id >= ?", []any{f.BeforeID}, "-1*", "+")
	}
	q := `SELECT grp, COALESCE(SUM(n), 0), COALESCE(SUM(p), 0), COALESCE(SUM(c), 0), COALESCE(SUM(ca), 0),
		COALESCE(SUM(r), 0), COALESCE(SUM(cost), 0), COALESCE(SUM(e), 0)
		FROM (` + strings.Join(b.parts, "\n\tUNION ALL\n") + `) AS parts`
	if grouped {
		// Byte order, as SQLite sorts text, whatever the collation of a
		// PostgreSQL database.
		order := `grp`
		if d == dialectPostgres {
			order = `grp COLLATE "C"`
		}
		q += ` GROUP BY grp HAVING SUM(n) != 0 ORDER BY ` + order
	} else {
		q = strings.Replace(q, `SELECT grp,`, `SELECT '',`, 1)
	}
	return q, b.args
}

// rawUsageQuery sums the raw ledger rows matching a validated filter,
// grouped by rawGroup if grouped.
func rawUsageQuery(d dialect, f LedgerFilter, grouped bool, rawGroup string) (string, []any) {
	where, args, _ := f.where()
	q := `SELECT ` + rawGroup + ` AS grp, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),
		COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(reasoning_tokens), 0), -COALESCE(SUM(amount), 0), COALESCE(SUM(estimated), 0)
		FROM ledger WHERE ` + where
	if grouped {
		order := `grp`
		if d == dialectPostgres {
			order = `(` + rawGroup + `) COLLATE "C"` // byte order, as SQLite sorts
		}
		q += ` GROUP BY 1 ORDER BY ` + order
	} else {
		q = strings.Replace(q, `SELECT `+rawGroup+` AS grp,`, `SELECT '',`, 1)
	}
	return q, args
}

// usageQueryBuilder collects the parts of usageQuery and their arguments.
type usageQueryBuilder struct {
	f                   LedgerFilter
	rawGroup, rollGroup string
	groupBy             string
	dialect             dialect
	parts               []string
	args                []any
}

// cover adds parts summing [lo, hi) (nil: open) from rollupLevels[level]
// and finer levels, down to raw rows.
func (b *usageQueryBuilder) cover(lo, hi *int64, level int) {
	if level == len(rollupLevels) {
		b.raw(lo, hi, "", nil, "", "")
		return
	}
	l := rollupLevels[level]
	a, z := lo, hi // the whole periods of the level
	if lo != nil {
		v := ceilTo(*lo, l.unit)
		a = &v
	}
	if hi != nil {
		v := floorTo(*hi, l.unit)
		z = &v
	}
	if a != nil && z != nil && *a >= *z {
		b.cover(lo, hi, level+1) // no whole period inside
		return
	}
	b.rollup(l, a, z)
	if lo != nil && *lo < *a {
		b.cover(lo, a, level+1)
	}
	if hi != nil && *z < *hi {
		b.cover(z, hi, level+1)
	}
}

// rollup adds the part summing level l's rows of [lo, hi).
func (b *usageQueryBuilder) rollup(l rollupLevel, lo, hi *int64) {
	conds := []string{"1 = 1"}
	add := func(cond string, arg any) {
		conds = append(conds, cond)
		b.args = append(b.args, arg)
	}
	if b.f.AccountID != "" {
		add("account_id = ?", b.f.AccountID)
	}
	if b.f.KeyID != "" {
		add("key_id = ?", b.f.KeyID)
	}
	if b.f.Model != "" {
		add("model = ?", b.f.Model)
	}
	if lo != nil {
		add(l.col+" >= ?", *lo)
	}
	if hi != nil {
		add(l.col+" < ?", *hi)
	}
	b.parts = append(b.parts, `SELECT `+strings.ReplaceAll(b.rollGroup, "{t}", l.col)+` AS grp, SUM(requests) AS n,
		SUM(prompt_tokens) AS p, SUM(completion_tokens) AS c, SUM(cached_tokens) AS ca, SUM(reasoning_tokens) AS r,
		SUM(cost) AS cost, SUM(estimated) AS e
		FROM `+l.table+` WHERE `+strings.Join(conds, " AND ")+b.groupBy)
}

// raw adds the part summing the raw usage rows of [lo, hi) that match the
// filter and extra, multiplied by sign ("" or "-1*"). The account and key
// conditions are kept off their indexes, which would read all of an
// account's or key's rows: the partial hours at the edges read ledger_time
// (less than an hour of rows), and with byTime "+" (for BeforeID) the rows
// are found by id.
func (b *usageQueryBuilder) raw(lo, hi *int64, extra string, extraArgs []any, sign, byTime string) {
	g := b.f
	g.BeforeID = 0
	g.Since, g.Until = time.Time{}, time.Time{}
	if lo != nil {
		g.Since = fromMS(*lo)
	}
	if hi != nil {
		g.Until = fromMS(*hi)
	}
	byWho := "+"
	if b.dialect == dialectPostgres {
		// PostgreSQL has no unary + on text (and plans without hints).
		byWho, byTime = "", ""
	}
	where, wargs, _ := g.whereHinted(byWho, byTime) // validated by UsageTotals
	b.parts = append(b.parts, `SELECT `+b.rawGroup+` AS grp, `+sign+`COUNT(*) AS n, `+sign+`COALESCE(SUM(prompt_tokens), 0) AS p,
		`+sign+`COALESCE(SUM(completion_tokens), 0) AS c, `+sign+`COALESCE(SUM(cached_tokens), 0) AS ca,
		`+sign+`COALESCE(SUM(reasoning_tokens), 0) AS r, `+sign+`(-COALESCE(SUM(amount), 0)) AS cost,
		`+sign+`COALESCE(SUM(estimated), 0) AS e
		FROM ledger WHERE `+where+extra+b.groupBy)
	b.args = append(append(b.args, wargs...), extraArgs...)
}
