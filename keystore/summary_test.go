package keystore

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestLedgerStatusFilter(t *testing.T) {
	s := openTemp(t, Options{})
	ctx := context.Background()
	mustAccount(t, s, "acme", "10")
	k, _ := mustKey(t, s, "acme", "app")
	for _, st := range []int{200, 201, 429, 500, 502, 0} {
		settleOne(t, s, "acme", Charge{KeyID: k.ID, Model: "m", Cost: 1000, PromptTokens: int64(st), Status: st})
	}
	for _, c := range []struct {
		status string
		want   int
	}{{"", 7}, {"ok", 2}, {"error", 3}, {"4xx", 1}, {"5xx", 2}, {"502", 1}, {"404", 0}} {
		rows, err := s.Ledger(ctx, LedgerFilter{AccountID: "acme", Status: c.status})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != c.want {
			t.Errorf("status %q: %d rows, want %d", c.status, len(rows), c.want)
		}
		tot, err := s.UsageTotals(ctx, LedgerFilter{AccountID: "acme", Status: c.status}, "")
		if err != nil {
			t.Fatal(err)
		}
		want := bruteUsageTotals(t, s, LedgerFilter{AccountID: "acme", Status: c.status}, "")
		if len(tot) != 1 || tot[0] != want[0] {
			t.Errorf("status %q: totals %+v, want %+v", c.status, tot, want)
		}
		byModel, err := s.UsageTotals(ctx, LedgerFilter{AccountID: "acme", Status: c.status}, "model")
		if err != nil {
			t.Fatal(err)
		}
		if wantN := bruteUsageTotals(t, s, LedgerFilter{AccountID: "acme", Status: c.status}, "model"); len(byModel) != len(wantN) {
			t.Errorf("status %q by model: %+v, want %+v", c.status, byModel, wantN)
		}
	}
	for _, bad := range []string{"2xx", "99", "600", "oops", "0200"} {
		if _, err := s.Ledger(ctx, LedgerFilter{Status: bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("status %q: %v, want ErrInvalid", bad, err)
		}
	}
}

func TestKeyNamesKeepDeletedAndRotatedKeys(t *testing.T) {
	s := openTemp(t, Options{})
	ctx := context.Background()
	mustAccount(t, s, "acme", "")
	a, _ := mustKey(t, s, "acme", "first")
	b, _ := mustKey(t, s, "acme", "second")
	nb, _, _, err := s.RotateKey(ctx, b.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKey(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.KeyNames(ctx, []string{a.ID, b.ID, nb.ID, a.ID, "key_none", ""})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]KeyRef{a.ID: {Name: "first", Deleted: true}, b.ID: {Name: "second", Deleted: true, ReplacedBy: nb.ID},
		nb.ID: {Name: "second"}}
	if len(got) != len(want) {
		t.Fatalf("KeyNames = %+v", got)
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("KeyNames[%s] = %+v, want %+v", id, got[id], w)
		}
	}
	// more ids than one query takes
	ids := make([]string, 0, 1200)
	for i := range 1200 {
		ids = append(ids, "key_"+time.Duration(i).String())
	}
	ids = append(ids, nb.ID)
	if got, err := s.KeyNames(ctx, ids); err != nil || got[nb.ID].Name != "second" || len(got) != 1 {
		t.Fatalf("KeyNames of many ids = %+v, %v", got, err)
	}
}

func TestAccountSummaries(t *testing.T) {
	clk := &fakeClock{t: time.Date(2030, 3, 15, 12, 0, 0, 0, time.UTC)}
	s := openTemp(t, Options{Now: clk.Now})
	ctx := context.Background()
	mustAccount(t, s, "acme", "10")
	mustAccount(t, s, "beta", "")
	k, _ := mustKey(t, s, "acme", "a")
	mustKey(t, s, "acme", "b")
	soon := clk.Now().Add(time.Hour)
	mustKey(t, s, "acme", "expiring", &soon)
	gone, _ := mustKey(t, s, "acme", "gone")
	if err := s.DeleteKey(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	clk.Advance(-30 * 24 * time.Hour) // February: not this month
	settleOne(t, s, "acme", Charge{KeyID: k.ID, Model: "m", Cost: 7000, Status: 200})
	clk.Advance(30 * 24 * time.Hour)
	settleOne(t, s, "acme", Charge{KeyID: k.ID, Model: "m", Cost: 3000, Status: 200})
	settleOne(t, s, "acme", Charge{KeyID: k.ID, Model: "m", Cost: 2000, Status: 500})
	h := mustReserve(t, s, "acme", 500)
	defer h.Release()
	clk.Advance(2 * time.Hour) // the expiring key expires
	got, err := s.AccountSummaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "acme" || got[1].ID != "beta" {
		t.Fatalf("summaries %+v", got)
	}
	if a := got[0]; a.SpendMonth != 5000 || a.Keys != 2 || a.Held != 500 || a.Balance != 10*NanoPerUnit-12000 {
		t.Fatalf("acme %+v", a)
	}
	if b := got[1]; b.SpendMonth != 0 || b.Keys != 0 {
		t.Fatalf("beta %+v", b)
	}
}
