package keystore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// Rate limits across several stores on one PostgreSQL database (several
// gateway instances). Each store keeps its exact local windows
// (ratelimit.go) and, every Options.RateSyncInterval, adds what it counted
// since the last sync to the table rate_counts (per instance, scope and
// one-second or one-day bucket) and reads back what the other instances
// counted. Admission then counts, on top of its own windows:
//
//   - requests and tokens of the other instances in every one-second bucket
//     that overlaps the 60 s window (a bucket [b, b+1s) counts while
//     t < b+61s: at most one second longer than exact, never shorter);
//   - their requests and tokens of the current UTC day;
//   - their requests in flight at their last sync.
//
// What the other instances admitted since they last synced is unseen. To
// bound it, while its last sync saw another live instance (one that synced
// in the last 5 s; alone, a store counts exactly as on SQLite), an
// instance admits at most a = max(1, ⌈L/8⌉) requests (tokens,
// for a token limit) per scope and limit between two of its syncs: past
// that it refuses until its next sync, with Retry-After the time to it.
// Since an instance reads right after it writes, what one instance has not
// seen of another spans at most its own sync interval plus the other's,
// in which the other admits at most 2a (two sync periods) when the
// intervals are equal. So, with N instances and equal intervals, a limit L
// admits at most
//
//	L + 2·(N−1)·a
//
// in any window (L exactly with N = 1), plus the requests of an instance
// whose sync fails (it keeps admitting on what it last saw; its failures go
// to Options.OnWriteError).

// rateBucket spans of rate_counts.
const (
	spanSecond    = "s"
	spanDay       = "d"
	spanInflight  = "c"
	spanHeartbeat = "h" // scope "": the instance synced at updated_at
)

// rateSyncState is what a scope's state keeps for the sync; nil on a
// store alone on its database. Fields are guarded by Store.acctMu.
type rateSyncState struct {
	name    string                   // scope in rate_counts: "k:<lineage>", "a:<account>", "m:<model>"
	pending map[rateSyncKey][2]int64 // requests, tokens counted since the last sync
	// admitted since the last sync, for the local allowance: requests and
	// tokens
	sinceReq, sinceTok int64
	remote             *remoteCounts // the other instances', as of the last sync
}

type rateSyncKey struct {
	span   string
	bucket int64 // unix s for spanSecond, unix ms of the UTC day for spanDay
}

// remoteCounts are the other instances' counts of one scope.
type remoteCounts struct {
	secs           []secCount // one-second buckets of the last 61 s
	day            int64      // unix ns of the UTC day of reqDay, tokDay
	reqDay, tokDay int64
	inflight       int64
}

type secCount struct{ bucket, req, tok int64 }

// window sums the buckets that overlap (now-60s, now].
func (r *remoteCounts) window(now int64) (req, tok int64) {
	if r == nil {
		return 0, 0
	}
	for _, b := range r.secs {
		if (b.bucket+1)*int64(time.Second)+rateWindow > now {
			req += b.req
			tok += b.tok
		}
	}
	return req, tok
}

// dayCounts are the other instances' counts of the UTC day starting at
// day (unix ns).
func (r *remoteCounts) dayCounts(day int64) (req, tok int64) {
	if r == nil || r.day != day {
		return 0, 0
	}
	return r.reqDay, r.tokDay
}

// allowance is how much one instance may admit of a limit between two of
// its syncs.
func allowance(limit int64) int64 { return max(1, (limit+7)/8) }

// newInstanceID names this store in rate_counts.
func newInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// syncStateLocked gives a new scope state its sync state, when the store
// syncs; the caller holds acctMu.
func (s *Store) syncStateLocked(st *rateState, name string) {
	if s.rateSyncEvery <= 0 || st.sync != nil {
		return
	}
	st.sync = &rateSyncState{name: name, pending: map[rateSyncKey][2]int64{}, remote: s.rateRemote[name]}
	s.rateSynced = append(s.rateSynced, st)
}

// addPending records a count to send at the next sync.
func (y *rateSyncState) addPending(span string, bucket, req, tok int64) {
	k := rateSyncKey{span, bucket}
	p := y.pending[k]
	p[0] += req
	p[1] += tok
	y.pending[k] = p
}

// rateSyncLoop syncs the rate counts until the store closes.
func (s *Store) rateSyncLoop() {
	defer close(s.rateSyncDone)
	t := time.NewTicker(s.rateSyncEvery)
	defer t.Stop()
	for {
		select {
		case <-s.closed:
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = s.w.ExecContext(ctx, `DELETE FROM rate_counts WHERE instance = ? AND span IN (?, ?)`, s.instanceID, spanInflight, spanHeartbeat)
			cancel()
			return
		case <-t.C:
			if err := s.SyncRates(context.Background()); err != nil && s.onWriteError != nil {
				s.onWriteError(fmt.Errorf("syncing rate limit counts: %w", err), s.PendingWrites())
			}
		}
	}
}

