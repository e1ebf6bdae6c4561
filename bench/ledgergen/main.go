// Command ledgergen builds a gateway database with a ledger of many rows,
// for benchmarks of the usage reports (bench/usage.sh).
//
// It goes through the store's own write path, never SQL: keystore.Open,
// accounts and keys made with the store API, a top-up per account, then
// one Reserve and Hold.Settle per usage row, so that whatever the store
// maintains beside the ledger (indexes, rollups) is populated as a live
// gateway would populate it. An injected clock spreads the rows evenly over
// the last -days days, oldest first, as a gateway would have written them.
// The ledger writer commits them in big batches (CommitInterval 200ms, no
// backlog bound).
//
// Accounts are acct1..acctN, each with -keys keys; every row picks an
// account, one of its keys and a model at random (seeded, so that two runs
// with the same flags make the same ledger apart from key ids), with token
// counts and a cost priced per model.
//
//	go run ./bench/ledgergen -n 1000000 -db /tmp/ledger-1m.db
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// model is a model name with its price per million prompt and completion
// tokens, in nano-units per token (1 unit per 1M tokens = 1000 nano/token).
type model struct {
	name               string
	prompt, completion int64
}

var models = []model{
	{"gpt-4o-mini", 150, 600},
	{"gpt-4o", 2500, 10000},
	{"o3-mini", 1100, 4400},
	{"claude-sonnet", 3000, 15000},
	{"llama-3.1-70b", 600, 600},
	{"embed-small", 20, 0},
}

func main() {
	n := flag.Int("n", 1_000_000, "usage rows to write")
	db := flag.String("db", "", "database file to create (must not exist)")
	accounts := flag.Int("accounts", 20, "accounts (acct1..acctN)")
	keys := flag.Int("keys", 3, "keys per account")
	days := flag.Int("days", 30, "days the rows are spread over, ending now")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	if *db == "" || *n < 1 || *accounts < 1 || *keys < 1 || *days < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if _, err := os.Stat(*db); !errors.Is(err, fs.ErrNotExist) {
		log.Fatalf("%s exists (or cannot be checked: %v); give a new path", *db, err)
	}
	if err := generate(*db, *n, *accounts, *keys, *days, *seed); err != nil {
		log.Fatal(err)
	}
}

func generate(path string, n, accounts, keysPer, days int, seed uint64) error {
	ctx := context.Background()
	end := time.Now().UTC()
	start := end.Add(-time.Duration(days) * 24 * time.Hour)
	var clock atomic.Int64 // unix nanoseconds the store's clock says
	clock.Store(start.UnixNano())
	s, err := keystore.Open(ctx, keystore.Options{
		Path:             path,
		Now:              func() time.Time { return time.Unix(0, clock.Load()).UTC() },
		CommitInterval:   200 * time.Millisecond,
		MaxPendingWrites: -1,
		MaxPendingAge:    -1,
	})
	if err != nil {
		return err
	}
	defer s.Close()

	type key struct{ account, id string }
	var all []key
	for a := 1; a <= accounts; a++ {
		id := fmt.Sprintf("acct%d", a)
		if _, err := s.CreateAccount(ctx, id, fmt.Sprintf("Account %d", a)); err != nil {
			return err
		}
		if _, _, err := s.AdjustBalance(ctx, id, 1_000_000*keystore.NanoPerUnit, "benchmark top-up"); err != nil {
			return err
		}
		for k := 1; k <= keysPer; k++ {
			kk, _, err := s.CreateKey(ctx, id, fmt.Sprintf("key %d", k), keystore.KeyPolicy{})
			if err != nil {
				return err
			}
			all = append(all, key{id, kk.ID})
		}
	}

	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	step := end.Sub(start) / time.Duration(n)
	began := time.Now()
	for i := 0; i < n; i++ {
		clock.Store(start.Add(time.Duration(i) * step).UnixNano())
		k := all[rng.IntN(len(all))]
		m := models[rng.IntN(len(models))]
		prompt := 50 + rng.Int64N(4000)
		completion := rng.Int64N(1500)
		if m.completion == 0 {
			completion = 0
		}
		cached := 0 + rng.Int64N(prompt/2+1)
		cost := prompt*m.prompt + completion*m.completion
		h, err := s.ReserveFor(keystore.Identity{AccountID: k.account}, cost+1)
		if err != nil {
			return fmt.Errorf("row %d: %w", i, err)
		}
		status := 200
		if rng.IntN(100) == 0 {
			status = 500
		}
		if _, err := h.Settle(keystore.Charge{
			KeyID: k.id, Model: m.name, RequestID: fmt.Sprintf("gen-%d", i), Cost: cost,
			PromptTokens: prompt, CompletionTokens: completion, CachedTokens: cached,
			Status: status, Duration: time.Duration(100+rng.IntN(5000)) * time.Millisecond,
			Estimated: rng.IntN(500) == 0,
		}); err != nil {
			return fmt.Errorf("row %d: %w", i, err)
		}
		if (i+1)%1_000_000 == 0 {
			fmt.Fprintf(os.Stderr, "%d rows settled\n", i+1)
		}
	}
	if err := s.Flush(ctx); err != nil {
		return err
	}
	took := time.Since(began)
	if err := s.Close(); err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	fmt.Printf("%d rows (%d accounts x %d keys, %d models, %d days) in %s: %.0f rows/s; %s is %d MB\n",
		n, accounts, keysPer, len(models), days, took.Round(time.Millisecond), float64(n)/took.Seconds(),
		path, fi.Size()>>20)
	return nil
}
