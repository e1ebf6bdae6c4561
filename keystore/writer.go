package keystore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The ledger writer is one goroutine that commits every balance change, in
// the order the changes were queued:
//
//   - usage rows queued by Hold.Settle, whose charge is already in memory, are
//     committed in batches of up to maxBatchRows: one transaction inserts the
//     rows and applies one UPDATE accounts SET balance = balance + delta per
//     account. Whatever is pending when the writer comes round forms the next
//     batch; under load batches grow by themselves (group commit).
//   - adjustments queued by AdjustBalance are committed one per transaction,
//     after the rows queued before them, and touch memory only once
//     committed; their caller waits for the outcome.
//
// balance_after is computed at commit time from accountState.durable, the
// balance as of the account's last committed row, so that ordered by id each
// account's rows chain: balance_after(n) = balance_after(previous) + amount(n).
// A batch that fails to commit changes neither the database nor durable; it is
// reported through Options.OnWriteError and retried with backoff (its
// balance_after values recomputed), while Settle keeps queueing: Settle never
// waits for the disk and never drops a charge. Admission is what stops:
// PendingWrites and OldestPendingAge expose the backlog, and once it passes
// Options.MaxPendingWrites or MaxPendingAge, WriteBacklog and Reserve fail
// with ErrBacklog until commits succeed again and the backlog drains.

// maxBatchRows bounds the usage rows committed in one transaction.
const maxBatchRows = 1000

// Retry backoff of a failed batch.
const (
	minRetryDelay = 20 * time.Millisecond
	maxRetryDelay = 5 * time.Second
)

// writeOp is one queued balance change: a usage row (adj == nil) or an
// adjustment.
type writeOp struct {
	seq  uint64
	at   int64 // when it was queued: writeQueue.clock
	acct *accountState
	row  ledgerRow
	adj  *adjustment
	load *spendLoad // see policy.go
	// scope is, on a database shared by several instances, the lease
	// scope of the spend limit the usage row counts against (lease.go);
	// empty if none.
	scope string
}

// special reports whether op is not a usage row.
func (op *writeOp) special() bool { return op.adj != nil || op.load != nil }

// adjustment is an AdjustBalance call waiting for the writer.
type adjustment struct {
	ctx    context.Context
	amount int64
	note   string
	// state moves from adjQueued to adjRunning (the writer took it) or to
	// adjCancelled (the caller gave up first), exactly once.
	state atomic.Int32
	done  chan struct{} // closed when the result fields are set

	account Account
	entry   LedgerEntry
	err     error
}

// Adjustment states.
const (
	adjQueued int32 = iota
	adjRunning
	adjCancelled
)

// writeQueue is the unbounded FIFO between the request path and the writer.
type writeQueue struct {
	mu     sync.Mutex
	ops    []*writeOp
	closed bool
	pushed uint64 // seq of the last op pushed
	// done: every op with seq <= done is finished (committed, or an
	// adjustment that ended either way). progress is closed and replaced
	// whenever done advances.
	done     uint64
	progress chan struct{}
	wake     chan struct{} // capacity 1: "there may be work"
	// urgent (capacity 1) cuts the writer's pacing wait short: someone
	// waits for a commit (Flush, AdjustBalance, Close) or a batch is full.
	urgent chan struct{}
	// taken is what the writer took by the last takeAll; it works through
	// it in order, so the oldest unfinished op (seq done+1) is in taken or
	// at the head of ops.
	taken []*writeOp

	// Mirrors, for readers that must not take mu (Reserve): pending is
	// pushed-done, oldest the at of op done+1 plus one (0: none pending).
	pending atomic.Int64
	oldest  atomic.Int64
	base    time.Time // origin of clock (monotonic)
}

func newWriteQueue() *writeQueue {
	return &writeQueue{progress: make(chan struct{}), wake: make(chan struct{}, 1), urgent: make(chan struct{}, 1),
		base: time.Now()}
}

