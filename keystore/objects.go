package keystore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Provider-side objects: what a provider keeps on the operator's account
// because a client asked for it through the gateway (for now, stored
// Responses API responses). The gateway records who created each one, so
// that only that account may use it again.
//
// Recording never slows settlement: RecordObject and DeleteObject change an
// in-memory map at once and queue the row for a small writer goroutine of
// their own (objectLoop), which commits queued rows in one short
// transaction per batch. Until its row is committed, the map entry is the
// truth (Object reads it first); once committed, the entry is dropped and
// the database answers. Close drains the queue, so a graceful stop or
// reload loses nothing and the records are there after a restart. A crash
// can lose the records of the last moments before it: the objects then
// look unknown, and the gateway refuses to use them (fails closed) rather
// than give them to anyone.

// Kinds of provider objects.
const (
	ObjectResponse = "response"
)

// maxObjectIDBytes bounds the id of a provider object.
const maxObjectIDBytes = 256

// Object is one provider-side object created through the gateway.
type Object struct {
	ID        string
	Kind      string // ObjectResponse
	AccountID string
	KeyID     string
	CreatedAt time.Time
	// InputTokens and OutputTokens are the usage of the request that
	// created it (for a response: its input, which includes the context of
	// the response it continued, and its output).
	InputTokens, OutputTokens int64
	// DeletedAt is when it was deleted through the gateway; nil while it
	// exists.
	DeletedAt *time.Time
}

// objectLog is the queue between the request path and objectLoop, and the
// map of rows not committed yet.
type objectLog struct {
	mu      sync.Mutex
	pending map[string]pendingObject // by id: not committed yet
	ops     []objectOp
	gen     uint64 // of the last op queued
	closed  bool
	wake    chan struct{} // capacity 1
	done    chan struct{} // closed when objectLoop has drained and returned
	err     error         // set before done is closed if it gave up on records
}

type pendingObject struct {
	obj Object
	gen uint64 // of the op that made this entry
}

// objectOp is one queued write: an insert, or a deletion of obj.ID.
type objectOp struct {
	obj    Object
	delete bool
	gen    uint64
}

