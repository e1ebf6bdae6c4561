package keystore

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func limitOf(amount int64, period string) *SpendLimit {
	return &SpendLimit{Amount: amount, Period: period}
}

// charge reserves hold on the key's identity and settles cost; it reports
// whether the request was admitted.
func charge(t testing.TB, s *Store, id Identity, hold, cost int64) (bool, error) {
	t.Helper()
	h, err := s.ReserveFor(id, hold)
	if err != nil {
		return false, err
	}
	if _, err := h.Settle(Charge{KeyID: id.KeyID, Cost: cost, Model: "m"}); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	return true, nil
}

func TestKeyPolicyCreateAndAuthenticate(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "100")
	k, pt, err := s.CreateKey(ctx, "acme", "ci", KeyPolicy{
		AllowedModels: []string{" gpt-4o-mini ", "o3*", "o3*"},
		SpendLimit:    limitOf(2*NanoPerUnit, PeriodDay),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"gpt-4o-mini", "o3*"}
	if !reflect.DeepEqual(k.AllowedModels, want) || *k.SpendLimit != *limitOf(2*NanoPerUnit, PeriodDay) {
		t.Fatalf("created key %+v", k)
	}
	got, err := s.Key(ctx, k.ID)
	if err != nil || !reflect.DeepEqual(got.AllowedModels, want) || got.SpendLimit == nil || got.SpendLimit.Period != PeriodDay {
		t.Fatalf("Key: %+v, %v", got, err)
	}
	for i := 0; i < 2; i++ { // database, then cache
		id, err := s.Authenticate(ctx, pt)
		if err != nil || !reflect.DeepEqual(id.AllowedModels, want) {
			t.Fatalf("Authenticate: %+v, %v", id, err)
		}
		for m, ok := range map[string]bool{"gpt-4o-mini": true, "o3-mini": true, "gpt-4o": false, "": false} {
			if id.AllowsModel(m) != ok {
				t.Errorf("AllowsModel(%q) = %v", m, !ok)
			}
		}
	}
	_, pt2 := mustKey(t, s, "acme", "open")
	id2, _ := s.Authenticate(ctx, pt2)
	if !id2.AllowsModel("anything") || id2.AllowedModels != nil {
		t.Fatalf("a key without allowlist: %+v", id2)
	}
}

func TestKeyPolicyValidation(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "1")
	k, _ := mustKey(t, s, "acme", "k")
	past := time.Now().Add(-time.Hour)
	many := make([]string, 101)
	for i := range many {
		many[i] = "m"
	}
	bad := []KeyPolicy{
		{AllowedModels: []string{"[unclosed"}},
		{AllowedModels: []string{""}},
		{AllowedModels: []string{"two words"}},
		{AllowedModels: many},
		{SpendLimit: limitOf(0, PeriodDay)},
		{SpendLimit: limitOf(-1, PeriodTotal)},
		{SpendLimit: limitOf(1, "week")},
		{ExpiresAt: &past},
	}
	for i, p := range bad {
		if _, _, err := s.CreateKey(ctx, "acme", "x", p); !errors.Is(err, ErrInvalid) {
			t.Errorf("create %d: %v, want ErrInvalid", i, err)
		}
		u := KeyUpdate{SetAllowedModels: p.AllowedModels != nil, AllowedModels: p.AllowedModels,
			SetSpendLimit: p.SpendLimit != nil, SpendLimit: p.SpendLimit, SetExpiry: p.ExpiresAt != nil, ExpiresAt: p.ExpiresAt}
		if _, err := s.UpdateKey(ctx, k.ID, u); !errors.Is(err, ErrInvalid) {
			t.Errorf("update %d: %v, want ErrInvalid", i, err)
		}
	}
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty update: %v", err)
	}
	if _, err := s.UpdateKey(ctx, "key_nope", KeyUpdate{SetSpendLimit: true}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown key: %v", err)
	}
	if n := queryInt(t, s.r, `SELECT count(*) FROM api_keys`); n != 1 {
		t.Fatalf("%d keys after refused creations", n)
	}
	if len(s.spend) != 0 {
		t.Fatalf("refused updates left spend counters: %v", s.spend)
	}
}