// clock is a monotonic time in nanoseconds, for the age of pending ops.
func (q *writeQueue) clock() int64 { return int64(time.Since(q.base)) }

// push queues op, or fails with ErrClosed once the store is closing.
func (q *writeQueue) push(op *writeOp) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	q.pushLocked(op)
	return nil
}

// pushLocked queues op; the caller holds q.mu and has checked q.closed.
func (q *writeQueue) pushLocked(op *writeOp) {
	op.at = q.clock()
	if q.pushed == q.done {
		q.oldest.Store(op.at + 1)
	}
	q.pushed++
	op.seq = q.pushed
	q.pending.Store(int64(q.pushed - q.done))
	q.ops = append(q.ops, op)
	q.signal()
	if op.special() || len(q.ops) >= maxBatchRows {
		q.hurry()
	}
}

func (q *writeQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// hurry ends the writer's pacing wait.
func (q *writeQueue) hurry() {
	select {
	case q.urgent <- struct{}{}:
	default:
	}
}

// takeAll removes and returns everything queued, and whether the queue is
// closed.
func (q *writeQueue) takeAll() ([]*writeOp, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	ops := q.ops
	q.ops = nil
	q.taken = ops
	return ops, q.closed
}

// close refuses further pushes and wakes the writer so that it drains.
func (q *writeQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
	q.hurry()
}

// markDone records that every op up to seq is finished.
func (q *writeQueue) markDone(seq uint64) {
	q.mu.Lock()
	if seq <= q.done {
		q.mu.Unlock()
		return
	}
	q.done = seq
	q.pending.Store(int64(q.pushed - q.done))
	q.oldest.Store(q.opAtLocked(seq+1) + 1)
	close(q.progress)
	q.progress = make(chan struct{})
	q.mu.Unlock()
}

// opAtLocked returns the at of the queued op with this seq, or -1 if there
// is none (not pushed yet); the caller holds q.mu and seq > q.done.
func (q *writeQueue) opAtLocked(seq uint64) int64 {
	if seq > q.pushed {
		q.taken = nil // all done: let the ops go
		return -1
	}
	if n := len(q.taken); n > 0 && seq >= q.taken[0].seq && seq-q.taken[0].seq < uint64(n) {
		return q.taken[seq-q.taken[0].seq].at
	}
	if len(q.ops) > 0 && q.ops[0].seq == seq {
		return q.ops[0].at
	}
	return -1 // unreachable: seqs are contiguous
}

// backlog returns how many ops are not finished and how long the oldest of
// them has waited, without taking q.mu.
func (q *writeQueue) backlog() (int, time.Duration) {
	n := q.pending.Load()
	if n <= 0 {
		return 0, 0
	}
	at := q.oldest.Load() - 1
	if at < 0 {
		return int(n), 0
	}
	return int(n), time.Duration(max(q.clock()-at, 0))
}

// PendingWrites returns how many queued balance changes (mostly settled
// usage rows) are not committed yet. It grows only while the database is
// slower than the request rate or failing; export it as a metric.
func (s *Store) PendingWrites() int {
	n, _ := s.queue.backlog()
	return n
}

// OldestPendingAge returns how long the oldest balance change counted by
// PendingWrites has been waiting for its commit; 0 when none is pending.
// Under normal load it stays below CommitInterval plus one commit; export it
// as a metric.
func (s *Store) OldestPendingAge() time.Duration {
	_, age := s.queue.backlog()
	return age
}

// WriteBacklog returns nil while the ledger writer keeps up, and an error
// wrapping ErrBacklog while more than Options.MaxPendingWrites changes are
// pending or the oldest has waited longer than Options.MaxPendingAge, which
// happens when the database fails to commit (disk full, I/O errors). Charges
// settled meanwhile are kept in memory and committed once the database
// recovers; WriteBacklog returns nil again by itself when the backlog is back
// under both bounds. Call it before admitting a request and refuse the
// request while it fails (Reserve does so too). It does no I/O and takes no
// lock.
func (s *Store) WriteBacklog() error {
	n, age := s.queue.backlog()
	if (s.maxPending <= 0 || n <= s.maxPending) && (s.maxPendingAge <= 0 || age <= s.maxPendingAge) {
		return nil
	}
	last := ""
	if e := s.lastWriteErr.Load(); e != nil {
		last = " (last error: " + (*e).Error() + ")"
	}
	return fmt.Errorf("%w: %d balance changes waiting, the oldest for %s: the database is failing to commit%s",
		ErrBacklog, n, age.Round(time.Millisecond), last)
}

// Flush waits until every charge settled and every adjustment queued before
// the call is committed, or ctx ends. After Close it returns nil if nothing
// was lost, and an error wrapping ErrClosed if Close had to give up on rows.
// It must not be called from Options.OnWriteError.
func (s *Store) Flush(ctx context.Context) error {
	q := s.queue
	q.mu.Lock()
	target := q.pushed
	q.mu.Unlock()
	if err := s.waitDone(ctx, target); err != nil {
		return fmt.Errorf("flushing ledger: %w", err)
	}
	return nil
}

// WaitCommitted waits until the usage row of e, an entry returned by
// Hold.Settle, is committed (with the rows settled before it), or ctx ends.
// It is how a caller that must not answer before the charge is durable waits
// for it: the row still goes through the writer's group commit, with the
// rows settled around it, but the writer cuts its CommitInterval pause short
// while someone waits. An entry that has no pending row (from Ledger or
// AdjustBalance, which are committed already) returns nil at once. After
// Close it returns nil if the row was committed and an error wrapping
// ErrClosed if Close had to give up on it. While the database fails to
// commit it waits (see WriteBacklog) until ctx ends. It must not be called
// from Options.OnWriteError.
func (s *Store) WaitCommitted(ctx context.Context, e LedgerEntry) error {
	if e.seq == 0 {
		return nil
	}
	if err := s.waitDone(ctx, e.seq); err != nil {
		return fmt.Errorf("waiting for the ledger row of %s: %w", e.AccountID, err)
	}
	return nil
}

// waitDone waits until every op up to target is finished, hurrying the
// writer.
func (s *Store) waitDone(ctx context.Context, target uint64) error {
	q := s.queue
	hurried := false
	for {
		q.mu.Lock()
		done, progress := q.done, q.progress
		q.mu.Unlock()
		if done >= target {
			return nil
		}
		if !hurried {
			q.hurry()
			hurried = true
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.writerDone:
			q.mu.Lock()
			done = q.done
			q.mu.Unlock()
			if done >= target {
				return nil
			}
			return fmt.Errorf("rows were lost on close: %w", ErrClosed)
		}
	}
}

// writeLoop is the ledger writer goroutine. It returns once the queue is
// closed and drained (or abandoned after DrainTimeout).
func (s *Store) writeLoop() {
	defer close(s.writerDone)
	q := s.queue
	var (
		drainDeadline time.Time
		lastCommit    time.Time // of usage rows, for pacing
	)
	for {
		if wait := s.commitEvery - time.Since(lastCommit); s.commitEvery > 0 && wait > 0 {
			// Group commit: let rows gather for the rest of the interval
			// unless someone needs them committed now.
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-q.urgent:
				t.Stop()
			case <-s.closed: // closing: drain without pausing
				t.Stop()
			}
		}
		ops, closed := q.takeAll()
		if len(ops) == 0 {
			if closed {
				return
			}
			<-q.wake
			continue
		}
		for len(ops) > 0 {
			if ops[0].load != nil {
				s.runSpendLoad(ops[0])
				q.markDone(ops[0].seq)
				ops = ops[1:]
				continue
			}
			if ops[0].adj != nil {
				s.runAdjustment(ops[0])
				q.markDone(ops[0].seq)
				ops = ops[1:]
				continue
			}
			n := 1
			for n < len(ops) && n < maxBatchRows && !ops[n].special() {
				n++
			}
			if err := s.commitWithRetry(ops[:n], &drainDeadline); err != nil {
				s.abandon(ops, err)
				return
			}
			lastCommit = time.Now()
			q.markDone(ops[n-1].seq)
			ops = ops[n:]
		}
	}
}

