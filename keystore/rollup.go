package keystore

import (
	"context"
	"database/sql"
	"strings"
)

// Usage rollups. usage_hourly and usage_daily (schema version 4) hold, per
// UTC hour (day), account, key and model, the sums of the usage rows of the ledger: the
// number of rows, the token counts, the estimated rows and the cost
// (-sum(amount)). The ledger writer updates it in the transaction that
// inserts the rows (commitUsage), one upsert per distinct group of the
// batch, so that after every commit, for every group and hour,
//
//	rollup = sum over the usage rows of the ledger, pruned rows included.
//
// Usage totals read the rollups of the whole hours of a report and the raw
// rows of the partial hours at its edges (ledger.go); retention (prune.go)
// deletes raw rows but never rollups.

// hourMS and dayMS are an hour and a day in the milliseconds of created_at.
const (
	hourMS = 3_600_000
	dayMS  = 24 * hourMS
)

// floorTo returns the start of the period of length unit (from the unix
// epoch, so UTC hours and days) holding ms.
func floorTo(ms, unit int64) int64 {
	p := ms / unit
	if ms%unit != 0 && ms < 0 {
		p--
	}
	return p * unit
}

// ceilTo returns the first period boundary at or after ms.
func ceilTo(ms, unit int64) int64 { return -floorTo(-ms, unit) }

// hourFloor returns the start of the UTC hour holding ms.
func hourFloor(ms int64) int64 { return floorTo(ms, hourMS) }

// rollupLevel is a rollup table: its name, time column and period, from
// the coarsest to the finest. Usage totals take what they can from the
// coarsest level and the rest from the finer ones (ledger.go).
type rollupLevel struct {
	table, col string
	unit       int64
}

var rollupLevels = [...]rollupLevel{
	{"usage_daily", "day", dayMS},
	{"usage_hourly", "hour", hourMS},
}

// rollupKey is a row of a rollup table; rows without a key or a model
// count under "".
type rollupKey struct {
	period              int64 // start, in unix ms
	account, key, model string
}

// rollupSum is what one batch adds to a row of a rollup table.
type rollupSum struct {
	rollupKey
	requests, prompt, completion, cached, reasoning, estimated, cost int64
}

// rollupBatch sums a batch of ledger rows by rollupKey, in the order the
// groups first appear. The writer reuses one across batches.
type rollupBatch struct {
	unit int64 // the level's period
	idx  map[rollupKey]int
	sums []rollupSum
}

func (b *rollupBatch) reset() {
	if b.idx == nil {
		b.idx = make(map[rollupKey]int)
	}
	clear(b.idx)
	b.sums = b.sums[:0]
}

// add counts r if it is a usage row.
func (b *rollupBatch) add(r *ledgerRow) {
	if r.kind != KindUsage {
		return
	}
	k := rollupKey{floorTo(r.createdAt, b.unit), r.accountID, r.keyID, r.model}
	i, ok := b.idx[k]
	if !ok {
		i = len(b.sums)
		b.sums = append(b.sums, rollupSum{rollupKey: k})
		b.idx[k] = i
	}
	s := &b.sums[i]
	s.requests++
	s.prompt += r.prompt
	s.completion += r.completion
	s.cached += r.cached
	s.reasoning += r.reasoning
	s.cost -= r.amount
	if r.estimated {
		s.estimated++
	}
}

// upsertRollupSQL returns the statement that adds n rollupSums to a level's
// table.
func upsertRollupSQL(l rollupLevel, n int) string {
	one := `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	return `INSERT INTO ` + l.table + ` (` + l.col + `, account_id, key_id, model, requests, prompt_tokens,
	completion_tokens, cached_tokens, reasoning_tokens, estimated, cost)
	VALUES ` + one + strings.Repeat(", "+one, n-1) + `
	ON CONFLICT (` + l.col + `, account_id, key_id, model) DO UPDATE SET
	requests = ` + l.table + `.requests + excluded.requests,
	prompt_tokens = ` + l.table + `.prompt_tokens + excluded.prompt_tokens,
	completion_tokens = ` + l.table + `.completion_tokens + excluded.completion_tokens,
	cached_tokens = ` + l.table + `.cached_tokens + excluded.cached_tokens,
	reasoning_tokens = ` + l.table + `.reasoning_tokens + excluded.reasoning_tokens,
	estimated = ` + l.table + `.estimated + excluded.estimated,
	cost = ` + l.table + `.cost + excluded.cost`
}

func (r *rollupSum) appendArgs(dst []any) []any {
	return append(dst, r.period, r.account, r.key, r.model, r.requests, r.prompt, r.completion,
		r.cached, r.reasoning, r.estimated, r.cost)
}

// prepareChunks prepares the statement sqlFor(n) for every size of
// insertChunks.
func prepareChunks(ctx context.Context, db *sql.DB, sqlFor func(int) string) (map[int]*sql.Stmt, error) {
	stmts := make(map[int]*sql.Stmt, len(insertChunks))
	for _, n := range insertChunks {
		st, err := db.PrepareContext(ctx, sqlFor(n))
		if err != nil {
			for _, st := range stmts {
				st.Close()
			}
			return nil, err
		}
		stmts[n] = st
	}
	return stmts, nil
}

// execChunks runs the multi-row statements of stmts (by rows, as prepared by
// prepareChunks) over rows 0..n-1, largest chunks first; add appends the
// arguments of row i. args is a scratch buffer, returned for reuse.
func execChunks(ctx context.Context, tx *sql.Tx, stmts map[int]*sql.Stmt, n int, args []any,
	add func(dst []any, i int) []any) ([]any, error) {
	for start := 0; start < n; {
		c := insertChunks[len(insertChunks)-1]
		for _, size := range insertChunks {
			if size <= n-start {
				c = size
				break
			}
		}
		args = args[:0]
		for i := start; i < start+c; i++ {
			args = add(args, i)
		}
		if _, err := tx.StmtContext(ctx, stmts[c]).ExecContext(ctx, args...); err != nil {
			return args, err
		}
		start += c
	}
	return args, nil
}

// rollupSpendSQL sums a key lineage's usage charges since start, a UTC day
// boundary (the start of a day, of a month, or 0), from the daily rollups:
// exact, and unaffected by retention.
const rollupSpendSQL = `SELECT COALESCE(SUM(cost), 0) FROM usage_daily
	WHERE day >= ? AND key_id IN (SELECT id FROM api_keys WHERE lineage = ?)`
