package keystore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// nextPlaintexts makes s issue the given plaintexts as its next keys.
func nextPlaintexts(s *Store, pts ...string) {
	var mu sync.Mutex
	s.newPlaintext = func() (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if len(pts) == 0 {
			return newPlaintextKey()
		}
		p := pts[0]
		pts = pts[1:]
		return p, nil
	}
}

func freshPlaintext(t testing.TB) string {
	t.Helper()
	p, err := newPlaintextKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUnknownKeyNegativelyCached: a flood of one unknown key does one
// database read, not one per request; the answer expires after the TTL and
// the negative cache stays within its bound.
func TestUnknownKeyNegativelyCached(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	s := openTemp(t, Options{Now: clock.Now})
	unknown := freshPlaintext(t)
	for range 100 {
		if _, err := s.Authenticate(ctx, unknown); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("Authenticate(unknown): %v", err)
		}
	}
	if n := s.keyLookups.Load(); n != 1 {
		t.Fatalf("100 requests with one unknown key did %d database lookups, want 1", n)
	}
	clock.Advance(unknownCacheTTL)
	if _, err := s.Authenticate(ctx, unknown); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Authenticate(unknown) after the TTL: %v", err)
	}
	if n := s.keyLookups.Load(); n != 2 {
		t.Fatalf("after the TTL: %d lookups, want 2", n)
	}

	s.keys.unknownMax = 50
	for range 200 {
		if _, err := s.Authenticate(ctx, freshPlaintext(t)); !errors.Is(err, ErrUnknownKey) {
			t.Fatal(err)
		}
	}
	if n := s.keys.unknownLen(); n != 50 {
		t.Fatalf("negative cache holds %d hashes, bound 50", n)
	}
}

// TestCreatedKeyNotHiddenByNegativeCache: a key that was looked up while it
// did not exist works on the very next request after CreateKey or RotateKey
// issued it; deleting a key still takes effect on the next request.
func TestCreatedKeyNotHiddenByNegativeCache(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "10")
	created, rotated := freshPlaintext(t), freshPlaintext(t)
	for _, p := range []string{created, rotated} {
		if _, err := s.Authenticate(ctx, p); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("before creation: %v", err)
		}
	}
	nextPlaintexts(s, created, rotated)

	k, pt := mustKey(t, s, "acme", "k")
	if pt != created {
		t.Fatal("test generator not used")
	}
	if id, err := s.Authenticate(ctx, created); err != nil || id.KeyID != k.ID {
		t.Fatalf("created key right after CreateKey: %+v, %v", id, err)
	}

	nk, pt, _, err := s.RotateKey(ctx, k.ID, 0)
	if err != nil || pt != rotated {
		t.Fatalf("RotateKey: %v", err)
	}
	if id, err := s.Authenticate(ctx, rotated); err != nil || id.KeyID != nk.ID {
		t.Fatalf("replacement right after RotateKey: %+v, %v", id, err)
	}
	if _, err := s.Authenticate(ctx, created); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("rotated-away key: %v, want ErrUnknownKey", err)
	}

	if err := s.DeleteKey(ctx, nk.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, rotated); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("deleted key on the next request: %v, want ErrUnknownKey", err)
	}
}

// TestNegativeCacheRaceWithCreation: a lookup that read "unknown" from the
// database before the key was created, and caches that answer only after
// the creation returned, must not hide the new key.
func TestNegativeCacheRaceWithCreation(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "10")
	p := freshPlaintext(t)
	nextPlaintexts(s, p)

	read, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.unknownLookedUp = func() {
		once.Do(func() {
			close(read)
			<-proceed
		})
	}
	done := make(chan error)
	go func() {
		_, err := s.Authenticate(ctx, p)
		done <- err
	}()
	<-read // the database said unknown; the answer is not cached yet
	mustKey(t, s, "acme", "k")
	close(proceed)
	if err := <-done; !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("the racing lookup: %v", err)
	}
	if _, err := s.Authenticate(ctx, p); err != nil {
		t.Fatalf("created key after a racing unknown lookup: %v", err)
	}
}

// TestNegativeCacheConcurrentCreation hammers keys with lookups while they
// are created: each works as soon as its creation returns.
func TestNegativeCacheConcurrentCreation(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	mustAccount(t, s, "acme", "10")
	const n = 30
	pts := make([]string, n)
	for i := range pts {
		pts[i] = freshPlaintext(t)
	}
	nextPlaintexts(s, pts...)

	var stop atomic.Bool
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := g; !stop.Load(); i++ {
				_, err := s.Authenticate(ctx, pts[i%n])
				if err != nil && !errors.Is(err, ErrUnknownKey) {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range n {
		time.Sleep(time.Millisecond) // let lookups cache the key as unknown
		mustKey(t, s, "acme", "k")
		if _, err := s.Authenticate(ctx, pts[i]); err != nil {
			t.Errorf("key %d right after its creation: %v", i, err)
		}
	}
	stop.Store(true)
	wg.Wait()
}