// TestKeyLimitAdmission: the limit refuses once spend plus holds reach it,
// with an error that says which limit and when it resets.
func TestKeyLimitAdmission(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock() // 2030-01-02T03:04:05Z
	s := openTemp(t, Options{Now: clock.Now})
	mustAccount(t, s, "acme", "100")
	_, pt, err := s.CreateKey(ctx, "acme", "k", KeyPolicy{SpendLimit: limitOf(3*NanoPerUnit, PeriodDay)})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := s.Authenticate(ctx, pt)

	// 2 spent + 1 held = 3: the next one is refused while the hold is open
	if ok, err := charge(t, s, id, NanoPerUnit, 2*NanoPerUnit); !ok {
		t.Fatal(err)
	}
	h, err := s.ReserveFor(id, NanoPerUnit)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.ReserveFor(id, 1)
	var le *LimitError
	if !errors.As(err, &le) || !errors.Is(err, ErrKeyLimitExceeded) {
		t.Fatalf("over the limit: %v", err)
	}
	wantReset := time.Date(2030, 1, 3, 0, 0, 0, 0, time.UTC)
	if le.Spent != 2*NanoPerUnit || le.Held != NanoPerUnit || le.Limit.Amount != 3*NanoPerUnit || le.Resets == nil || !le.Resets.Equal(wantReset) {
		t.Fatalf("LimitError %+v", le)
	}
	// releasing frees the hold; the account is untouched by refusals
	h.Release()
	if _, held, _ := s.Available("acme"); held != 0 {
		t.Fatalf("account holds %d after release", held)
	}
	if ok, err := charge(t, s, id, 1, 2*NanoPerUnit); !ok { // 2 < 3: admitted, overruns to 4
		t.Fatal(err)
	}
	if ok, _ := charge(t, s, id, 1, 1); ok {
		t.Fatal("admitted at spend 4 of 3")
	}
	spent, held, resets, ok := s.KeySpend(ctx, id.KeyID)
	if !ok || spent != 4*NanoPerUnit || held != 0 || !resets.Equal(wantReset) {
		t.Fatalf("KeySpend %d %d %v %v", spent, held, resets, ok)
	}
	// the day rolls over at midnight UTC
	clock.Advance(wantReset.Sub(clock.Now()) - time.Millisecond)
	if ok, _ := charge(t, s, id, 1, 1); ok {
		t.Fatal("admitted a millisecond before midnight")
	}
	clock.Advance(time.Millisecond)
	if ok, err := charge(t, s, id, 1, NanoPerUnit); !ok {
		t.Fatalf("refused after midnight: %v", err)
	}
	if spent, _, _, _ := s.KeySpend(ctx, id.KeyID); spent != NanoPerUnit {
		t.Fatalf("spent on the new day %d", spent)
	}
	// other keys of the account are not limited
	_, pt2 := mustKey(t, s, "acme", "free")
	id2, _ := s.Authenticate(ctx, pt2)
	if ok, err := charge(t, s, id2, 1, 50*NanoPerUnit); !ok {
		t.Fatal(err)
	}
	checkStore(t, s)
}

func TestPeriodBounds(t *testing.T) {
	at := func(s string) int64 {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return unixMS(tm)
	}
	for _, c := range []struct{ period, now, start, end string }{
		{PeriodDay, "2030-01-02T03:04:05Z", "2030-01-02T00:00:00Z", "2030-01-03T00:00:00Z"},
		{PeriodDay, "2030-12-31T23:59:59.999Z", "2030-12-31T00:00:00Z", "2031-01-01T00:00:00Z"},
		{PeriodMonth, "2030-01-31T12:00:00Z", "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z"},
		{PeriodMonth, "2032-02-29T00:00:00Z", "2032-02-01T00:00:00Z", "2032-03-01T00:00:00Z"},
		{PeriodMonth, "2030-12-15T00:00:00Z", "2030-12-01T00:00:00Z", "2031-01-01T00:00:00Z"},
	} {
		s, e := periodBounds(c.period, at(c.now))
		if s != at(c.start) || e != at(c.end) {
			t.Errorf("%s %s: %v..%v", c.period, c.now, fromMS(s), fromMS(e))
		}
	}
	if s, e := periodBounds(PeriodTotal, 12345); s != 0 || e != 0 {
		t.Errorf("total: %d %d", s, e)
	}
}