// SyncRates sends what this store counted against rate limits since the
// last sync to the database and reads what the other stores on it
// counted. The sync loop calls it every Options.RateSyncInterval; tests
// call it to sync at a chosen moment. On a store that does not sync it
// does nothing.
func (s *Store) SyncRates(ctx context.Context) error {
	if s.rateSyncEvery <= 0 {
		return nil
	}
	s.rateSyncMu.Lock()
	defer s.rateSyncMu.Unlock()
	type add = rateAdd
	var adds []add
	s.acctMu.Lock()
	now := s.now()
	each := func(st *rateState) {
		if st == nil || st.sync == nil {
			return
		}
		for k, v := range st.sync.pending {
			adds = append(adds, add{scope: st.sync.name, span: k.span, bucket: k.bucket, req: v[0], tok: v[1]})
		}
		clear(st.sync.pending)
		adds = append(adds, add{scope: st.sync.name, span: spanInflight, abs: st.inflight})
	}
	for _, st := range s.rateSynced {
		each(st)
	}
	s.acctMu.Unlock()
	adds = append(adds, add{span: spanHeartbeat, abs: 1})

	nowMS := now.UnixMilli()
	err := func() error {
		tx, err := s.w.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		for _, a := range adds {
			if a.span == spanInflight || a.span == spanHeartbeat {
				_, err = tx.ExecContext(ctx, `INSERT INTO rate_counts (instance, scope, span, bucket, requests, tokens, updated_at)
					VALUES (?, ?, ?, 0, ?, 0, ?)
					ON CONFLICT (instance, scope, span, bucket) DO UPDATE SET requests = excluded.requests, updated_at = excluded.updated_at`,
					s.instanceID, a.scope, a.span, a.abs, nowMS)
			} else {
				_, err = tx.ExecContext(ctx, `INSERT INTO rate_counts (instance, scope, span, bucket, requests, tokens, updated_at)
					VALUES (?, ?, ?, ?, ?, ?, ?)
					ON CONFLICT (instance, scope, span, bucket) DO UPDATE SET requests = rate_counts.requests + excluded.requests,
						tokens = rate_counts.tokens + excluded.tokens, updated_at = excluded.updated_at`,
					s.instanceID, a.scope, a.span, a.bucket, a.req, a.tok, nowMS)
			}
			if err != nil {
				return err
			}
		}
		return tx.Commit()
	}()
	if err != nil {
		// Give the counts back to pending, so that the next sync sends them.
		s.acctMu.Lock()
		s.requeueLocked(adds)
		s.acctMu.Unlock()
		return err
	}

	day := now.UnixNano() - now.UnixNano()%rateDay
	rows, err := s.r.QueryContext(ctx, `SELECT scope, span, bucket, SUM(requests), SUM(tokens) FROM rate_counts
		WHERE instance <> ? AND ((span = ? AND bucket > ?) OR (span = ? AND bucket = ?) OR (span IN (?, ?) AND updated_at > ?))
		GROUP BY scope, span, bucket`,
		s.instanceID, spanSecond, now.Unix()-62, spanDay, day/int64(time.Millisecond), spanInflight, spanHeartbeat,
		nowMS-int64(inflightTTL/time.Millisecond))
	if err != nil {
		return err
	}
	remote := map[string]*remoteCounts{}
	others := 0
	for rows.Next() {
		var (
			scope, span       string
			bucket, req, toks int64
		)
		if err := rows.Scan(&scope, &span, &bucket, &req, &toks); err != nil {
			rows.Close()
			return err
		}
		if span == spanHeartbeat {
			others = int(req)
			continue
		}
		r := remote[scope]
		if r == nil {
			r = &remoteCounts{day: day}
			remote[scope] = r
		}
		switch span {
		case spanSecond:
			r.secs = append(r.secs, secCount{bucket, req, toks})
		case spanDay:
			r.reqDay, r.tokDay = req, toks
		case spanInflight:
			r.inflight = req
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	s.acctMu.Lock()
	s.rateRemote = remote
	s.rateOthers = others
	set := func(st *rateState) {
		if st != nil && st.sync != nil {
			st.sync.remote = remote[st.sync.name]
			st.sync.sinceReq, st.sync.sinceTok = 0, 0
		}
	}
	for _, st := range s.rateSynced {
		set(st)
	}
	s.acctMu.Unlock()

	if s.rateSyncRound++; s.rateSyncRound%100 == 0 {
		// Old buckets are no one's business any more.
		_, err = s.w.ExecContext(ctx, `DELETE FROM rate_counts WHERE (span = ? AND bucket < ?) OR (span = ? AND bucket < ?) OR (span = ? AND updated_at < ?)`,
			spanSecond, now.Unix()-120, spanDay, day/int64(time.Millisecond)-2*rateDay/int64(time.Millisecond),
			spanInflight, nowMS-int64(10*inflightTTL/time.Millisecond))
		if err == nil {
			_, err = s.w.ExecContext(ctx, `DELETE FROM rate_counts WHERE span = ? AND updated_at < ?`, spanHeartbeat, nowMS-int64(10*inflightTTL/time.Millisecond))
		}
	}
	return err
}

// inflightTTL is how long an instance's requests in flight count after its
// last sync (an instance that stopped syncing, or died, stops counting).
const inflightTTL = 5 * time.Second

// rateAdd is one row SyncRates writes: counts to add to a bucket, or the
// requests in flight (abs) of a scope.
type rateAdd struct {
	scope, span   string
	bucket        int64
	req, tok, abs int64
}

// requeueLocked puts counts that failed to sync back into pending; the
// caller holds acctMu.
func (s *Store) requeueLocked(list []rateAdd) {
	if len(list) == 0 {
		return
	}
	byName := make(map[string]*rateSyncState, len(s.rateSynced))
	for _, st := range s.rateSynced {
		byName[st.sync.name] = st.sync
	}
	for _, a := range list {
		if y := byName[a.scope]; y != nil && a.span != spanInflight {
			y.addPending(a.span, a.bucket, a.req, a.tok)
		}
	}
}
