package keystore

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metask/caddy-ai-gateway/internal/pgtest"
)

// rateFixture is a store on a fake clock with one account (plenty of
// balance) and one key.
type rateFixture struct {
	s   *Store
	clk *fakeClock
	id  Identity
	key Key
}

func newRateFixture(t *testing.T) *rateFixture {
	t.Helper()
	clk := newFakeClock()
	s := openTemp(t, Options{Now: clk.Now})
	mustAccount(t, s, "acme", "1000")
	k, pt := mustKey(t, s, "acme", "one")
	id, err := s.Authenticate(context.Background(), pt)
	if err != nil {
		t.Fatal(err)
	}
	return &rateFixture{s: s, clk: clk, id: id, key: k}
}

// setKeyLimits gives the fixture's key lineage its own limits.
func (f *rateFixture) setKeyLimits(t *testing.T, l RateLimits) {
	t.Helper()
	if _, err := f.s.UpdateKey(context.Background(), f.key.ID, KeyUpdate{SetRateLimits: true, RateLimits: &l}); err != nil {
		t.Fatal(err)
	}
}

// admit reserves a hold for the key (tokens as the estimate) and fails the
// test if it is refused.
func (f *rateFixture) admit(t *testing.T, r *RateRequest) *Hold {
	t.Helper()
	if r == nil {
		r = &RateRequest{}
	}
	h, err := f.s.ReserveFor(f.id, 1, WithRate(r))
	if err != nil {
		t.Fatalf("at %s: refused: %v", f.clk.Now().Format(time.RFC3339Nano), err)
	}
	return h
}

// refused reserves and expects a refusal by a rate limit of kind.
func (f *rateFixture) refused(t *testing.T, r *RateRequest, kind string) *RateLimitError {
	t.Helper()
	if r == nil {
		r = &RateRequest{}
	}
	h, err := f.s.ReserveFor(f.id, 1, WithRate(r))
	var re *RateLimitError
	if !errors.As(err, &re) || !errors.Is(err, ErrRateLimited) {
		if h != nil {
			h.Release()
		}
		t.Fatalf("at %s: %v, want a refusal by %s", f.clk.Now().Format(time.RFC3339Nano), err, kind)
	}
	if re.Kind != kind {
		t.Fatalf("refused by %s (%v), want %s", re.Kind, re, kind)
	}
	return re
}

func settleTokens(t *testing.T, h *Hold, prompt, completion int64) {
	t.Helper()
	if _, err := h.Settle(Charge{Cost: 1, PromptTokens: prompt, CompletionTokens: completion}); err != nil {
		t.Fatal(err)
	}
}

// TestRateRPMExact: a limit of L admits L requests in any 60 s window,
// refuses the L+1st, says how long to wait, and admits again exactly when
// the oldest request leaves the window (not a nanosecond earlier).
func TestRateRPMExact(t *testing.T) {
	f := newRateFixture(t)
	f.setKeyLimits(t, RateLimits{RPM: 3})
	t0 := f.clk.Now()
	for i := range 3 {
		f.admit(t, nil).Release() // a released request still counts: it was admitted
		if i < 2 {
			f.clk.Advance(10 * time.Second)
		}
	}
	f.clk.Advance(10 * time.Second) // t0+30s
	e := f.refused(t, nil, RateRPM)
	if e.Scope != ScopeKey || e.ID != f.key.ID || e.Limit != 3 || e.Used != 3 || e.Requested != 1 || e.RetryAfter != 30*time.Second {
		t.Fatalf("refusal %+v, want key scope, limit 3, used 3, requested 1, retry in 30s", e)
	}
	if e.Status.RequestsLimit != 3 || e.Status.RequestsRemaining != 0 || e.Status.RequestsReset != 30*time.Second {
		t.Fatalf("status %+v", e.Status)
	}
	f.clk.Set(t0.Add(time.Minute - time.Nanosecond))
	if e := f.refused(t, nil, RateRPM); e.RetryAfter != time.Nanosecond {
		t.Fatalf("a nanosecond before: retry %s", e.RetryAfter)
	}
	f.clk.Set(t0.Add(time.Minute))
	h := f.admit(t, nil) // the first request left the window
	if st := h.RateStatus(); !st.HasRequests || st.RequestsLimit != 3 || st.RequestsRemaining != 0 || st.RequestsReset != 10*time.Second {
		t.Fatalf("status after admission %+v, want 0 remaining, reset in 10s", st)
	}
	h.Release()
	f.refused(t, nil, RateRPM) // the window (t0, t0+60s] holds 3 again
	f.clk.Set(t0.Add(70 * time.Second))
	f.admit(t, nil).Release()
}