// TestKeyLimitConcurrentBound: 100 concurrent requests on a key whose limit
// covers 10 of them: the spend exceeds the limit by less than one request.
func TestKeyLimitConcurrentBound(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "1000")
	const cost = 7 * NanoPerUnit / 10
	limit := 10 * cost
	_, pt, err := s.CreateKey(ctx, "acme", "k", KeyPolicy{SpendLimit: limitOf(limit, PeriodTotal)})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := s.Authenticate(ctx, pt)
	var (
		wg       sync.WaitGroup
		admitted atomic.Int64
		start    = make(chan struct{})
	)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			h, err := s.ReserveFor(id, cost/2) // holds below the cost: overruns
			if err != nil {
				if !errors.Is(err, ErrKeyLimitExceeded) {
					t.Errorf("ReserveFor: %v", err)
				}
				return
			}
			admitted.Add(1)
			time.Sleep(time.Millisecond)
			if _, err := h.Settle(Charge{KeyID: id.KeyID, Cost: cost}); err != nil {
				t.Errorf("Settle: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	spent, held, _, _ := s.KeySpend(ctx, id.KeyID)
	if held != 0 || spent != admitted.Load()*cost {
		t.Fatalf("spent %d held %d after %d admitted", spent, held, admitted.Load())
	}
	// the bound of ReserveFor: at most the last request's cost plus the
	// overruns beyond holds of those in flight with it (here at most 20
	// in flight: every admission needs spend+held below the limit, and each
	// hold is half a cost).
	if spent < limit || spent >= limit+cost+20*(cost-cost/2) {
		t.Fatalf("spent %d with limit %d (admitted %d)", spent, limit, admitted.Load())
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, s.r, `SELECT -SUM(amount) FROM ledger WHERE key_id = ?`, id.KeyID); n != spent {
		t.Fatalf("ledger %d, counter %d", n, spent)
	}
}

// TestKeyLimitSetLaterCountsEverything: a limit set on a key in use counts
// every charge exactly once, those committed, those queued and those
// settling while the limit is being set.
func TestKeyLimitSetLaterCountsEverything(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{CommitInterval: 50 * time.Millisecond})
	mustAccount(t, s, "acme", "100000")
	k, pt := mustKey(t, s, "acme", "k")
	id, _ := s.Authenticate(ctx, pt)
	for i := 0; i < 20; i++ {
		charge(t, s, id, 1, 3)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ { // queued, not yet committed
		charge(t, s, id, 1, 5)
	}
	var (
		wg    sync.WaitGroup
		stop  atomic.Bool
		total atomic.Int64
	)
	total.Store(20*3 + 20*5)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if ok, _ := charge(t, s, id, 1, 7); ok {
					total.Add(7)
				}
				time.Sleep(50 * time.Microsecond)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{SetSpendLimit: true, SpendLimit: limitOf(NanoPerUnit, PeriodTotal)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	spent, _, _, ok := s.KeySpend(ctx, k.ID)
	if !ok || spent != total.Load() {
		t.Fatalf("counter %d, charged %d", spent, total.Load())
	}
	// and after a restart, from the ledger alone
	path := s.Path()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, path, Options{})
	if spent, _, _, ok := s2.KeySpend(ctx, k.ID); !ok || spent != total.Load() {
		t.Fatalf("after restart: counter %d, charged %d", spent, total.Load())
	}
}

// TestKeyPolicyFollowsRotation: the replacement inherits the policy and
// shares the spend counter; an update through either key applies to both.
func TestKeyPolicyFollowsRotation(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "100")
	old, ptOld, err := s.CreateKey(ctx, "acme", "k", KeyPolicy{
		AllowedModels: []string{"a*"}, SpendLimit: limitOf(10*NanoPerUnit, PeriodMonth)})
	if err != nil {
		t.Fatal(err)
	}
	idOld, _ := s.Authenticate(ctx, ptOld)
	charge(t, s, idOld, 1, 4*NanoPerUnit)
	nk, ptNew, _, err := s.RotateKey(ctx, old.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(nk.AllowedModels, []string{"a*"}) || nk.SpendLimit == nil || nk.SpendLimit.Amount != 10*NanoPerUnit {
		t.Fatalf("replacement policy %+v", nk)
	}
	idNew, _ := s.Authenticate(ctx, ptNew)
	charge(t, s, idNew, 1, 5*NanoPerUnit)
	if spent, _, _, _ := s.KeySpend(ctx, nk.ID); spent != 9*NanoPerUnit {
		t.Fatalf("shared counter %d", spent)
	}
	charge(t, s, idOld, 1, NanoPerUnit) // 10 of 10
	if ok, _ := charge(t, s, idNew, 1, 1); ok {
		t.Fatal("the replacement escaped the limit spent by its predecessor")
	}
	// updating the new key's allowlist applies to the old one in grace too
	if _, err := s.UpdateKey(ctx, nk.ID, KeyUpdate{SetAllowedModels: true, AllowedModels: []string{"b"}}); err != nil {
		t.Fatal(err)
	}
	for _, pt := range []string{ptOld, ptNew} {
		id, err := s.Authenticate(ctx, pt)
		if err != nil || !reflect.DeepEqual(id.AllowedModels, []string{"b"}) {
			t.Fatalf("after update: %+v, %v", id, err)
		}
	}
	// raising the limit re-admits at once; clearing it removes the counter
	if _, err := s.UpdateKey(ctx, nk.ID, KeyUpdate{SetSpendLimit: true, SpendLimit: limitOf(20*NanoPerUnit, PeriodMonth)}); err != nil {
		t.Fatal(err)
	}
	if ok, err := charge(t, s, idNew, 1, 1); !ok {
		t.Fatal(err)
	}
	if _, err := s.UpdateKey(ctx, nk.ID, KeyUpdate{SetSpendLimit: true}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, ok := s.KeySpend(ctx, nk.ID); ok {
		t.Fatal("counter kept after the limit was removed")
	}
	k, _ := s.Key(ctx, old.ID)
	if k.SpendLimit != nil {
		t.Fatalf("old key keeps limit %+v", k.SpendLimit)
	}
	// a period change starts a counter of the new period, loaded from the ledger
	if _, err := s.UpdateKey(ctx, nk.ID, KeyUpdate{SetSpendLimit: true, SpendLimit: limitOf(100*NanoPerUnit, PeriodTotal)}); err != nil {
		t.Fatal(err)
	}
	if spent, _, _, _ := s.KeySpend(ctx, old.ID); spent != 10*NanoPerUnit+1 {
		t.Fatalf("total counter %d", spent)
	}
}

func TestUpdateKeyExpiryAndName(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	s := openTemp(t, Options{Now: clock.Now})
	mustAccount(t, s, "acme", "1")
	k, pt := mustKey(t, s, "acme", "k")
	exp := clock.Now().Add(time.Hour)
	name := "renamed"
	got, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Name: &name, SetExpiry: true, ExpiresAt: &exp})
	if err != nil || got.Name != "renamed" || got.ExpiresAt == nil || !got.ExpiresAt.Equal(exp) {
		t.Fatalf("UpdateKey: %+v, %v", got, err)
	}
	if id, err := s.Authenticate(ctx, pt); err != nil || id.KeyName != "renamed" {
		t.Fatalf("after update: %+v, %v", id, err)
	}
	clock.Advance(time.Hour)
	if _, err := s.Authenticate(ctx, pt); !errors.Is(err, ErrExpiredKey) {
		t.Fatalf("after expiry: %v", err)
	}
	// clearing the expiry brings it back
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{SetExpiry: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, pt); err != nil {
		t.Fatalf("after clearing the expiry: %v", err)
	}
	s.Close()
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Name: &name}); !errors.Is(err, ErrClosed) {
		t.Fatalf("on a closed store: %v", err)
	}
}