// commitWithRetry commits one batch of usage rows, retrying with backoff
// until it succeeds. Once the store is closing it retries only until
// *drainDeadline (set on the first failure after Close) and then returns the
// last error.
func (s *Store) commitWithRetry(batch []*writeOp, drainDeadline *time.Time) error {
	delay := minRetryDelay
	for attempt := 1; ; attempt++ {
		err := s.commitUsage(batch)
		if err == nil {
			s.lastWriteErr.Store(nil)
			return nil
		}
		s.lastWriteErr.Store(&err)
		closing := s.isClosed()
		if closing {
			if drainDeadline.IsZero() {
				*drainDeadline = time.Now().Add(s.drainTimeout)
			}
			left := time.Until(*drainDeadline)
			if left <= 0 {
				return err
			}
			delay = min(delay, left)
		}
		s.reportWriteError(fmt.Errorf("committing %d ledger rows (attempt %d, retrying in %s): %w", len(batch), attempt, delay, err))
		t := time.NewTimer(delay)
		if closing {
			<-t.C
		} else {
			select {
			case <-t.C:
			case <-s.closed: // retry at once, now under the drain deadline
				t.Stop()
			}
		}
		delay = min(2*delay, maxRetryDelay)
	}
}

// abandon gives up on ops and on anything still queued (the queue is closed):
// queued adjustments fail, usage rows are lost, and the loss is recorded for
// Close and Flush.
func (s *Store) abandon(ops []*writeOp, cause error) {
	rest, _ := s.queue.takeAll()
	lost := 0
	for _, op := range append(ops, rest...) {
		if op.load != nil {
			close(op.load.done)
			continue
		}
		if op.adj == nil {
			lost++
			continue
		}
		if op.adj.state.CompareAndSwap(adjQueued, adjRunning) {
			op.adj.err = fmt.Errorf("adjusting balance of %q: %w", op.acct.id, ErrClosed)
			close(op.adj.done)
		}
	}
	s.writerErr = fmt.Errorf("closing key store: gave up on %d ledger rows after %s: %w", lost, s.drainTimeout, cause)
	s.reportWriteError(s.writerErr)
}

