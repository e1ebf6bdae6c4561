package keystore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAccountSummaries times the admins' list of accounts (spend this
// month and live keys of every account) on 5,000 accounts with 2 keys each
// and 200,000 usage rows over the month so far:
//
//	go test -run='^$' -bench=AccountSummaries -benchtime=20x ./keystore/
func BenchmarkAccountSummaries(b *testing.B) {
	sqliteOnly(b, "the benchmark's figures are of SQLite")
	const accounts, rows = 5000, 200_000
	ctx := context.Background()
	now := time.Date(2030, 3, 20, 12, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(now.Add(-19 * 24 * time.Hour).UnixNano())
	s, err := Open(ctx, Options{Path: tempDB(b), Now: func() time.Time { return time.Unix(0, clock.Load()) },
		CommitInterval: time.Second, MaxPendingWrites: -1, MaxPendingAge: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	keys := make([]string, 0, 2*accounts)
	for a := range accounts {
		id := fmt.Sprintf("acct%04d", a)
		if _, err := s.CreateAccount(ctx, id, id); err != nil {
			b.Fatal(err)
		}
		if _, _, err := s.AdjustBalance(ctx, id, 1000*NanoPerUnit, "bench"); err != nil {
			b.Fatal(err)
		}
		for k := range 2 {
			key, _, err := s.CreateKey(ctx, id, fmt.Sprintf("k%d", k), KeyPolicy{})
			if err != nil {
				b.Fatal(err)
			}
			keys = append(keys, key.ID)
		}
	}
	step := int64(19*24*time.Hour) / rows
	for i := range rows {
		clock.Add(step)
		a := i % accounts
		h, err := s.ReserveFor(Identity{AccountID: fmt.Sprintf("acct%04d", a)}, 1000)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := h.Settle(Charge{KeyID: keys[2*a+i%2], Model: "m", Cost: 700, PromptTokens: 10, Status: 200 + 300*(i%50/49)}); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("summaries", func(b *testing.B) {
		for b.Loop() {
			got, err := s.AccountSummaries(ctx)
			if err != nil || len(got) != accounts || got[0].Keys != 2 || got[0].SpendMonth == 0 {
				b.Fatalf("%d summaries, %v", len(got), err)
			}
		}
	})
	b.Run("month_by_account_only", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.UsageTotals(ctx, LedgerFilter{Since: time.Date(2030, 3, 1, 0, 0, 0, 0, time.UTC)}, "account"); err != nil {
				b.Fatal(err)
			}
		}
	})
	// a page of the usage log of one account, status filter and totals
	b.Run("log_page_errors", func(b *testing.B) {
		f := LedgerFilter{AccountID: "acct0042", Status: "error", Limit: 50}
		for b.Loop() {
			if _, err := s.Ledger(ctx, f); err != nil {
				b.Fatal(err)
			}
			if _, err := s.UsageTotals(ctx, f, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("log_page_all_accounts_errors", func(b *testing.B) {
		f := LedgerFilter{Status: "error", Limit: 50}
		for b.Loop() {
			if _, err := s.Ledger(ctx, f); err != nil {
				b.Fatal(err)
			}
			if _, err := s.UsageTotals(ctx, f, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}
