package keystore

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestReserveRequireCovered(t *testing.T) {
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "1")
	id := Identity{AccountID: "acme"}

	h1, err := s.ReserveFor(id, nano(t, "0.60"), RequireCovered)
	if err != nil {
		t.Fatal(err)
	}
	// 0.40 available: a hold of 0.60 is refused, with the amounts seen
	_, err = s.ReserveFor(id, nano(t, "0.60"), RequireCovered)
	var be *BalanceError
	if !errors.As(err, &be) || !errors.Is(err, ErrInsufficientBalance) {
		t.Fatalf("uncovered hold: %v, want a *BalanceError wrapping ErrInsufficientBalance", err)
	}
	if be.AccountID != "acme" || be.Balance != nano(t, "1") || be.Held != nano(t, "0.60") ||
		be.Wanted != nano(t, "0.60") || be.Available() != nano(t, "0.40") {
		t.Fatalf("BalanceError %+v", be)
	}
	if _, held, _ := s.Available("acme"); held != nano(t, "0.60") {
		t.Fatalf("a refused hold changed the holds: %d", held)
	}
	// exactly the available amount is covered
	h2, err := s.ReserveFor(id, nano(t, "0.40"), RequireCovered)
	if err != nil {
		t.Fatalf("a hold of exactly what is available: %v", err)
	}
	// nothing left: even a zero hold is refused, as by the plain rule
	if _, err := s.ReserveFor(id, 0, RequireCovered); !errors.As(err, &be) || be.Available() != 0 {
		t.Fatalf("zero hold on nothing available: %v", err)
	}
	h1.Release()
	h2.Release()
}

func TestReserveUpTo(t *testing.T) {
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "1")
	id := Identity{AccountID: "acme"}

	full, err := s.ReserveFor(id, nano(t, "0.70"), UpTo(nano(t, "0.10")))
	if err != nil || full.Amount() != nano(t, "0.70") {
		t.Fatalf("covered UpTo: %v, amount %d", err, full.Amount())
	}
	part, err := s.ReserveFor(id, nano(t, "0.70"), UpTo(nano(t, "0.10")))
	if err != nil || part.Amount() != nano(t, "0.30") {
		t.Fatalf("partial UpTo: %v, amount %d, want 0.30", err, part.Amount())
	}
	part.Release()
	// 0.30 available again; a minimum above it is refused
	_, err = s.ReserveFor(id, nano(t, "0.70"), UpTo(nano(t, "0.31")))
	var be *BalanceError
	if !errors.As(err, &be) || be.Wanted != nano(t, "0.31") || be.Available() != nano(t, "0.30") {
		t.Fatalf("UpTo above available: %v", err)
	}
	for _, m := range []int64{-1, nano(t, "0.71")} {
		if _, err := s.ReserveFor(id, nano(t, "0.70"), UpTo(m)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("UpTo(%d) of 0.70: %v, want ErrInvalid", m, err)
		}
	}
	full.Release()
}

// Concurrent admissions under RequireCovered never hold more than the
// balance, and UpTo gives out exactly what is left.
func TestReserveOptionsConcurrent(t *testing.T) {
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "1")
	id := Identity{AccountID: "acme"}
	hold := nano(t, "0.30")

	var admitted, refused atomic.Int64
	var mu sync.Mutex
	var holds []*Hold
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			h, err := s.ReserveFor(id, hold, RequireCovered)
			if err != nil {
				if !errors.Is(err, ErrInsufficientBalance) {
					t.Errorf("unexpected error: %v", err)
				}
				refused.Add(1)
				return
			}
			admitted.Add(1)
			mu.Lock()
			holds = append(holds, h)
			mu.Unlock()
		})
	}
	wg.Wait()
	if admitted.Load() != 3 || refused.Load() != 37 {
		t.Fatalf("admitted %d refused %d, want 3 and 37", admitted.Load(), refused.Load())
	}
	rest, err := s.ReserveFor(id, hold, UpTo(1))
	if err != nil || rest.Amount() != nano(t, "0.10") {
		t.Fatalf("UpTo after three holds: %v, amount %d", err, rest.Amount())
	}
	if bal, held, _ := s.Available("acme"); held != bal {
		t.Fatalf("held %d of a balance of %d, want all of it", held, bal)
	}
	for _, h := range append(holds, rest) {
		h.Release()
	}
}