// TestRateTPMCorrectedAtSettlement: the estimate counts at admission, the
// tokens consumed replace it at settlement (down or up), a release counts
// nothing, and the wait is when enough tokens leave the window.
func TestRateTPMCorrectedAtSettlement(t *testing.T) {
	f := newRateFixture(t)
	f.setKeyLimits(t, RateLimits{TPM: 1000})
	t0 := f.clk.Now()
	h1 := f.admit(t, &RateRequest{Tokens: 600})
	e := f.refused(t, &RateRequest{Tokens: 401}, RateTPM)
	if e.Used != 600 || e.Requested != 401 || e.RetryAfter != time.Minute {
		t.Fatalf("refusal %+v", e)
	}
	f.admit(t, &RateRequest{Tokens: 400}).Release() // exactly the limit: admitted; released: counts 0
	f.clk.Advance(5 * time.Second)
	settleTokens(t, h1, 100, 50) // 600 estimated, 150 used
	h2 := f.admit(t, &RateRequest{Tokens: 850})
	// 150 + 850 = 1000: nothing more
	e = f.refused(t, &RateRequest{Tokens: 1}, RateTPM)
	if e.Used != 1000 || e.RetryAfter != 55*time.Second {
		t.Fatalf("refusal %+v, want used 1000, retry when h1 leaves (55s)", e)
	}
	f.clk.Advance(time.Second)
	settleTokens(t, h2, 900, 900) // more than estimated: 150 + 1800
	e = f.refused(t, &RateRequest{Tokens: 1}, RateTPM)
	if e.Used != 1950 || e.RetryAfter != 59*time.Second {
		t.Fatalf("refusal after an overrun %+v, want used 1950, retry when h2 leaves (59s)", e)
	}
	f.clk.Set(t0.Add(65*time.Second - time.Nanosecond))
	f.refused(t, &RateRequest{Tokens: 1}, RateTPM)
	f.clk.Set(t0.Add(65 * time.Second))
	f.admit(t, &RateRequest{Tokens: 1000}).Release()
	// a request without a token estimate is not checked against tokens
	f.admit(t, &RateRequest{Tokens: 1000})
	f.admit(t, nil).Release()
	// a request larger than the limit can never pass
	if e := f.refused(t, &RateRequest{Tokens: 1001}, RateTPM); !e.TooLarge || e.RetryAfter != 0 {
		t.Fatalf("too large: %+v", e)
	}
}

// TestRateConcurrencyReleasedByEveryEnd: holds count while open and leave
// on Release, Settle, and a failed Settle followed by Release.
func TestRateConcurrencyReleasedByEveryEnd(t *testing.T) {
	f := newRateFixture(t)
	f.setKeyLimits(t, RateLimits{Concurrency: 2})
	h1 := f.admit(t, nil)
	h2 := f.admit(t, nil)
	e := f.refused(t, nil, RateConcurrency)
	if e.Used != 2 || e.Limit != 2 || e.RetryAfter != 0 {
		t.Fatalf("refusal %+v", e)
	}
	h1.Release()
	h1.Release() // twice: gives back once
	h3 := f.admit(t, nil)
	f.refused(t, nil, RateConcurrency)
	settleTokens(t, h2, 1, 1)
	if _, err := h2.Settle(Charge{}); !errors.Is(err, ErrSettled) {
		t.Fatal(err)
	}
	h4 := f.admit(t, nil)
	f.refused(t, nil, RateConcurrency)
	if _, err := h3.Settle(Charge{Cost: -1}); err == nil { // refused charge: still open
		t.Fatal("negative cost settled")
	}
	f.refused(t, nil, RateConcurrency)
	h3.Release()
	h4.Release()
	f.admit(t, nil)
	f.admit(t, nil)
	u, err := f.s.KeyRateUsage(context.Background(), f.key.ID)
	if err != nil || len(u) != 1 || u[0].Kind != RateConcurrency || u[0].Used != 2 || u[0].Limit != 2 {
		t.Fatalf("usage %+v, %v", u, err)
	}
}

