package keystore

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checkDB verifies the database invariant: ordered by ledger id, every row's
// balance_after is the previous balance_after of its account (0 before the
// first) plus its amount, and every account's stored balance equals the last
// of them, which is its ledger sum. It returns the stored balances.
func checkDB(t testing.TB, db *sql.DB) map[string]int64 {
	t.Helper()
	rows, err := db.Query(`SELECT id, account_id, amount, balance_after FROM ledger ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	chain := map[string]int64{}
	for rows.Next() {
		var id, amount, after int64
		var acct string
		if err := rows.Scan(&id, &acct, &amount, &after); err != nil {
			t.Fatal(err)
		}
		chain[acct] += amount
		if after != chain[acct] {
			rows.Close()
			t.Fatalf("ledger row %d of %q: balance_after %d, want previous + amount = %d", id, acct, after, chain[acct])
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	stored := map[string]int64{}
	rows, err = db.Query(`SELECT id, balance FROM accounts`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var b int64
		if err := rows.Scan(&id, &b); err != nil {
			t.Fatal(err)
		}
		if b != chain[id] {
			t.Fatalf("account %q: stored balance %d, ledger sum %d", id, b, chain[id])
		}
		stored[id] = b
	}
	return stored
}

// checkStore flushes s and checks that for every account the balance in
// memory, the stored balance and the ledger sum agree, and that the
// balance_after chain is consistent.
func checkStore(t testing.TB, s *Store) {
	t.Helper()
	ctx := context.Background()
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	stored := checkDB(t, s.r)
	for _, a := range s.Accounts(ctx) {
		sb, err := s.StoredBalance(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		sum, err := s.LedgerSum(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if a.Balance != sb || sb != sum || sum != stored[a.ID] {
			t.Fatalf("account %q: memory %d, stored %d, ledger sum %d", a.ID, a.Balance, sb, sum)
		}
	}
	if n := s.PendingWrites(); n != 0 {
		t.Fatalf("%d writes pending after Flush", n)
	}
}

// settleOne reserves and settles cost on account.
func settleOne(t testing.TB, s *Store, account string, c Charge) LedgerEntry {
	t.Helper()
	h := mustReserve(t, s, account, c.Cost)
	e, err := h.Settle(c)
	if err != nil {
		t.Fatalf("Settle: %v", err)
	}
	return e
}

// TestGroupCommitConsistency: thousands of concurrent settles on a few
// accounts with interleaved top-ups and corrections; after Flush memory,
// stored balances and ledger sums agree and the balance_after chains hold.
func TestGroupCommitConsistency(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	accounts := []string{"a", "b", "c", "d"}
	for _, a := range accounts {
		mustAccount(t, s, a, "1000")
	}
	const workers, perWorker = 40, 150 // 6000 settles
	var settled atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 2))
			for i := 0; i < perWorker; i++ {
				acct := accounts[r.IntN(len(accounts))]
				h, err := s.ReserveFor(Identity{AccountID: acct}, nano(t, "0.01"))
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := h.Settle(Charge{Cost: r.Int64N(nano(t, "0.01")), Model: "m", PromptTokens: 10}); err != nil {
					t.Error(err)
					return
				}
				settled.Add(1)
			}
		}(w)
	}
	var adjusted atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 15; i++ {
				amt := nano(t, "1")
				if i%3 == 2 {
					amt = -nano(t, "0.5")
				}
				_, e, err := s.AdjustBalance(ctx, accounts[(w+i)%len(accounts)], amt, "interleaved")
				if err != nil || e.ID == 0 {
					t.Errorf("AdjustBalance: %+v %v", e, err)
					return
				}
				adjusted.Add(1)
			}
		}(w)
	}
	wg.Wait()
	checkStore(t, s)
	if n := queryInt(t, s.r, `SELECT count(*) FROM ledger WHERE kind = 'usage'`); n != settled.Load() {
		t.Fatalf("%d usage rows, want %d", n, settled.Load())
	}
	if n := queryInt(t, s.r, `SELECT count(*) FROM ledger WHERE kind = 'adjustment'`); n != adjusted.Load()+int64(len(accounts)) {
		t.Fatalf("%d adjustment rows, want %d", n, adjusted.Load()+int64(len(accounts)))
	}
	if b := s.batches.Load(); b >= settled.Load() {
		t.Fatalf("%d batches for %d rows: no group commit", b, settled.Load())
	}
	t.Logf("%d usage rows in %d batches", settled.Load(), s.batches.Load())
}

// TestSettleDoesNotWaitForCommit: with the writer blocked, Settle returns at
// once, memory reflects the charges and the next admission sees them; the
// rows are committed in batches of at most maxBatchRows once it resumes.
func TestSettleDoesNotWaitForCommit(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "10")
	before := s.batches.Load()

	s.writeMu.Lock() // the writer cannot commit
	const n = 2500
	for i := 0; i < n; i++ {
		settleOne(t, s, "acme", Charge{Cost: nano(t, "0.001")})
	}
	bal, _, _ := s.Balance("acme")
	if want := nano(t, "10") - n*nano(t, "0.001"); bal != want {
		s.writeMu.Unlock()
		t.Fatalf("memory balance %d, want %d", bal, want)
	}
	if p := s.PendingWrites(); p != n {
		s.writeMu.Unlock()
		t.Fatalf("PendingWrites = %d, want %d", p, n)
	}
	stored := queryInt(t, s.r, `SELECT balance FROM accounts WHERE id = 'acme'`)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	flushErr := s.Flush(short)
	cancel()
	s.writeMu.Unlock()
	if stored != nano(t, "10") {
		t.Fatalf("stored balance %d changed before the commit", stored)
	}
	if !errors.Is(flushErr, context.DeadlineExceeded) {
		t.Fatalf("Flush with the writer blocked: %v, want DeadlineExceeded", flushErr)
	}
	// the next admission sees the uncommitted charges: 7.5 left, not 10
	if _, err := s.ReserveFor(Identity{AccountID: "acme"}, 1); err != nil {
		t.Fatal(err)
	}
	if bal, held, _ := s.Available("acme"); bal != nano(t, "7.5") || held != 1 {
		t.Fatalf("Available = %d, %d", bal, held)
	}
	checkStore(t, s)
	// one batch may have been taken before the lock; the rest are 1000-row
	// batches
	if b := s.batches.Load() - before; b < 3 || b > 4 {
		t.Fatalf("%d rows committed in %d batches, want 3 or 4", n, b)
	}
}

// TestCloseFlushesPending: rows settled but not committed when Close starts
// are all in the database after it returns.
func TestCloseFlushesPending(t *testing.T) {
	ctx := context.Background()
	path := tempDB(t)
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	mustAccount(t, s, "a", "100")
	mustAccount(t, s, "b", "100")
	s.writeMu.Lock()
	const n = 3000
	for i := 0; i < n; i++ {
		settleOne(t, s, []string{"a", "b"}[i%2], Charge{Cost: nano(t, "0.01"), Model: "m", RequestID: fmt.Sprint(i)})
	}
	memA, _, _ := s.Balance("a")
	memB, _, _ := s.Balance("b")
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		s.writeMu.Unlock()
		t.Fatalf("Close returned (%v) while %d rows could not be written", err, n)
	case <-time.After(50 * time.Millisecond):
	}
	s.writeMu.Unlock()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush after a clean Close: %v", err)
	}

	s2 := openAt(t, path, Options{})
	stored := checkDB(t, s2.r)
	if stored["a"] != memA || stored["b"] != memB {
		t.Fatalf("after reopen: a %d b %d, want %d %d", stored["a"], stored["b"], memA, memB)
	}
	if c := queryInt(t, s2.r, `SELECT count(DISTINCT request_id) FROM ledger WHERE kind = 'usage'`); c != n {
		t.Fatalf("%d usage rows after reopen, want %d", c, n)
	}
	if b, _, _ := s2.Balance("a"); b != memA {
		t.Fatalf("reloaded balance %d, want %d", b, memA)
	}
}

func TestSettleAfterClose(t *testing.T) {
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "10")
	h := mustReserve(t, s, "acme", nano(t, "1"))
	settled := mustReserve(t, s, "acme", nano(t, "1"))
	if _, err := settled.Settle(Charge{Cost: nano(t, "1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Settle(Charge{Cost: nano(t, "1")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Settle after Close: %v, want ErrClosed", err)
	}
	if bal, held, _ := s.Available("acme"); bal != nano(t, "9") || held != nano(t, "1") {
		t.Fatalf("Settle after Close changed memory: balance %d held %d", bal, held)
	}
	h.Release()
	if n, amt := s.HoldsInFlight(); n != 0 || amt != 0 {
		t.Fatalf("HoldsInFlight after Release on closed store = %d, %d", n, amt)
	}
	if _, err := s.Ledger(context.Background(), LedgerFilter{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ledger on closed store: %v", err)
	}
	if _, err := s.UsageTotals(context.Background(), LedgerFilter{}, ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("UsageTotals on closed store: %v", err)
	}
}

// failWrites installs a temporary trigger on the writer's connection that
// makes every ledger insert fail while enabled; it returns a switch.
func failWrites(t *testing.T, s *Store) func(on bool) {
	t.Helper()
	if testOnPostgres {
		return failWritesPostgres(t, s)
	}
	for _, q := range []string{
		`CREATE TEMP TABLE fail_writes (x INTEGER)`,
		`CREATE TEMP TRIGGER fail_ledger BEFORE INSERT ON main.ledger
			WHEN EXISTS (SELECT 1 FROM temp.fail_writes)
			BEGIN SELECT RAISE(ABORT, 'injected write failure'); END`,
	} {
		if _, err := s.w.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return func(on bool) {
		t.Helper()
		q := `DELETE FROM temp.fail_writes`
		if on {
			q = `INSERT INTO temp.fail_writes VALUES (1)`
		}
		if _, err := s.w.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
}

// errorLog collects Options.OnWriteError reports.
type errorLog struct {
	mu      sync.Mutex
	errs    []error
	pending []int
}

func (l *errorLog) add(err error, pending int) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.pending = append(l.pending, pending)
	l.mu.Unlock()
}

func (l *errorLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.errs)
}

func (l *errorLog) last() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) == 0 {
		return nil
	}
	return l.errs[len(l.errs)-1]
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestWriteFailureRetried: batches that fail to commit are reported, kept
// and retried; nothing is lost, memory keeps serving admissions, and an
// adjustment that fails or is cancelled changes nothing.
func TestWriteFailureRetried(t *testing.T) {
	ctx := context.Background()
	var log errorLog
	s := openTemp(t, Options{OnWriteError: log.add})
	mustAccount(t, s, "acme", "100")
	fail := failWrites(t, s)
	fail(true)

	// an adjustment whose own transaction fails changes nothing
	if _, _, err := s.AdjustBalance(ctx, "acme", nano(t, "5"), "lost"); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("AdjustBalance with failing writes: %v", err)
	}
	if b, _, _ := s.Balance("acme"); b != nano(t, "100") {
		t.Fatalf("failed adjustment changed memory to %d", b)
	}

	for i := 0; i < 50; i++ {
		settleOne(t, s, "acme", Charge{Cost: nano(t, "1"), Model: "m"})
	}
	waitUntil(t, "two reported write errors", func() bool { return log.len() >= 2 })
	if err := log.last(); !strings.Contains(err.Error(), "injected write failure") || !strings.Contains(err.Error(), "retrying") {
		t.Fatalf("reported error %v", err)
	}
	if b, _, _ := s.Balance("acme"); b != nano(t, "50") {
		t.Fatalf("memory balance %d, want 50.00", b)
	}
	if b, _ := s.StoredBalance(ctx, "acme"); b != nano(t, "100") {
		t.Fatalf("stored balance %d changed by a failed batch", b)
	}
	if p := s.PendingWrites(); p != 50 {
		t.Fatalf("PendingWrites = %d, want 50", p)
	}
	// an adjustment queued behind the failing batch gives up with its ctx
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	_, _, err := s.AdjustBalance(short, "acme", nano(t, "7"), "cancelled")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued AdjustBalance: %v, want DeadlineExceeded", err)
	}
	// admission goes on from memory
	settleOne(t, s, "acme", Charge{Cost: nano(t, "1"), Model: "m"})

	fail(false)
	flushCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := s.Flush(flushCtx); err != nil {
		t.Fatal(err)
	}
	checkStore(t, s)
	if n := queryInt(t, s.r, `SELECT count(*) FROM ledger WHERE kind = 'usage'`); n != 51 {
		t.Fatalf("%d usage rows, want 51", n)
	}
	if n := queryInt(t, s.r, `SELECT count(*) FROM ledger WHERE note IN ('lost', 'cancelled')`); n != 0 {
		t.Fatalf("%d rows of failed or cancelled adjustments", n)
	}
	if b, _, _ := s.Balance("acme"); b != nano(t, "49") {
		t.Fatalf("final balance %d, want 49.00", b)
	}
	// and the writer still takes adjustments
	if _, e, err := s.AdjustBalance(ctx, "acme", nano(t, "1"), "after"); err != nil || e.BalanceAfter != nano(t, "50") {
		t.Fatalf("AdjustBalance after recovery: %+v %v", e, err)
	}
	checkStore(t, s)
}

// TestCloseGivesUpAfterDrainTimeout: if the database refuses the pending rows
// for longer than DrainTimeout, Close reports how many were lost and the
// database stays consistent.
func TestCloseGivesUpAfterDrainTimeout(t *testing.T) {
	ctx := context.Background()
	path := tempDB(t)
	var log errorLog
	s, err := Open(ctx, Options{Path: path, DrainTimeout: 200 * time.Millisecond, OnWriteError: log.add})
	if err != nil {
		t.Fatal(err)
	}
	mustAccount(t, s, "acme", "10")
	settleOne(t, s, "acme", Charge{Cost: nano(t, "1")})
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	fail := failWrites(t, s)
	fail(true)
	for i := 0; i < 7; i++ {
		settleOne(t, s, "acme", Charge{Cost: nano(t, "1")})
	}
	start := time.Now()
	err = s.Close()
	if err == nil || !strings.Contains(err.Error(), "gave up on 7 ledger rows") {
		t.Fatalf("Close: %v, want an error about 7 lost rows", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %s", d)
	}
	if e := log.last(); e == nil || !strings.Contains(e.Error(), "gave up") {
		t.Fatalf("last reported error %v", e)
	}
	if err := s.Flush(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Flush after lossy Close: %v, want ErrClosed", err)
	}
	s2 := openAt(t, path, Options{})
	if stored := checkDB(t, s2.r); stored["acme"] != nano(t, "9") {
		t.Fatalf("stored balance after reopen %d, want 9.00", stored["acme"])
	}
}

// TestAdjustBalanceContextCancelledBeforeRun covers a caller that gives up
// while its adjustment waits behind a blocked writer.
func TestAdjustBalanceContextCancelledBeforeRun(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "1")
	s.writeMu.Lock()
	settleOne(t, s, "acme", Charge{Cost: 1}) // occupies the writer
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, _, err := s.AdjustBalance(short, "acme", nano(t, "3"), "never")
	cancel()
	s.writeMu.Unlock()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AdjustBalance: %v, want DeadlineExceeded", err)
	}
	checkStore(t, s)
	if b, _, _ := s.Balance("acme"); b != nano(t, "1")-1 {
		t.Fatalf("balance %d: the cancelled adjustment was applied", b)
	}
}

// TestCrashKeepsInvariant kills (SIGKILL) a process that is settling and
// adjusting as fast as it can, then checks the database it left behind.
func TestCrashKeepsInvariant(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	path := tempDB(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "KEYSTORE_CRASH_DB="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "ready" {
				ready <- true
				break
			}
		}
		for sc.Scan() {
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("child never got ready")
	}
	time.Sleep(300 * time.Millisecond) // let it write mid-stream
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	s := openAt(t, path, Options{})
	stored := checkDB(t, s.r)
	rows := queryInt(t, s.r, `SELECT count(*) FROM ledger WHERE kind = 'usage'`)
	if rows == 0 || len(stored) != 3 {
		t.Fatalf("child left %d usage rows, %d accounts", rows, len(stored))
	}
	for id, b := range stored {
		if mem, _, _ := s.Balance(id); mem != b {
			t.Fatalf("account %q loaded balance %d, stored %d", id, mem, b)
		}
	}
	checkStore(t, s)
	t.Logf("after kill -9: %d usage rows committed, invariant holds", rows)
}

// TestCrashChild is the workload TestCrashKeepsInvariant kills; it runs only
// in the child process.
func TestCrashChild(t *testing.T) {
	path := os.Getenv("KEYSTORE_CRASH_DB")
	if path == "" {
		t.Skip("child of TestCrashKeepsInvariant")
	}
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	accounts := []string{"x", "y", "z"}
	for _, a := range accounts {
		if _, err := s.CreateAccount(ctx, a, ""); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.AdjustBalance(ctx, a, 1_000_000*NanoPerUnit, "seed"); err != nil {
			t.Fatal(err)
		}
	}
	for w := 0; w < 8; w++ {
		go func(w int) {
			for i := 0; ; i++ {
				h, err := s.ReserveFor(Identity{AccountID: accounts[(w+i)%3]}, 1000)
				if err != nil {
					continue
				}
				h.Settle(Charge{Cost: int64(1 + i%1000), Model: "m"})
			}
		}(w)
	}
	go func() {
		for i := 0; ; i++ {
			s.AdjustBalance(ctx, accounts[i%3], int64(1+i), "top-up")
		}
	}()
	for s.batches.Load() < 5 {
		time.Sleep(time.Millisecond)
	}
	fmt.Println("ready")
	select {} // until killed
}

// BenchmarkSettle measures Reserve+Settle from parallel goroutines on eight
// accounts. "sustained" includes the final Flush, so its ns/op is the cost
// per committed usage row (the writer is the limit); "request_path" stops the
// clock before it, so its ns/op is what a request pays.
func BenchmarkSettle(b *testing.B) {
	for _, sustained := range []bool{true, false} {
		name := "request_path"
		if sustained {
			name = "sustained"
		}
		b.Run(name, func(b *testing.B) { benchmarkSettle(b, sustained) })
	}
}

func benchmarkSettle(b *testing.B, sustained bool) {
	ctx := context.Background()
	// No backlog bound: settling outruns any database for a while, and
	// this measures throughput, not admission.
	s, err := Open(ctx, Options{Path: tempDB(b), MaxPendingWrites: -1, MaxPendingAge: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	accounts := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	for _, a := range accounts {
		if _, err := s.CreateAccount(ctx, a, ""); err != nil {
			b.Fatal(err)
		}
		if _, _, err := s.AdjustBalance(ctx, a, maxAmountUnits*NanoPerUnit, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	batches := s.batches.Load()
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		acct := accounts[int(next.Add(1))%len(accounts)]
		for pb.Next() {
			h, err := s.ReserveFor(Identity{AccountID: acct}, 1000)
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := h.Settle(Charge{Cost: 900, Model: "gpt-x", PromptTokens: 100, CompletionTokens: 20, RequestID: "req"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if !sustained {
		b.StopTimer()
	}
	if err := s.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if n := s.batches.Load() - batches; n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "rows/batch")
	}
}

// BenchmarkAdjustBalance is the one-transaction-per-row baseline.
func BenchmarkAdjustBalance(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: tempDB(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateAccount(ctx, "a", ""); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := s.AdjustBalance(ctx, "a", 1, ""); err != nil {
			b.Fatal(err)
		}
	}
}
