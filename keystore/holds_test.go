package keystore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// nano converts a decimal amount for tests.
func nano(t testing.TB, s string) int64 {
	t.Helper()
	n, err := ParseAmount(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustReserve(t testing.TB, s *Store, account string, amount int64) *Hold {
	t.Helper()
	h, err := s.ReserveFor(Identity{AccountID: account}, amount)
	if err != nil {
		t.Fatalf("ReserveFor(%s, %s): %v", account, FormatAmount(amount), err)
	}
	return h
}

func TestReserveAdmissionRule(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "1")
	mustAccount(t, s, "empty", "")
	mustAccount(t, s, "off", "5")
	off := true
	if _, err := s.UpdateAccount(ctx, "off", nil, &off); err != nil {
		t.Fatal(err)
	}

	h1 := mustReserve(t, s, "acme", nano(t, "0.60"))
	if h1.Amount() != nano(t, "0.60") || h1.AccountID() != "acme" {
		t.Fatalf("hold %s on %q", FormatAmount(h1.Amount()), h1.AccountID())
	}
	// 0.40 still available: admitted, and held in full although it exceeds it
	h2 := mustReserve(t, s, "acme", nano(t, "0.60"))
	bal, held, err := s.Available("acme")
	if err != nil || bal != nano(t, "1") || held != nano(t, "1.20") {
		t.Fatalf("Available = %d, %d, %v", bal, held, err)
	}
	// available is now -0.20: refused, and the message says so
	_, err = s.ReserveFor(Identity{AccountID: "acme"}, 1)
	if !errors.Is(err, ErrInsufficientBalance) || !strings.Contains(err.Error(), "-0.20") {
		t.Fatalf("Reserve with -0.20 available: %v, want ErrInsufficientBalance mentioning -0.20", err)
	}
	// a zero hold is also refused when nothing is available
	if _, err := s.ReserveFor(Identity{AccountID: "acme"}, 0); !errors.Is(err, ErrInsufficientBalance) {
		t.Fatalf("zero hold with nothing available: %v", err)
	}
	if n, amt := s.HoldsInFlight(); n != 2 || amt != nano(t, "1.20") {
		t.Fatalf("HoldsInFlight = %d, %d", n, amt)
	}
	// releasing one makes room again; exactly zero available is refused
	h2.Release()
	if _, err := h1.Settle(Charge{Cost: nano(t, "0.40")}); err != nil {
		t.Fatal(err)
	}
	if bal, held, _ := s.Available("acme"); bal != nano(t, "0.60") || held != 0 {
		t.Fatalf("after settle: balance %d held %d", bal, held)
	}
	h3 := mustReserve(t, s, "acme", nano(t, "0.60"))
	if _, err := s.ReserveFor(Identity{AccountID: "acme"}, 1); !errors.Is(err, ErrInsufficientBalance) || !strings.Contains(err.Error(), "0.00") {
		t.Fatalf("Reserve with exactly 0 available: %v", err)
	}
	h3.Release()
	if n, amt := s.HoldsInFlight(); n != 0 || amt != 0 {
		t.Fatalf("HoldsInFlight after all ended = %d, %d", n, amt)
	}

	if _, err := s.ReserveFor(Identity{AccountID: "empty"}, 1); !errors.Is(err, ErrInsufficientBalance) {
		t.Fatalf("Reserve on zero balance: %v", err)
	}
	if _, err := s.ReserveFor(Identity{AccountID: "off"}, 1); !errors.Is(err, ErrAccountDisabled) {
		t.Fatalf("Reserve on disabled account: %v", err)
	}
	if _, err := s.ReserveFor(Identity{AccountID: "ghost"}, 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Reserve on unknown account: %v", err)
	}
	if _, _, err := s.Available("ghost"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Available on unknown account: %v", err)
	}
	for _, bad := range []int64{-1, maxAmountUnits*NanoPerUnit + 1} {
		if _, err := s.ReserveFor(Identity{AccountID: "acme"}, bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("ReserveFor(%d): %v, want ErrInvalid", bad, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReserveFor(Identity{AccountID: "acme"}, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reserve on closed store: %v", err)
	}
}

// TestReserveBound runs many concurrent requests against a small balance
// until admission stops, and checks the documented bound: final balance >=
// 1 nano - the largest single cost - the sum of overruns (cost - hold).
func TestReserveBound(t *testing.T) {
	for _, overrun := range []bool{false, true} {
		t.Run(fmt.Sprintf("overrun=%v", overrun), func(t *testing.T) {
			s := openTemp(t, Options{})
			mustAccount(t, s, "acme", "1")
			var (
				mu       sync.Mutex
				maxCost  int64
				overruns int64
				charged  int64
			)
			var wg sync.WaitGroup
			for g := 0; g < 32; g++ {
				wg.Add(1)
				go func(seed uint64) {
					defer wg.Done()
					r := rand.New(rand.NewPCG(seed, 1))
					for {
						hold := 1 + r.Int64N(nano(t, "0.05"))
						h, err := s.ReserveFor(Identity{AccountID: "acme"}, hold)
						if errors.Is(err, ErrInsufficientBalance) {
							return
						}
						if err != nil {
							t.Error(err)
							return
						}
						cost := r.Int64N(hold + 1)
						if overrun && r.IntN(4) == 0 {
							cost = hold + r.Int64N(hold+1)
						}
						if r.IntN(10) == 0 {
							h.Release()
							continue
						}
						if _, err := h.Settle(Charge{Cost: cost, Model: "m"}); err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						maxCost = max(maxCost, cost)
						overruns += max(0, cost-hold)
						charged += cost
						mu.Unlock()
					}
				}(uint64(g))
			}
			wg.Wait()
			bal, held, _ := s.Available("acme")
			if held != 0 {
				t.Fatalf("%d still held", held)
			}
			if bal != nano(t, "1")-charged {
				t.Fatalf("balance %d, want 1.00 - %d", bal, charged)
			}
			if floor := 1 - maxCost - overruns; bal < floor {
				t.Fatalf("final balance %s below the bound %s (max cost %s, overruns %s)",
					FormatAmount(bal), FormatAmount(floor), FormatAmount(maxCost), FormatAmount(overruns))
			}
			checkStore(t, s)
		})
	}
}

func TestHoldSettleReleaseIdempotent(t *testing.T) {
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "10")

	h := mustReserve(t, s, "acme", nano(t, "1"))
	e, err := h.Settle(Charge{Cost: nano(t, "0.25"), Model: "gpt", KeyID: "key_x"})
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != 0 || e.Kind != KindUsage || e.Amount != -nano(t, "0.25") || e.BalanceAfter != nano(t, "9.75") ||
		e.AccountID != "acme" || e.Model != "gpt" || e.KeyID != "key_x" {
		t.Fatalf("settled entry %+v", e)
	}
	if _, err := h.Settle(Charge{Cost: nano(t, "0.25")}); !errors.Is(err, ErrSettled) {
		t.Fatalf("second Settle: %v, want ErrSettled", err)
	}
	h.Release() // no-op after Settle
	h.Release()
	if bal, held, _ := s.Available("acme"); bal != nano(t, "9.75") || held != 0 {
		t.Fatalf("balance %d held %d after settle + releases", bal, held)
	}

	h2 := mustReserve(t, s, "acme", nano(t, "1"))
	h2.Release()
	h2.Release()
	if _, err := h2.Settle(Charge{Cost: 1}); !errors.Is(err, ErrSettled) {
		t.Fatalf("Settle after Release: %v, want ErrSettled", err)
	}
	if bal, held, _ := s.Available("acme"); bal != nano(t, "9.75") || held != 0 {
		t.Fatalf("balance %d held %d after release", bal, held)
	}

	// invalid charges leave the hold open
	h3 := mustReserve(t, s, "acme", nano(t, "1"))
	for _, c := range []Charge{{Cost: -1}, {Cost: maxAmountUnits*NanoPerUnit + 1}, {PromptTokens: -1}, {ReasoningTokens: -3}, {Duration: -1}} {
		if _, err := h3.Settle(c); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Settle(%+v): %v, want ErrInvalid", c, err)
		}
	}
	if n, _ := s.HoldsInFlight(); n != 1 {
		t.Fatalf("refused settles closed the hold (%d in flight)", n)
	}
	// over-long labels are truncated, not refused
	long := strings.Repeat("é", 300)
	e, err = h3.Settle(Charge{Cost: 1, Model: long, RequestID: long, Note: strings.Repeat("n", 2000) + "\xff"})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Model) > maxLabelBytes || len(e.RequestID) > maxLabelBytes || !strings.HasPrefix(long, e.Model) ||
		len([]rune(e.Note)) != maxNoteRunes {
		t.Fatalf("labels not clipped: model %d bytes, request id %d bytes, note %d runes", len(e.Model), len(e.RequestID), len([]rune(e.Note)))
	}
	var zero Hold
	zero.Release()
	if _, err := zero.Settle(Charge{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("zero Hold Settle: %v", err)
	}
	checkStore(t, s)
}

// TestConcurrentSettleOneAccount: 100 goroutines reserve and settle on one
// account while others race Settle against Release (and Settle against
// Settle) on the same hold; exactly one of each race wins.
func TestConcurrentSettleOneAccount(t *testing.T) {
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "1000")
	cost := nano(t, "0.001")
	var settled atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 100; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				h, err := s.ReserveFor(Identity{AccountID: "acme"}, nano(t, "0.01"))
				if err != nil {
					t.Error(err)
					return
				}
				var inner sync.WaitGroup
				var wins atomic.Int64
				racers := 2 + g%3
				for r := 0; r < racers; r++ {
					inner.Add(1)
					go func(r int) {
						defer inner.Done()
						if r == 1 && g%2 == 0 {
							h.Release()
							return
						}
						_, err := h.Settle(Charge{Cost: cost, Model: "m", KeyID: "k"})
						switch {
						case err == nil:
							wins.Add(1)
						case !errors.Is(err, ErrSettled):
							t.Error(err)
						}
					}(r)
				}
				inner.Wait()
				if wins.Load() > 1 {
					t.Errorf("hold settled %d times", wins.Load())
				}
				settled.Add(wins.Load())
			}
		}(g)
	}
	wg.Wait()
	if n, amt := s.HoldsInFlight(); n != 0 || amt != 0 {
		t.Fatalf("HoldsInFlight = %d, %d after all ended", n, amt)
	}
	bal, held, _ := s.Available("acme")
	if want := nano(t, "1000") - settled.Load()*cost; bal != want || held != 0 {
		t.Fatalf("balance %d held %d, want %d (%d settled)", bal, held, want, settled.Load())
	}
	checkStore(t, s)
	if n := queryInt(t, s.r, `SELECT count(*) FROM ledger WHERE kind = 'usage'`); n != settled.Load() {
		t.Fatalf("%d usage rows, want %d", n, settled.Load())
	}
}