// TestRateDayLimits: rpd and tpd count per UTC day and start again at
// midnight exactly.
func TestRateDayLimits(t *testing.T) {
	f := newRateFixture(t) // 2030-01-02 03:04:05 UTC
	midnight := time.Date(2030, 1, 3, 0, 0, 0, 0, time.UTC)
	f.setKeyLimits(t, RateLimits{RPD: 2, TPD: 100})
	f.admit(t, &RateRequest{Tokens: 60}).Release() // released: 0 tokens
	h := f.admit(t, &RateRequest{Tokens: 100})
	settleTokens(t, h, 70, 0)
	e := f.refused(t, &RateRequest{Tokens: 1}, RateRPD)
	if e.Used != 2 || e.RetryAfter != midnight.Sub(f.clk.Now()) {
		t.Fatalf("refusal %+v, want retry at midnight", e)
	}
	f.clk.Set(midnight.Add(-time.Nanosecond))
	f.refused(t, nil, RateRPD)
	f.clk.Set(midnight)
	f.setKeyLimits(t, RateLimits{RPD: 10, TPD: 100})
	h = f.admit(t, &RateRequest{Tokens: 100})
	e = f.refused(t, &RateRequest{Tokens: 1}, RateTPD)
	if e.Used != 100 || e.RetryAfter != 24*time.Hour {
		t.Fatalf("tpd refusal %+v", e)
	}
	settleTokens(t, h, 30, 0)
	f.admit(t, &RateRequest{Tokens: 70}).Release()
}

