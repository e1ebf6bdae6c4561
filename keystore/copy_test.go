package keystore

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// schemaTables lists the gateway's tables of an open store.
func schemaTables(t *testing.T, s *Store) []string {
	t.Helper()
	q := `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`
	if s.dialect == dialectPostgres {
		q = `SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'schema_migrations' ORDER BY tablename`
	}
	rows, err := s.r.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// Every table of the schema is copied, on either side: a migration that
// adds a table must add it to copyTables too.
func TestCopyTablesCoverSchema(t *testing.T) {
	var want []string
	for _, c := range copyTables {
		want = append(want, c.name)
	}
	sort.Strings(want)
	for _, db := range []string{filepath.Join(t.TempDir(), "ks.db"), pgDB(t)} {
		s := openAt(t, db, Options{})
		if got := schemaTables(t, s); !reflect.DeepEqual(got, want) {
			t.Errorf("%s tables %v, copyTables %v", s.Backend(), got, want)
		}
	}
}

// db copy: an SQLite store with every kind of row (keys with policies and
// a rotation lineage, usage and adjustments, pruned rows, rollups, provider
// objects) copied into an empty PostgreSQL database serves the same keys,
// balances, ledger and usage totals, and goes on from there.
func TestCopyToPostgres(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	from := filepath.Join(t.TempDir(), "ks.db")
	s, err := Open(ctx, Options{Path: from, Now: clk.Now, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	mustAccount(t, s, "acme", "100")
	mustAccount(t, s, "beta", "20")
	mustAccount(t, s, "idle", "")
	lim := &SpendLimit{Amount: nano(t, "50"), Period: PeriodDay}
	k1, pt1, err := s.CreateKey(ctx, "acme", "prod", KeyPolicy{AllowedModels: []string{"gpt-4o*"}, SpendLimit: lim})
	if err != nil {
		t.Fatal(err)
	}
	_, pt2 := mustKey(t, s, "beta", "dev")
	_, ptDeleted := mustKey(t, s, "beta", "gone")
	for i := 0; i < 30; i++ {
		id, err := s.Authenticate(ctx, pt1)
		if err != nil {
			t.Fatal(err)
		}
		h, err := s.ReserveFor(id, nano(t, "0.5"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Settle(Charge{KeyID: k1.ID, Model: "gpt-4o-mini", Cost: nano(t, "0.25"), PromptTokens: 10, CompletionTokens: 5, Status: 200}); err != nil {
			t.Fatal(err)
		}
		settleOne(t, s, "beta", Charge{Model: "o3", Cost: nano(t, "0.1"), Estimated: i%3 == 0})
		clk.Advance(20 * time.Minute)
	}
	if _, _, err := s.AdjustBalance(ctx, "beta", nano(t, "-1.5"), "correction"); err != nil {
		t.Fatal(err)
	}
	newKey, ptRotated, _, err := s.RotateKey(ctx, k1.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := s.Keys(ctx, "beta")
	for _, k := range keys {
		if k.Name == "gone" {
			if err := s.DeleteKey(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.RecordObject(Object{ID: "resp_1", AccountID: "acme", KeyID: k1.ID, InputTokens: 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneLedger(ctx, clk.Now().Add(-5*time.Hour)); err != nil || n == 0 {
		t.Fatalf("PruneLedger: %d, %v", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	to := pgDB(t)
	var progressed []string
	rep, err := CopyToPostgres(ctx, from, to, func(table string, _ int64) { progressed = append(progressed, table) })
	if err != nil {
		t.Fatalf("CopyToPostgres: %v", err)
	}
	if rep.AccountsChecked != 3 || len(progressed) != len(copyTables) {
		t.Fatalf("report %+v, progress %v", rep, progressed)
	}
	rows := map[string]int64{}
	for _, tb := range rep.Tables {
		rows[tb.Name] = tb.Rows
	}
	if rows["accounts"] != 3 || rows["api_keys"] != 4 || rows["ledger_pruned"] == 0 || rows["provider_objects"] != 1 || rows["usage_daily"] == 0 {
		t.Fatalf("rows copied: %v", rows)
	}

	src := openAt(t, from, Options{Now: clk.Now})
	dst := openAt(t, to, Options{Now: clk.Now})
	// keys: the same plaintexts work (or fail) the same way
	for _, pt := range []string{pt1, pt2, ptRotated} {
		a, errA := src.Authenticate(ctx, pt)
		b, errB := dst.Authenticate(ctx, pt)
		if errA != nil || errB != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("Authenticate on the copy: %+v %v, source %+v %v", b, errB, a, errA)
		}
	}
	if _, err := dst.Authenticate(ctx, ptDeleted); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("a deleted key on the copy: %v", err)
	}
	ka, _ := src.Keys(ctx, "")
	kb, _ := dst.Keys(ctx, "")
	if !reflect.DeepEqual(ka, kb) {
		t.Fatalf("keys differ:\n%+v\n%+v", ka, kb)
	}
	if !reflect.DeepEqual(src.Accounts(ctx), dst.Accounts(ctx)) {
		t.Fatalf("accounts differ: %+v / %+v", src.Accounts(ctx), dst.Accounts(ctx))
	}
	la, _ := src.Ledger(ctx, LedgerFilter{Limit: 10000})
	lb, _ := dst.Ledger(ctx, LedgerFilter{Limit: 10000})
	if len(la) == 0 || !reflect.DeepEqual(la, lb) {
		t.Fatalf("ledgers differ (%d / %d rows)", len(la), len(lb))
	}
	for _, by := range []string{"", "model", "day", "key", "account"} {
		ua, _ := src.UsageTotals(ctx, LedgerFilter{}, by)
		ub, err := dst.UsageTotals(ctx, LedgerFilter{}, by)
		if err != nil || !reflect.DeepEqual(ua, ub) {
			t.Fatalf("usage by %q: %+v / %+v (%v)", by, ua, ub, err)
		}
	}
	if o, err := dst.Object(ctx, "resp_1"); err != nil || o.AccountID != "acme" {
		t.Fatalf("object on the copy: %+v %v", o, err)
	}
	// the spend counter of the rotated lineage carries over
	sa, _, _, okA := src.KeySpend(ctx, newKey.ID)
	sb, _, _, okB := dst.KeySpend(ctx, newKey.ID)
	if !okA || !okB || sa != sb {
		t.Fatalf("key spend %d (%v) on the copy, %d (%v) on the source", sb, okB, sa, okA)
	}
	// the copy goes on: new rows get new ids, chains hold
	e := settleOne(t, dst, "beta", Charge{Model: "o3", Cost: nano(t, "0.1")})
	if err := dst.WaitCommitted(ctx, e); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dst.AdjustBalance(ctx, "acme", nano(t, "1"), "after copy"); err != nil {
		t.Fatal(err)
	}
	latest, _ := dst.Ledger(ctx, LedgerFilter{Limit: 1})
	if latest[0].ID <= la[0].ID {
		t.Fatalf("new ledger id %d after copied ids up to %d", latest[0].ID, la[0].ID)
	}
	checkPrunedStore(t, dst)

	// a second copy into the now non-empty database is refused, and
	// changes nothing
	src.Close()
	if _, err := CopyToPostgres(ctx, from, to, nil); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("copy into a non-empty database: %v", err)
	}
	if _, err := CopyToPostgres(ctx, from, filepath.Join(t.TempDir(), "x.db"), nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("copy into a file: %v", err)
	}
	if _, err := CopyToPostgres(ctx, filepath.Join(t.TempDir(), "missing.db"), pgDB(t), nil); err == nil {
		t.Fatal("copy of a missing file succeeded")
	}
}

func TestStatusAndMigrate(t *testing.T) {
	ctx := context.Background()
	for _, db := range []string{filepath.Join(t.TempDir(), "ks.db"), pgDB(t)} {
		st, err := Status(ctx, db)
		if err != nil || st.SchemaVersion != 0 || st.Pending != SchemaVersion() || st.BuildVersion != SchemaVersion() || st.Newer {
			t.Fatalf("status of a new %s database: %+v, %v", st.Backend, st, err)
		}
		if IsPostgres(db) != (st.Backend == "postgres") || !st.Exists == IsPostgres(db) {
			t.Fatalf("status %+v of %s", st, db)
		}
		var phases int
		from, to, err := Migrate(ctx, db, func(MigrationProgress) { phases++ })
		if err != nil || from != 0 || to != SchemaVersion() || phases == 0 {
			t.Fatalf("Migrate %s: %d -> %d, %d phases, %v", st.Backend, from, to, phases, err)
		}
		if from, to, err := Migrate(ctx, db, nil); err != nil || from != to {
			t.Fatalf("second Migrate: %d -> %d, %v", from, to, err)
		}
		st, err = Status(ctx, db)
		if err != nil || !st.Exists || st.SchemaVersion != SchemaVersion() || st.Pending != 0 {
			t.Fatalf("status after Migrate: %+v, %v", st, err)
		}
		// a database of a newer build is reported and left alone
		s := openAt(t, db, Options{})
		bump := `PRAGMA user_version = 999`
		if s.dialect == dialectPostgres {
			bump = `INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)`
		}
		if _, err := s.w.Exec(bump); err != nil {
			t.Fatal(err)
		}
		s.Close()
		st, err = Status(ctx, db)
		if err != nil || !st.Newer || st.SchemaVersion != 999 || st.Pending != 0 {
			t.Fatalf("status of a newer database: %+v, %v", st, err)
		}
		if _, _, err := Migrate(ctx, db, nil); err == nil || !strings.Contains(err.Error(), "newer") {
			t.Fatalf("Migrate of a newer database: %v", err)
		}
	}
}
