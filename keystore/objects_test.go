package keystore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// waitObjectsCommitted waits until no object record is pending.
func waitObjectsCommitted(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.objects.mu.Lock()
		n := len(s.objects.pending)
		s.objects.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d object records still pending", n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestObjectRecordReadDelete(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	s := openTemp(t, Options{Now: clock.Now})
	mustAccount(t, s, "a", "")
	if _, err := s.Object(ctx, "resp_1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown object: %v, want ErrNotFound", err)
	}
	if err := s.RecordObject(Object{ID: "resp_1", AccountID: "a", KeyID: "k1", InputTokens: 100, OutputTokens: 20}); err != nil {
		t.Fatal(err)
	}
	// visible at once, before any commit
	o, err := s.Object(ctx, "resp_1")
	if err != nil || o.AccountID != "a" || o.KeyID != "k1" || o.Kind != ObjectResponse || o.InputTokens != 100 || o.OutputTokens != 20 || o.DeletedAt != nil {
		t.Fatalf("Object = %+v, %v", o, err)
	}
	if !o.CreatedAt.Equal(clock.Now()) {
		t.Fatalf("created %v, want %v", o.CreatedAt, clock.Now())
	}
	// a second record of the same id, for another account, changes nothing
	if err := s.RecordObject(Object{ID: "resp_1", AccountID: "b", InputTokens: 1}); err != nil {
		t.Fatal(err)
	}
	waitObjectsCommitted(t, s)
	if err := s.RecordObject(Object{ID: "resp_1", AccountID: "b", InputTokens: 1}); err != nil {
		t.Fatal(err)
	}
	waitObjectsCommitted(t, s)
	o, err = s.Object(ctx, "resp_1")
	if err != nil || o.AccountID != "a" || o.InputTokens != 100 {
		t.Fatalf("after a second record: %+v, %v", o, err)
	}
	clock.Advance(time.Minute)
	if err := s.DeleteObject(ctx, "resp_1"); err != nil {
		t.Fatal(err)
	}
	if o, _ := s.Object(ctx, "resp_1"); o.DeletedAt == nil || !o.DeletedAt.Equal(clock.Now()) || o.AccountID != "a" {
		t.Fatalf("after delete: %+v", o)
	}
	waitObjectsCommitted(t, s)
	if o, _ := s.Object(ctx, "resp_1"); o.DeletedAt == nil || o.AccountID != "a" {
		t.Fatalf("after delete committed: %+v", o)
	}
	if err := s.DeleteObject(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting an unknown object: %v", err)
	}
}

func TestObjectRecordRefusesBadInput(t *testing.T) {
	s := openTemp(t, Options{})
	for _, o := range []Object{
		{ID: "", AccountID: "a"},
		{ID: "resp 1", AccountID: "a"},
		{ID: "resp_\u00e9", AccountID: "a"},
		{ID: string(make([]byte, maxObjectIDBytes+1)), AccountID: "a"},
		{ID: "resp_1"},
		{ID: "resp_1", AccountID: "a", InputTokens: -1},
	} {
		if err := s.RecordObject(o); !errors.Is(err, ErrInvalid) {
			t.Errorf("RecordObject(%+v) = %v, want ErrInvalid", o, err)
		}
	}
}

// Records queued right before Close are committed by it, and a reopened
// store answers from the database.
func TestObjectsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	path := tempDB(t)
	s, err := Open(ctx, Options{Path: path, CommitInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "resp_" + string(rune('A'+i%26)) + string(rune('a'+i/26))
			if err := s.RecordObject(Object{ID: id, AccountID: "acct", InputTokens: int64(i), OutputTokens: 1}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := s.RecordObject(Object{ID: "resp_gone", AccountID: "acct"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteObject(ctx, "resp_gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordObject(Object{ID: "late", AccountID: "acct"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("RecordObject after Close: %v", err)
	}

	s = openAt(t, path, Options{})
	for i := range 50 {
		id := "resp_" + string(rune('A'+i%26)) + string(rune('a'+i/26))
		o, err := s.Object(ctx, id)
		if err != nil || o.AccountID != "acct" || o.InputTokens != int64(i) || o.OutputTokens != 1 || o.DeletedAt != nil {
			t.Fatalf("%s after reopen: %+v, %v", id, o, err)
		}
	}
	if o, err := s.Object(ctx, "resp_gone"); err != nil || o.DeletedAt == nil {
		t.Fatalf("deleted object after reopen: %+v, %v", o, err)
	}
	if n := queryInt(t, s.r, `SELECT COUNT(*) FROM provider_objects`); n != 51 {
		t.Fatalf("%d rows, want 51", n)
	}
}

// A batch that fails to commit is retried; meanwhile the records answer
// from memory.
func TestObjectsRetryFailedCommit(t *testing.T) {
	ctx := context.Background()
	var errs []error
	var mu sync.Mutex
	s := openTemp(t, Options{OnWriteError: func(err error, _ int) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}})
	// Make the table unwritable for a moment: a trigger that aborts inserts.
	failInserts(t, s, "provider_objects", "disk says no")
	if err := s.RecordObject(Object{ID: "resp_x", AccountID: "a", InputTokens: 7}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(errs)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no write error reported")
		}
		time.Sleep(time.Millisecond)
	}
	if o, err := s.Object(ctx, "resp_x"); err != nil || o.InputTokens != 7 {
		t.Fatalf("while failing: %+v, %v", o, err)
	}
	dropFailInserts(t, s, "provider_objects")
	waitObjectsCommitted(t, s)
	if n := queryInt(t, s.r, `SELECT input_tokens FROM provider_objects WHERE id = 'resp_x'`); n != 7 {
		t.Fatalf("committed input_tokens %d", n)
	}
}
