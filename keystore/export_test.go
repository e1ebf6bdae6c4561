package keystore

import (
	"context"
	"errors"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// exportAll collects ExportLedger's rows with pages of pageSize and the
// sizes of the pages read.
func exportAll(t *testing.T, s *Store, f LedgerFilter, pageSize int) ([]LedgerEntry, []int) {
	t.Helper()
	var out []LedgerEntry
	var pages []int
	err := s.exportLedger(context.Background(), f, pageSize, func(e LedgerEntry) error {
		out = append(out, e)
		return nil
	}, func(n int) { pages = append(pages, n) })
	if err != nil {
		t.Fatalf("export %+v: %v", f, err)
	}
	return out, pages
}

// TestExportLedgerMatchesLedger: for each filter the export is Ledger's
// answer in id order, read in pages of the given size.
func TestExportLedgerMatchesLedger(t *testing.T) {
	fx := newLedgerFixture(t)
	day1 := fx.day0.Add(24 * 3600e9)
	for _, f := range []LedgerFilter{
		{},
		{AccountID: "acme"},
		{KeyID: fx.k1},
		{Kind: KindAdjustment},
		{Model: "gpt-a", Since: day1},
		{Until: day1},
		{AccountID: "beta", BeforeID: 9},
		{AccountID: "nobody"},
	} {
		want, err := fx.s.Ledger(context.Background(), LedgerFilter{AccountID: f.AccountID, KeyID: f.KeyID,
			Model: f.Model, Kind: f.Kind, Since: f.Since, Until: f.Until, BeforeID: f.BeforeID, Limit: maxLedgerLimit})
		if err != nil {
			t.Fatal(err)
		}
		slices.Reverse(want)
		got, pages := exportAll(t, fx.s, f, 3)
		if len(want) == 0 && len(got) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("export %+v:\n got %v\nwant %v", f, ids(got), ids(want))
		}
		if n := len(want)/3 + 1; len(pages) != n {
			t.Fatalf("export %+v of %d rows read %d pages (%v), want %d", f, len(want), len(pages), pages, n)
		}
	}
}

// TestExportLedgerEnds: rows settled while the export runs are not in it,
// so that the export of a busy gateway ends; an error of fn stops it.
func TestExportLedgerEnds(t *testing.T) {
	fx := newLedgerFixture(t)
	ctx := context.Background()
	before, _ := fx.s.Ledger(ctx, LedgerFilter{})
	n := 0
	err := fx.s.exportLedger(ctx, LedgerFilter{}, 2, func(e LedgerEntry) error {
		n++
		settleOne(t, fx.s, "acme", Charge{Model: "late", Cost: 1})
		if err := fx.s.Flush(ctx); err != nil {
			return err
		}
		return nil
	}, nil)
	if err != nil || n != len(before) {
		t.Fatalf("export while settling: %d rows, %v; want %d", n, err, len(before))
	}

	stop := errors.New("reader gone")
	n = 0
	err = fx.s.ExportLedger(ctx, LedgerFilter{}, func(LedgerEntry) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("export with a failing reader: %d rows, %v", n, err)
	}
	if err := fx.s.ExportLedger(ctx, LedgerFilter{Kind: "refund"}, func(LedgerEntry) error { return nil }); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad kind: %v", err)
	}
	fx.s.Close()
	if err := fx.s.ExportLedger(ctx, LedgerFilter{}, func(LedgerEntry) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed store: %v", err)
	}
}

// TestExportLedgerBoundedMemory: 50,000 rows (10,000 under the race
// detector) are read in pages of a thousand, and the live heap while they
// stream stays far below what the rows would take in memory at once.
func TestExportLedgerBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("50k rows")
	}
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "100")
	rows := 50_000
	if raceEnabled {
		rows = 10_000
	}
	// Rows are inserted directly: this test is about reading them.
	q := `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < ?)
		INSERT INTO ledger (created_at, account_id, key_id, kind, amount, balance_after, model,
			prompt_tokens, completion_tokens, status, duration_ms, request_id, note)
		SELECT 1900000000000 + i, 'acme', 'key_0123456789abcdef', 'usage', -i, 100 - i, 'gpt-some-model-name',
			i, i, 200, 10, printf('req-%064d', i), printf('%0100d', i) FROM n`
	if testOnPostgres {
		q = strings.NewReplacer(`printf('req-%064d', i)`, `'req-' || lpad(i::text, 64, '0')`,
			`printf('%0100d', i)`, `lpad(i::text, 100, '0')`, `SELECT 1 UNION`, `SELECT 1::bigint UNION`).Replace(q)
	}
	if _, err := s.w.Exec(q, rows); err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := heap()
	var peak uint64
	n := 0
	var last int64
	var pages []int
	err := s.exportLedger(context.Background(), LedgerFilter{AccountID: "acme"}, exportPageSize, func(e LedgerEntry) error {
		if e.ID <= last {
			return errors.New("rows out of order")
		}
		last = e.ID
		if n++; n%5000 == 0 {
			peak = max(peak, heap())
		}
		return nil
	}, func(n int) { pages = append(pages, n) })
	if err != nil {
		t.Fatal(err)
	}
	if n != rows+1 { // and the top-up
		t.Fatalf("exported %d rows, want %d", n, rows+1)
	}
	if len(pages) != rows/exportPageSize+1 {
		t.Fatalf("read %d pages, want %d", len(pages), rows/exportPageSize+1)
	}
	// All rows at once would be over 400 bytes each with their strings
	// (20 MB for 50,000); one page is some 400 kB.
	const bound = 2 << 20
	if peak > base && peak-base > bound {
		t.Fatalf("heap grew by %d bytes while exporting, bound %d", peak-base, bound)
	}
	t.Logf("heap growth while exporting %d rows: %d bytes", n, int64(peak)-int64(base))
}