// TestRateScopes: the key lineage's limit is shared by its rotation, the
// account's by all its keys, a default applies to each lineage apart, a
// model limit across accounts; own limits override defaults kind by kind.
func TestRateScopes(t *testing.T) {
	f := newRateFixture(t)
	ctx := context.Background()
	s := f.s
	f.setKeyLimits(t, RateLimits{RPM: 2})
	f.admit(t, nil).Release()
	nk, pt, _, err := s.RotateKey(ctx, f.key.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if nk.RateLimits == nil || nk.RateLimits.RPM != 2 {
		t.Fatalf("rotated key's limits %+v", nk.RateLimits)
	}
	nid, err := s.Authenticate(ctx, pt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReserveFor(nid, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReserveFor(nid, 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("third request of the lineage: %v", err)
	}
	if _, err := s.ReserveFor(f.id, 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("old key of the lineage: %v", err)
	}

	// key defaults: each lineage its own; own rpm above overrides the default
	_, pt2 := mustKey(t, s, "acme", "two")
	id2, _ := s.Authenticate(ctx, pt2)
	_, pt3 := mustKey(t, s, "acme", "three")
	id3, _ := s.Authenticate(ctx, pt3)
	def := &RateRequest{KeyDefaults: RateLimits{RPM: 1, Concurrency: 5}}
	for _, id := range []Identity{id2, id3} {
		if _, err := s.ReserveFor(id, 1, WithRate(def)); err != nil {
			t.Fatal(err)
		}
		var re *RateLimitError
		if _, err := s.ReserveFor(id, 1, WithRate(def)); !errors.As(err, &re) || re.Scope != ScopeKey || re.Limit != 1 {
			t.Fatalf("default rpm 1: %v", err)
		}
	}
	// account limit across its keys (its own, stored)
	mustAccount(t, s, "beta", "10")
	if a, err := s.SetAccountRateLimits(ctx, "beta", &RateLimits{RPM: 3}); err != nil || a.RateLimits == nil || a.RateLimits.RPM != 3 {
		t.Fatalf("SetAccountRateLimits: %+v %v", a, err)
	}
	var bids []Identity
	for _, n := range []string{"b1", "b2"} {
		_, p := mustKey(t, s, "beta", n)
		id, _ := s.Authenticate(ctx, p)
		bids = append(bids, id)
	}
	for i := range 3 {
		if _, err := s.ReserveFor(bids[i%2], 1); err != nil {
			t.Fatal(err)
		}
	}
	var re *RateLimitError
	if _, err := s.ReserveFor(bids[1], 1); !errors.As(err, &re) || re.Scope != ScopeAccount || re.ID != "beta" {
		t.Fatalf("account rpm: %v", err)
	}
	// model limit: across accounts, by name
	m := &RateRequest{Model: "gpt-4o*", ModelLimits: RateLimits{RPM: 1}}
	mustAccount(t, s, "gamma", "10")
	if _, err := s.ReserveFor(Identity{AccountID: "gamma"}, 1, WithRate(m)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReserveFor(id2, 1, WithRate(&RateRequest{Model: "gpt-4o*", ModelLimits: RateLimits{RPM: 1}, KeyDefaults: RateLimits{RPM: 100}})); !errors.As(err, &re) || re.Scope != ScopeModel || re.ID != "gpt-4o*" {
		t.Fatalf("model rpm: %v", err)
	}
	if u := s.ModelRateUsage(); len(u) != 1 || u[0].Name != "gpt-4o*" || u[0].Used != 1 || u[0].Limit != 1 {
		t.Fatalf("model usage %+v", u)
	}
	// removing the key's own limit lifts it
	if _, err := s.UpdateKey(ctx, nk.ID, KeyUpdate{SetRateLimits: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReserveFor(nid, 1); err != nil {
		t.Fatalf("after removing the limit: %v", err)
	}
}

// TestRateRefusalCountsNothing: a request refused by a rate limit holds and
// counts nothing, and one refused for its balance counts against no rate
// limit.
func TestRateRefusalCountsNothing(t *testing.T) {
	f := newRateFixture(t)
	f.setKeyLimits(t, RateLimits{RPM: 1, TPM: 100, Concurrency: 1})
	h := f.admit(t, &RateRequest{Tokens: 10})
	for range 5 {
		f.refused(t, &RateRequest{Tokens: 10}, RateRPM)
	}
	if n, held := f.s.HoldsInFlight(); n != 1 || held != 1 {
		t.Fatalf("holds %d, %d", n, held)
	}
	h.Release()
	u, _ := f.s.KeyRateUsage(context.Background(), f.key.ID)
	for _, x := range u {
		want := map[string]int64{RateRPM: 1, RateTPM: 0, RateConcurrency: 0}[x.Kind]
		if x.Used != want {
			t.Fatalf("%s used %d, want %d", x.Kind, x.Used, want)
		}
	}
	// balance refusal first: no rate count
	mustAccount(t, f.s, "poor", "")
	_, pt := mustKey(t, f.s, "poor", "k")
	id, _ := f.s.Authenticate(context.Background(), pt)
	r := &RateRequest{KeyDefaults: RateLimits{RPM: 1}}
	for range 3 {
		if _, err := f.s.ReserveFor(id, 1, WithRate(r)); !errors.Is(err, ErrInsufficientBalance) {
			t.Fatalf("poor account: %v", err)
		}
	}
}

// TestRateLimitsPersist: stored limits survive a reopen; Validate refuses
// negative limits.
func TestRateLimitsPersist(t *testing.T) {
	f := newRateFixture(t)
	ctx := context.Background()
	if _, err := f.s.UpdateKey(ctx, f.key.ID, KeyUpdate{SetRateLimits: true, RateLimits: &RateLimits{RPM: -1}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative rpm: %v", err)
	}
	f.setKeyLimits(t, RateLimits{RPM: 7, TPD: 9})
	if _, err := f.s.SetAccountRateLimits(ctx, "acme", &RateLimits{Concurrency: 4}); err != nil {
		t.Fatal(err)
	}
	k, _, err := f.s.CreateKey(ctx, "acme", "limited", KeyPolicy{RateLimits: &RateLimits{TPM: 5}})
	if err != nil || k.RateLimits == nil || k.RateLimits.TPM != 5 {
		t.Fatalf("CreateKey with limits: %+v %v", k, err)
	}
	path := f.s.Path()
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	s := openAt(t, path, Options{})
	got, err := s.Key(ctx, f.key.ID)
	if err != nil || got.RateLimits == nil || *got.RateLimits != (RateLimits{RPM: 7, TPD: 9}) {
		t.Fatalf("key after reopen %+v %v", got.RateLimits, err)
	}
	a, _ := s.Account(ctx, "acme")
	if a.RateLimits == nil || a.RateLimits.Concurrency != 4 {
		t.Fatalf("account after reopen %+v", a.RateLimits)
	}
	u, err := s.KeyRateUsage(ctx, k.ID)
	if err != nil || len(u) != 2 || u[0].Kind != RateTPM || u[0].Limit != 5 || u[1].Kind != RateConcurrency || u[1].Scope != ScopeAccount {
		t.Fatalf("usage after reopen %+v %v", u, err)
	}
}

// Set puts the clock at t.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// BenchmarkReserveRelease measures admission and its end for a key without
// rate limits and for one limited in every kind on key, account and model
// scope (the windows never fill: the cost of counting, not refusing). The
// difference is what rate limits add to a request.
func BenchmarkReserveRelease(b *testing.B) {
	for _, bc := range []struct {
		name    string
		limited bool
	}{{"no_limits", false}, {"rate_limited", true}} {
		b.Run(bc.name, func(b *testing.B) {
			// A clock that moves 100 µs a reading: the windows expire
			// entries as in production instead of growing for the whole run.
			var ticks atomic.Int64
			start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
			now := func() time.Time { return start.Add(time.Duration(ticks.Add(1)) * 100 * time.Microsecond) }
			ctx := context.Background()
			s, err := Open(ctx, Options{Path: filepath.Join(b.TempDir(), "ks.db"), Now: now})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if _, err := s.CreateAccount(ctx, "acme", ""); err != nil {
				b.Fatal(err)
			}
			if _, _, err := s.AdjustBalance(ctx, "acme", 1_000_000*NanoPerUnit, "top-up"); err != nil {
				b.Fatal(err)
			}
			big := RateLimits{RPM: 1e12, TPM: 1e12, Concurrency: 1 << 20, RPD: 1e12, TPD: 1e12}
			pol := KeyPolicy{}
			r := &RateRequest{Tokens: 1000}
			if bc.limited {
				pol.RateLimits = &big
				if _, err := s.SetAccountRateLimits(ctx, "acme", &big); err != nil {
					b.Fatal(err)
				}
				r.Model, r.ModelLimits = "gpt-4o*", big
			}
			_, pt, err := s.CreateKey(ctx, "acme", "k", pol)
			if err != nil {
				b.Fatal(err)
			}
			id, err := s.Authenticate(ctx, pt)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				h, err := s.ReserveFor(id, 1, WithRate(r))
				if err != nil {
					b.Fatal(err)
				}
				h.Release()
			}
		})
	}
}

// TestRateLimitsAcrossInstances: two stores on one PostgreSQL database
// (two gateway instances) share their counts. Synced, a limit holds
// exactly across them; between syncs each admits at most its allowance
// (⌈L/8⌉ per scope and limit), so a window never admits more than
// L + 2·(N−1)·⌈L/8⌉; requests in flight count on both.
func TestRateLimitsAcrossInstances(t *testing.T) {
	db := pgtest.NewDatabase(t)
	ctx := context.Background()
	clk := newFakeClock()
	// Syncs happen when the test calls SyncRates: the loop's hour never comes.
	opts := Options{Now: clk.Now, RateSyncInterval: time.Hour}
	a := openAt(t, db, opts)
	mustAccount(t, a, "acme", "1000")
	k, pt := mustKey(t, a, "acme", "k")
	const L = 10
	if _, err := a.UpdateKey(ctx, k.ID, KeyUpdate{SetRateLimits: true, RateLimits: &RateLimits{RPM: L}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetAccountRateLimits(ctx, "acme", &RateLimits{Concurrency: 3}); err != nil {
		t.Fatal(err)
	}
	b := openAt(t, db, opts)
	idA, _ := a.Authenticate(ctx, pt)
	idB, err := b.Authenticate(ctx, pt)
	if err != nil {
		t.Fatal(err)
	}
	sync := func(stores ...*Store) {
		t.Helper()
		for _, s := range stores {
			if err := s.SyncRates(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	admitted := func(s *Store, id Identity) bool {
		h, err := s.ReserveFor(id, 1)
		if errors.Is(err, ErrRateLimited) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		h.Release()
		return true
	}

	// Synced: exactly L across the two.
	sync(a, b, a) // each has seen the other: the allowance applies from now on
	n := int64(0)
	for round := 0; round < 20; round++ {
		progress := false
		for _, s := range []struct {
			st *Store
			id Identity
		}{{a, idA}, {b, idB}} {
			for admitted(s.st, s.id) {
				n++
				progress = true
			}
			sync(s.st) // write what it admitted, read the other's
		}
		if !progress {
			break
		}
	}
	if n > L+2*(2-1)*allowance(L) || n < L {
		t.Fatalf("%d admitted in one window across two instances, want between %d and %d", n, L, L+2*allowance(L))
	}
	t.Logf("admitted %d of limit %d across 2 instances syncing in turn (bound %d)", n, L, L+2*allowance(L))
	sync(a, b, a, b)
	if admitted(a, idA) || admitted(b, idB) {
		t.Fatal("admitted after both synced a full window")
	}
	// The window moves on for both: the other's buckets leave it too.
	clk.Advance(61 * time.Second)
	sync(a, b)
	if !admitted(a, idA) || !admitted(b, idB) {
		t.Fatal("refused after the window passed")
	}

	// Exact when synced one request at a time: what one admits, the other sees.
	clk.Advance(61 * time.Second)
	sync(a, b, a, b)
	n = 0
	for i := range 2 * L {
		s, id := a, idA
		if i%2 == 1 {
			s, id = b, idB
		}
		if admitted(s, id) {
			n++
		}
		sync(s, a, b)
	}
	if n != L {
		t.Fatalf("%d admitted with a sync after every request, want exactly %d", n, L)
	}

	// Requests in flight count on both instances (the account's concurrency 3).
	clk.Advance(61 * time.Second)
	sync(a, b)
	h1, err := a.ReserveFor(idA, 1)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := a.ReserveFor(idA, 1)
	if err != nil {
		t.Fatal(err)
	}
	sync(a, b)
	h3, err := b.ReserveFor(idB, 1)
	if err != nil {
		t.Fatal(err)
	}
	sync(b)
	var re *RateLimitError
	if _, err := b.ReserveFor(idB, 1); !errors.As(err, &re) || re.Kind != RateConcurrency || re.Used != 3 {
		t.Fatalf("fourth in flight across the instances: %v", err)
	}
	h1.Release()
	sync(a, b)
	h4, err := b.ReserveFor(idB, 1)
	if err != nil {
		t.Fatalf("after one ended on the other instance: %v", err)
	}
	for _, h := range []*Hold{h2, h3, h4} {
		h.Release()
	}
}

// TestRateCountsSurviveRestartOnPostgres: on PostgreSQL a restarted store
// counts what it admitted before the restart, as another instance's.
func TestRateCountsSurviveRestartOnPostgres(t *testing.T) {
	db := pgtest.NewDatabase(t)
	ctx := context.Background()
	clk := newFakeClock()
	opts := Options{Now: clk.Now, RateSyncInterval: time.Hour}
	s := openAt(t, db, opts)
	mustAccount(t, s, "acme", "10")
	_, pt, err := s.CreateKey(ctx, "acme", "k", KeyPolicy{RateLimits: &RateLimits{RPM: 3, RPD: 5}})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := s.Authenticate(ctx, pt)
	for range 3 {
		if _, err := s.ReserveFor(id, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SyncRates(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, db, opts)
	id2, _ := s2.Authenticate(ctx, pt)
	if err := s2.SyncRates(ctx); err != nil {
		t.Fatal(err)
	}
	var re *RateLimitError
	if _, err := s2.ReserveFor(id2, 1); !errors.As(err, &re) || re.Kind != RateRPM || re.Used != 3 {
		t.Fatalf("after the restart: %v, want rpm refused with 3 used", err)
	}
	clk.Advance(61 * time.Second)
	for range 2 {
		if _, err := s2.ReserveFor(id2, 1); err != nil {
			t.Fatalf("a minute later: %v", err)
		}
	}
	if _, err := s2.ReserveFor(id2, 1); !errors.As(err, &re) || re.Kind != RateRPD || re.Used != 5 {
		t.Fatalf("sixth of the day: %v, want rpd refused with 5 used", err)
	}
}

// TestClusterRateLimitsFollowTheFeed: a rate limit set on one instance of a
// cluster applies on the others once the change feed brings it.
func TestClusterRateLimitsFollowTheFeed(t *testing.T) {
	_, st := openInstances(t, 2, testCluster(0))
	a, b := st[0], st[1]
	ctx := context.Background()
	mustAccount(t, a, "acme", "10")
	k, pt := mustKey(t, a, "acme", "k")
	if _, err := a.UpdateKey(ctx, k.ID, KeyUpdate{SetRateLimits: true, RateLimits: &RateLimits{RPM: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetAccountRateLimits(ctx, "acme", &RateLimits{Concurrency: 7}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		u, err := b.KeyRateUsage(ctx, k.ID)
		return err == nil && len(u) == 2 && u[0].Kind == RateRPM && u[0].Limit == 1 && u[1].Limit == 7
	})
	var id Identity
	waitFor(t, 10*time.Second, func() bool {
		var err error
		id, err = b.Authenticate(ctx, pt)
		return err == nil
	})
	h, err := b.ReserveFor(id, 1)
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if _, err := b.ReserveFor(id, 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("second request on the other instance: %v", err)
	}
	if _, err := a.UpdateKey(ctx, k.ID, KeyUpdate{SetRateLimits: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		u, _ := b.KeyRateUsage(ctx, k.ID)
		return len(u) == 1 && u[0].Kind == RateConcurrency
	})
}

// TestClusterNewKeyLimitsHoldAtOnce: a key with limits that another
// instance created, used on this one before the feed told it, holds its
// limits from its first request here (an outsider found such a key
// unlimited on the other instance). The key is written without a feed
// entry, as if the feed were late, so that only the lookup can load them.
func TestClusterNewKeyLimitsHoldAtOnce(t *testing.T) {
	_, st := openInstances(t, 2, testCluster(0))
	a, b := st[0], st[1]
	ctx := context.Background()
	mustAccount(t, a, "acme", "10")
	pt, err := newPlaintextKey()
	if err != nil {
		t.Fatal(err)
	}
	h := HashKey(pt)
	if _, err := a.w.ExecContext(ctx, `INSERT INTO api_keys (id, account_id, name, hash, hint, created_at, lineage, rate_limits)
		VALUES ('key_late', 'acme', 'late', ?, 'sk-...', ?, 'key_late', '{"rpm":1}')`, h[:], unixMS(time.Now())); err != nil {
		t.Fatal(err)
	}
	var id Identity
	waitFor(t, 10*time.Second, func() bool {
		id, err = b.Authenticate(ctx, pt)
		return err == nil
	})
	hold, err := b.ReserveFor(id, 1)
	if err != nil {
		t.Fatal(err)
	}
	hold.Release()
	if _, err := b.ReserveFor(id, 1); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("second request of a key with rpm 1 on an instance the feed did not tell: %v", err)
	}
}