func newObjectLog() *objectLog {
	return &objectLog{pending: make(map[string]pendingObject), wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// push queues op and makes its entry the truth for op.obj.ID; the caller
// holds l.mu.
func (l *objectLog) pushLocked(op objectOp) {
	l.gen++
	op.gen = l.gen
	l.ops = append(l.ops, op)
	l.pending[op.obj.ID] = pendingObject{obj: op.obj, gen: op.gen}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// checkObjectID validates the id of a provider object.
func checkObjectID(id string) error {
	if id == "" || len(id) > maxObjectIDBytes {
		return fmt.Errorf("%w: object id must be 1 to %d bytes", ErrInvalid, maxObjectIDBytes)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: object id %q has a character outside printable ASCII", ErrInvalid, id)
		}
	}
	return nil
}

// RecordObject records that o.AccountID (with o.KeyID) created the provider
// object o.ID. It does not wait for the disk: the record is visible to
// Object at once and committed shortly after by the store's object writer
// (see the comment at the top of objects.go). An id recorded before, for
// any account, keeps its first owner: the call does nothing. CreatedAt
// defaults to now; Kind to ObjectResponse.
func (s *Store) RecordObject(o Object) error {
	if err := checkObjectID(o.ID); err != nil {
		return err
	}
	if o.AccountID == "" {
		return fmt.Errorf("%w: object %q has no account", ErrInvalid, o.ID)
	}
	if o.InputTokens < 0 || o.OutputTokens < 0 {
		return fmt.Errorf("%w: token counts must not be negative", ErrInvalid)
	}
	if o.Kind == "" {
		o.Kind = ObjectResponse
	}
	if o.CreatedAt.IsZero() {
		o.CreatedAt = s.now()
	}
	o.CreatedAt = fromMS(unixMS(o.CreatedAt))
	o.DeletedAt = nil
	o.KeyID = clipBytes(o.KeyID, maxLabelBytes)
	l := s.objects
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("recording object %q: %w", o.ID, ErrClosed)
	}
	if _, ok := l.pending[o.ID]; ok {
		return nil // first owner wins
	}
	l.pushLocked(objectOp{obj: o})
	return nil
}

// Object returns the provider object id as recorded, deleted or not
// (DeletedAt says). An id never recorded is an error wrapping ErrNotFound.
func (s *Store) Object(ctx context.Context, id string) (Object, error) {
	l := s.objects
	l.mu.Lock()
	p, ok := l.pending[id]
	closed := l.closed
	l.mu.Unlock()
	if ok {
		return p.obj, nil
	}
	if closed || s.isClosed() {
		return Object{}, ErrClosed
	}
	var (
		o       = Object{ID: id}
		keyID   sql.NullString
		created int64
		deleted sql.NullInt64
	)
	err := s.r.QueryRowContext(ctx, `SELECT kind, account_id, key_id, created_at, input_tokens, output_tokens, deleted_at
		FROM provider_objects WHERE id = ?`, id).Scan(&o.Kind, &o.AccountID, &keyID, &created, &o.InputTokens, &o.OutputTokens, &deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return Object{}, fmt.Errorf("object %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Object{}, fmt.Errorf("reading object %q: %w", id, err)
	}
	o.KeyID, o.CreatedAt, o.DeletedAt = keyID.String, fromMS(created), nullMS(deleted)
	return o, nil
}

// DeleteObject marks the provider object id deleted (the provider deleted
// it). Like RecordObject it does not wait for the disk. An id never
// recorded is an error wrapping ErrNotFound; one deleted already is left
// as it is.
func (s *Store) DeleteObject(ctx context.Context, id string) error {
	o, err := s.Object(ctx, id)
	if err != nil {
		return err
	}
	if o.DeletedAt != nil {
		return nil
	}
	now := fromMS(unixMS(s.now()))
	l := s.objects
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("deleting object %q: %w", id, ErrClosed)
	}
	if p, ok := l.pending[id]; ok {
		o = p.obj // newer than what was read
	}
	o.DeletedAt = &now
	l.pushLocked(objectOp{obj: o, delete: true})
	return nil
}

// objectLoop is the object writer goroutine: it commits what is queued, a
// batch per transaction, until the store closes and the queue is drained
// (or, if the database keeps failing then, DrainTimeout has passed).
func (s *Store) objectLoop() {
	l := s.objects
	defer close(l.done)
	var deadline time.Time
	for {
		l.mu.Lock()
		ops, closed := l.ops, l.closed
		l.ops = nil
		l.mu.Unlock()
		if len(ops) == 0 {
			if closed {
				return
			}
			select {
			case <-l.wake:
			case <-s.closed:
				l.mu.Lock()
				l.closed = true
				l.mu.Unlock()
			}
			continue
		}
		delay := minRetryDelay
		for attempt := 1; ; attempt++ {
			err := s.commitObjects(ops)
			if err == nil {
				break
			}
			if s.isClosed() {
				if deadline.IsZero() {
					deadline = time.Now().Add(s.drainTimeout)
				}
				if time.Now().After(deadline) {
					l.err = fmt.Errorf("closing key store: gave up on %d provider object records after %s: %w", len(ops), s.drainTimeout, err)
					s.reportWriteError(l.err)
					return
				}
			}
			s.reportWriteError(fmt.Errorf("committing %d provider object records (attempt %d, retrying in %s): %w", len(ops), attempt, delay, err))
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.closed:
				t.Stop()
				time.Sleep(min(delay, minRetryDelay))
			}
			delay = min(2*delay, maxRetryDelay)
		}
		// Committed: the database answers for these ids now, unless a
		// newer op (queued meanwhile) still owns the entry.
		l.mu.Lock()
		for _, op := range ops {
			if p, ok := l.pending[op.obj.ID]; ok && p.gen <= op.gen {
				delete(l.pending, op.obj.ID)
			}
		}
		l.mu.Unlock()
	}
}

// commitObjects writes a batch of object records in one transaction.
func (s *Store) commitObjects(ops []objectOp) error {
	ctx, cancel := s.backgroundWriteContext(context.Background())
	defer cancel()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, op := range ops {
		o := op.obj
		if op.delete {
			if _, err := tx.ExecContext(ctx, `UPDATE provider_objects SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL`,
				unixMS(*o.DeletedAt), o.ID); err != nil {
				return fmt.Errorf("deleting object %q: %w", o.ID, err)
			}
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO provider_objects (id, kind, account_id, key_id, created_at, input_tokens, output_tokens)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING`,
			o.ID, o.Kind, o.AccountID, nullText(o.KeyID), unixMS(o.CreatedAt), o.InputTokens, o.OutputTokens); err != nil {
			return fmt.Errorf("recording object %q: %w", o.ID, err)
		}
	}
	return tx.Commit()
}