func (s *Store) reportWriteError(err error) {
	if s.onWriteError != nil {
		s.onWriteError(err, s.PendingWrites())
	}
}

// insertLedgerSQL inserts one ledger row; ledgerArgs supplies its arguments.
const insertLedgerSQL = `INSERT INTO ledger (created_at, account_id, key_id, kind, amount, balance_after, note,
	model, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, status, duration_ms, request_id, estimated)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// ledgerArgs returns the arguments of insertLedgerSQL. Empty text is stored
// as NULL; usage rows store their token counts even when zero.
func ledgerArgs(r *ledgerRow, balanceAfter int64) []any {
	return appendLedgerArgs(make([]any, 0, ledgerValues), r, nil, balanceAfter)
}

// ledgerValues is the number of values of one row of insertLedgerSQL.
const ledgerValues = 16

// insertChunks are the sizes of the multi-row INSERTs a batch is cut into,
// largest first: per statement, not per row, is where database/sql and the
// driver spend most of their time.
var insertChunks = [...]int{64, 16, 4, 1}

// prepareInserts prepares the multi-row ledger INSERTs and rollup upserts
// on the writer connection once. It must run outside a transaction: the
// writer pool has a single connection, which a transaction holds. Only the
// writer goroutine calls it, under writeMu.
func (s *Store) prepareInserts(ctx context.Context) error {
	if s.inserts != nil {
		return nil
	}
	ins, err := prepareChunks(ctx, s.w, insertLedgerRowsSQL)
	if err != nil {
		return fmt.Errorf("preparing ledger insert: %w", err)
	}
	var ups [len(rollupLevels)]map[int]*sql.Stmt
	for i, l := range rollupLevels {
		if ups[i], err = prepareChunks(ctx, s.w, func(n int) string { return upsertRollupSQL(l, n) }); err != nil {
			for _, m := range append(ups[:i], ins) {
				for _, st := range m {
					st.Close()
				}
			}
			return fmt.Errorf("preparing rollup upsert: %w", err)
		}
	}
	s.inserts, s.upserts = ins, ups
	return nil
}

// insertLedgerRowsSQL is insertLedgerSQL for n rows.
func insertLedgerRowsSQL(n int) string {
	one := insertLedgerSQL[strings.LastIndex(insertLedgerSQL, "("):]
	return insertLedgerSQL + strings.Repeat(", "+one, n-1)
}

// appendLedgerArgs appends the values of one row of insertLedgerSQL.
// account, if not nil, is r.accountID already boxed (the writer boxes it
// once per account and batch rather than once per row).
func appendLedgerArgs(dst []any, r *ledgerRow, account any, balanceAfter int64) []any {
	var tokens [4]any
	var status, duration any
	kind := kindUsageArg
	if r.kind == KindUsage {
		tokens = [4]any{r.prompt, r.completion, r.cached, r.reasoning}
		duration = r.durationMS
		if r.status != 0 {
			status = r.status
		}
	} else {
		kind = r.kind
	}
	if account == nil {
		account = r.accountID
	}
	estimated := 0
	if r.estimated {
		estimated = 1
	}
	return append(dst, r.createdAt, account, nullText(r.keyID), kind, r.amount, balanceAfter, nullText(r.note),
		nullText(r.model), tokens[0], tokens[1], tokens[2], tokens[3], status, duration, nullText(r.requestID), estimated)
}

// kindUsageArg is KindUsage boxed once, not once per row.
var kindUsageArg any = KindUsage

func nullText(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// writerScratch holds buffers the writer reuses from batch to batch; it
// belongs to the writer, under writeMu.
type writerScratch struct {
	accts   map[*accountState]batchAccount
	touched []*accountState
	rollups [len(rollupLevels)]rollupBatch
	args    []any
}

// batchAccount is an account's state within one batch.
type batchAccount struct {
	after int64 // balance_after of its last row so far
	id    any   // the account id, boxed once
}

func (w *writerScratch) reset() {
	if w.accts == nil {
		w.accts = make(map[*accountState]batchAccount)
	}
	clear(w.accts)
	w.touched = w.touched[:0]
	for i := range w.rollups {
		w.rollups[i].unit = rollupLevels[i].unit
		w.rollups[i].reset()
	}
}

// commitUsage writes a batch of usage rows, the matching rollup updates and
// balance updates in one transaction. durable moves only if the commit
// succeeded.
func (s *Store) commitUsage(batch []*writeOp) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	ctx, cancel := s.backgroundWriteContext(context.Background())
	defer cancel()
	if err := s.prepareInserts(ctx); err != nil {
		return err
	}
	var batchID string
	if c := s.cluster; c != nil {
		batchID = c.batchID(batch)
		if c.uncertain == batchID {
			// The last attempt's COMMIT failed: it may have committed.
			done, err := c.batchCommitted(ctx, batchID)
			if err != nil {
				return fmt.Errorf("checking batch %s: %w", batchID, err)
			}
			c.uncertain = ""
			if done {
				s.batches.Add(1)
				return nil
			}
		}
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if s.cluster != nil {
		if err := s.cluster.lockBatchAccounts(ctx, tx, batch); err != nil {
			return err
		}
	}
	w := &s.scratch
	w.reset()
	w.args, err = execChunks(ctx, tx, s.inserts, len(batch), w.args, func(dst []any, i int) []any {
		op := batch[i]
		ba, seen := w.accts[op.acct]
		if !seen {
			ba = batchAccount{after: op.acct.durable, id: op.acct.id}
			w.touched = append(w.touched, op.acct)
		}
		ba.after += op.row.amount
		w.accts[op.acct] = ba
		for i := range w.rollups {
			w.rollups[i].add(&op.row)
		}
		return appendLedgerArgs(dst, &op.row, ba.id, ba.after)
	})
	if err != nil {
		return fmt.Errorf("inserting ledger rows: %w", err)
	}
	for l := range w.rollups {
		sums := w.rollups[l].sums
		w.args, err = execChunks(ctx, tx, s.upserts[l], len(sums), w.args, func(dst []any, i int) []any {
			return sums[i].appendArgs(dst)
		})
		if err != nil {
			return fmt.Errorf("updating usage rollups: %w", err)
		}
	}
	if s.cluster != nil && len(w.touched) > 1 {
		// Shared database: the batch's accounts are locked already; one
		// statement for all of them instead of a round trip each.
		if err := s.cluster.addToBalances(ctx, tx, w.touched, func(a *accountState) int64 { return w.accts[a].after - a.durable }); err != nil {
			return err
		}
	} else {
		for _, a := range w.touched {
			if err := addToStoredBalance(ctx, tx, a.id, w.accts[a].after-a.durable); err != nil {
				return err
			}
		}
	}
	if c := s.cluster; c != nil {
		charged := make(map[string]int64, len(w.touched))
		for _, a := range w.touched {
			charged[a.id] = a.durable - w.accts[a].after
		}
		for _, op := range batch {
			if op.scope != "" {
				charged[op.scope] -= op.row.amount
			}
		}
		if err := c.settleLeases(ctx, tx, batchID, charged); err != nil {
			return err
		}
	}
	if s.commitHook != nil {
		if err := s.commitHook(); err != nil {
			return err // rolled back by the deferred Rollback
		}
	}
	if err := tx.Commit(); err != nil {
		if s.cluster != nil {
			s.cluster.uncertain = batchID
		}
		return err
	}
	for _, a := range w.touched {
		a.durable = w.accts[a].after
	}
	if s.cluster != nil {
		s.acctMu.Lock()
		for _, a := range w.touched {
			s.cluster.noteBalance(a.id, a.durable)
		}
		s.acctMu.Unlock()
	}
	s.batches.Add(1)
	return nil
}

// pgWriteTimeout bounds a background transaction (a usage batch, provider
// objects, last-used times, a pruning batch) on PostgreSQL. A connection
// the network silently dropped would otherwise hang the writer, which holds
// writeMu, until TCP keepalive notices (many minutes); cancelled, the
// transaction fails, is retried on a new connection, and meanwhile the
// backlog bound closes admission. SQLite needs none: its busy timeout bounds
// waiting for the file.
const pgWriteTimeout = 30 * time.Second

// backgroundWriteContext returns the context of a background transaction:
// ctx, with pgWriteTimeout on PostgreSQL.
func (s *Store) backgroundWriteContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.dialect == dialectPostgres {
		return context.WithTimeout(ctx, pgWriteTimeout)
	}
	return ctx, func() {}
}

// addToStoredBalance adds delta to an account row's balance inside tx.
func addToStoredBalance(ctx context.Context, tx *sql.Tx, accountID string, delta int64) error {
	res, err := tx.ExecContext(ctx, `UPDATE accounts SET balance = balance + ? WHERE id = ?`, delta, accountID)
	if err != nil {
		return fmt.Errorf("updating balance of %q: %w", accountID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return errors.Join(fmt.Errorf("updating balance of %q: %d rows changed", accountID, n), err)
	}
	return nil
}

// insertReturningID runs an INSERT of one row into a table with an id
// column and returns the new row's id (SQLite: LastInsertId; PostgreSQL
// has none: RETURNING id).
func (s *Store) insertReturningID(ctx context.Context, tx *sql.Tx, q string, args ...any) (int64, error) {
	if s.dialect == dialectPostgres {
		var id int64
		err := tx.QueryRowContext(ctx, q+` RETURNING id`, args...).Scan(&id)
		return id, err
	}
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// runAdjustment commits a queued adjustment unless its caller gave up.
func (s *Store) runAdjustment(op *writeOp) {
	adj := op.adj
	if !adj.state.CompareAndSwap(adjQueued, adjRunning) {
		return
	}
	adj.account, adj.entry, adj.err = s.commitAdjustment(adj.ctx, op.acct, adj.amount, adj.note)
	// Done in the queue before the caller wakes, so that PendingWrites
	// never counts an adjustment whose caller already returned.
	s.queue.markDone(op.seq)
	close(adj.done)
}

// commitAdjustment writes an adjustment and its ledger row in one transaction
// and then applies it to memory.
func (s *Store) commitAdjustment(ctx context.Context, a *accountState, amount int64, note string) (Account, LedgerEntry, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	// It runs on the writer goroutine: bounded like a usage batch.
	ctx, cancel := s.backgroundWriteContext(ctx)
	defer cancel()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return Account{}, LedgerEntry{}, fmt.Errorf("adjusting balance of %q: %w", a.id, err)
	}
	defer tx.Rollback()
	if s.cluster != nil {
		// Other instances charge the account too: the chain continues
		// from the row as locked now.
		if err := tx.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE id = $1 FOR UPDATE`, a.id).Scan(&a.durable); err != nil {
			return Account{}, LedgerEntry{}, fmt.Errorf("adjusting balance of %q: %w", a.id, err)
		}
	}
	s.acctMu.RLock()
	mem := a.balance
	s.acctMu.RUnlock()
	_, okMem := addInt64(mem, amount)
	after, okDurable := addInt64(a.durable, amount)
	if !okMem || !okDurable {
		return Account{}, LedgerEntry{}, fmt.Errorf("%w: balance would overflow", ErrInvalid)
	}
	row := ledgerRow{createdAt: unixMS(s.now()), accountID: a.id, kind: KindAdjustment, amount: amount, note: note}
	if err := addToStoredBalance(ctx, tx, a.id, amount); err != nil {
		return Account{}, LedgerEntry{}, fmt.Errorf("adjusting balance: %w", err)
	}
	id, err := s.insertReturningID(ctx, tx, insertLedgerSQL, ledgerArgs(&row, after)...)
	if err != nil {
		return Account{}, LedgerEntry{}, fmt.Errorf("writing ledger row for %q: %w", a.id, err)
	}
	if err := s.recordChange(ctx, tx, change{kind: changeBalance, accountID: a.id}); err != nil {
		return Account{}, LedgerEntry{}, fmt.Errorf("adjusting balance of %q: %w", a.id, err)
	}
	action := ActionBalanceTopup
	if amount < 0 {
		action = ActionBalanceCorrection
	}
	if err := s.writeAudit(ctx, tx, a.id, a.id, action, map[string]any{
		"amount": FormatAmount(amount), "amount_nano": amount, "note": note, "ledger_id": id,
		"balance_after": FormatAmount(after),
	}); err != nil {
		return Account{}, LedgerEntry{}, err
	}
	if err := tx.Commit(); err != nil {
		return Account{}, LedgerEntry{}, fmt.Errorf("adjusting balance of %q: %w", a.id, err)
	}
	a.durable = after
	s.acctMu.Lock()
	if s.cluster == nil {
		a.balance += amount
	} else {
		l := s.cluster.leaseOf(a.id)
		l.denyUntil = 0 // spendable at once here; elsewhere through the feed
		s.cluster.noteBalance(a.id, after)
	}
	snap := a.snapshot()
	if s.cluster != nil {
		snap.Balance = after
	}
	s.acctMu.Unlock()
	return snap, row.entry(id, after), nil
}
