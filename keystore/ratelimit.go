package keystore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
)

// Rate limits cap how fast a key lineage, an account or a model may be
// used: requests and tokens per minute (a sliding window of 60 seconds),
// requests and tokens per UTC day (a calendar day), and requests in flight.
// They are checked and counted by ReserveFor under the store's lock, in
// memory (no I/O), and given back when the hold ends (Release or Settle).
//
// The exact rules, for a limit L of each kind, at a request admitted at
// time t (the store's clock) asking for T tokens (WithRate's Tokens):
//
//   - rpm: at most L requests are admitted in any window (t-60s, t]: the
//     request is admitted iff fewer than L were admitted in (t-60s, t]. A
//     request admitted at time a stops counting at a+60s exactly.
//   - tpm: the request is admitted iff W + T <= L, where W is the sum of the
//     token counts of the requests admitted in (t-60s, t]: a request in
//     flight counts its estimate T, a request that ended counts what it
//     consumed (Settle: the charge's prompt + completion tokens, cached
//     tokens included as input tokens; Release: 0), still at its admission
//     time. So W may exceed L after a settlement reports more than the
//     estimate; then nothing more is admitted until enough leaves the
//     window. Requests without a token estimate (T = 0) are not checked or
//     counted. A request with T > L can never be admitted (TooLarge).
//   - rpd, tpd: the same, counted per calendar day in UTC instead of a
//     sliding window (counts start at 0 at 00:00 UTC).
//   - concurrency: the request is admitted iff fewer than L holds of the
//     scope are open; a hold counts from ReserveFor until it is released
//     or settled.
//
// A refused request counts nowhere and holds nothing.

// RateLimits are the rate limits of one scope. A zero field sets no limit of
// that kind.
type RateLimits struct {
	// RPM is the most requests admitted in any 60 s window.
	RPM int64 `json:"rpm,omitempty"`
	// TPM is the most tokens (input + output) in any 60 s window.
	TPM int64 `json:"tpm,omitempty"`
	// Concurrency is the most requests in flight at once.
	Concurrency int64 `json:"concurrency,omitempty"`
	// RPD is the most requests admitted per UTC day.
	RPD int64 `json:"rpd,omitempty"`
	// TPD is the most tokens per UTC day.
	TPD int64 `json:"tpd,omitempty"`
}

// maxRateLimit bounds every limit (a billion per window is far above any
// provider's).
const maxRateLimit = 1_000_000_000_000

// IsZero reports whether no limit is set.
func (l RateLimits) IsZero() bool { return l == RateLimits{} }

// Validate checks that every limit is 0 (none) or positive and not absurd.
func (l RateLimits) Validate() error {
	for _, f := range l.fields() {
		if f.v < 0 || f.v > maxRateLimit {
			return fmt.Errorf("%w: %s limit %d must be between 1 and %d (0: none)", ErrInvalid, f.kind, f.v, int64(maxRateLimit))
		}
	}
	return nil
}

// Rate limit kinds, as errors, views and metrics name them.
const (
	RateRPM         = "rpm"
	RateTPM         = "tpm"
	RateConcurrency = "concurrency"
	RateRPD         = "rpd"
	RateTPD         = "tpd"
)

// Rate limit scopes.
const (
	ScopeKey     = "key"
	ScopeAccount = "account"
	ScopeModel   = "model"
)

type rateField struct {
	kind string
	v    int64
}

func (l RateLimits) fields() [5]rateField {
	return [5]rateField{{RateRPM, l.RPM}, {RateTPM, l.TPM}, {RateConcurrency, l.Concurrency}, {RateRPD, l.RPD}, {RateTPD, l.TPD}}
}

// or is l with every kind l does not set taken from d.
func (l RateLimits) or(d RateLimits) RateLimits {
	pick := func(a, b int64) int64 {
		if a > 0 {
			return a
		}
		return b
	}
	return RateLimits{RPM: pick(l.RPM, d.RPM), TPM: pick(l.TPM, d.TPM), Concurrency: pick(l.Concurrency, d.Concurrency),
		RPD: pick(l.RPD, d.RPD), TPD: pick(l.TPD, d.TPD)}
}

func encodeRateLimits(l *RateLimits) any {
	if l == nil || l.IsZero() {
		return nil
	}
	b, _ := json.Marshal(l)
	return string(b)
}

func decodeRateLimits(s string) (*RateLimits, error) {
	if s == "" {
		return nil, nil
	}
	var l RateLimits
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil, fmt.Errorf("decoding rate limits: %w", err)
	}
	if l.IsZero() {
		return nil, nil
	}
	return &l, nil
}

// ErrRateLimited: a rate limit refused the request (see RateLimitError).
var ErrRateLimited = errors.New("rate limit reached")

// RateLimitError is a request refused by a rate limit. It wraps
// ErrRateLimited.
type RateLimitError struct {
	Scope string // ScopeKey, ScopeAccount or ScopeModel
	// ID names the scope: the key id of the request, the account id or the
	// model limit's name.
	ID        string
	Kind      string // RateRPM, RateTPM, RateConcurrency, RateRPD, RateTPD
	Limit     int64
	Used      int64 // counted in the current window (in flight, for concurrency)
	Requested int64 // 1 request, or the request's token estimate
	// RetryAfter is how long until the window has room for the request if
	// nothing else changes (requests in flight settling below or above
	// their estimates move it); 0 for concurrency, which frees up when a
	// request in flight ends.
	RetryAfter time.Duration
	// TooLarge: the request alone asks for more tokens than the limit;
	// it can never be admitted.
	TooLarge bool
	// Status is the state of the tightest limits at the refusal, for
	// the x-ratelimit-* headers.
	Status RateStatus
}

func (e *RateLimitError) Error() string {
	if e.TooLarge {
		return fmt.Sprintf("%s %q: request of %d tokens exceeds the %s limit %d: %v", e.Scope, e.ID, e.Requested, e.Kind, e.Limit, ErrRateLimited)
	}
	return fmt.Sprintf("%s %q: %s limit %d reached (used %d, requested %d, retry in %s): %v",
		e.Scope, e.ID, e.Kind, e.Limit, e.Used, e.Requested, e.RetryAfter, ErrRateLimited)
}

func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// RateStatus is where a request stands against the tightest of the limits
// that applied to it, for OpenAI's x-ratelimit-* headers: Requests* for the
// request limits (rpm, rpd), Tokens* for the token limits (tpm, tpd), each
// the one with the least remaining (ties: the later reset) across the key,
// account and model scopes. Remaining counts this request. Reset is how
// long until the remaining count next rises if nothing else is admitted:
// until the oldest request (tokens) counted leaves the 60 s window, or
// until the next UTC midnight for a day limit.
type RateStatus struct {
	HasRequests       bool
	RequestsLimit     int64
	RequestsRemaining int64
	RequestsReset     time.Duration
	HasTokens         bool
	TokensLimit       int64
	TokensRemaining   int64
	TokensReset       time.Duration
}

// RateRequest says which rate limits apply to a request besides those
// stored on its key lineage and account (see WithRate).
type RateRequest struct {
	// Tokens is the request's token estimate, counted against tpm and tpd
	// until the hold ends and then corrected to what it consumed; 0: the
	// request is not counted against token limits.
	Tokens int64
	// KeyDefaults apply to the key lineage for every kind its own limits
	// leave unset; AccountDefaults likewise to the account.
	KeyDefaults, AccountDefaults RateLimits
	// Model names a model limit shared by every request that gives the
	// same name (an operator's limit on a provider model); "": none.
	Model       string
	ModelLimits RateLimits
}

// WithRate applies rate limits to the hold besides the key lineage's and the
// account's own (which apply whether or not it is given). It combines with
// the balance options (RequireCovered, UpTo). r is only read during the call;
// nil adds nothing.
func WithRate(r *RateRequest) ReserveOption { return ReserveOption{rate: r, withRate: true} }

const (
	rateWindow = int64(60 * time.Second)
	rateDay    = int64(24 * time.Hour)
)

// rateEntry is one admitted request in a sliding window: its admission time
// (unix ns) and its weight (1 request, or its tokens).
type rateEntry struct{ at, weight int64 }

// slidingLog is the exact sliding window of one limit: a ring of the
// entries admitted in the last 60 s, oldest first, and their sum. Each
// entry has a sequence number (pushes so far), by which a hold corrects its
// weight.
type slidingLog struct {
	buf     []rateEntry // ring; len is 0 or a power of two
	head, n int
	headSeq uint64 // sequence number of buf[head]
	sum     int64
}

// expire drops the entries that left the window (t-60s, t].
func (l *slidingLog) expire(now int64) {
	mask := len(l.buf) - 1
	for l.n > 0 && l.buf[l.head].at+rateWindow <= now {
		l.sum -= l.buf[l.head].weight
		l.head = (l.head + 1) & mask
		l.n--
		l.headSeq++
	}
	if l.n == 0 && len(l.buf) > 1024 {
		l.buf, l.head = nil, 0 // give back the memory of a burst
	}
}

// push adds an entry and returns its sequence number.
func (l *slidingLog) push(at, weight int64) uint64 {
	if l.n == len(l.buf) {
		grown := make([]rateEntry, max(8, 2*len(l.buf)))
		for i := range l.n {
			grown[i] = l.buf[(l.head+i)&(len(l.buf)-1)]
		}
		l.buf, l.head = grown, 0
	}
	l.buf[(l.head+l.n)&(len(l.buf)-1)] = rateEntry{at, weight}
	l.n++
	l.sum += weight
	return l.headSeq + uint64(l.n-1)
}

// correct sets the weight of entry seq if it is still in the window.
func (l *slidingLog) correct(seq uint64, weight int64) {
	if seq < l.headSeq || seq >= l.headSeq+uint64(l.n) {
		return
	}
	e := &l.buf[(l.head+int(seq-l.headSeq))&(len(l.buf)-1)]
	l.sum += weight - e.weight
	e.weight = weight
}

// waitFor is how long from now until the window has room for need more
// under limit, if nothing else changes.
func (l *slidingLog) waitFor(need, limit, now int64) time.Duration {
	sum := l.sum
	mask := len(l.buf) - 1
	for i := 0; i < l.n && sum+need > limit; i++ {
		e := l.buf[(l.head+i)&mask]
		sum -= e.weight
		if sum+need <= limit {
			return time.Duration(e.at + rateWindow - now)
		}
	}
	return 0
}

// oldestReset is how long until the oldest entry leaves the window (0 when
// empty).
func (l *slidingLog) oldestReset(now int64) time.Duration {
	if l.n == 0 {
		return 0
	}
	return time.Duration(l.buf[l.head].at + rateWindow - now)
}

// rateState is the counting state of one scope (a key lineage, an account
// or a model limit). Fields are guarded by Store.acctMu.
type rateState struct {
	own     RateLimits // stored on the key lineage or account; zero for a model
	applied RateLimits // the defaults (RateRequest) of the last admission, for views; a model's limits
	seen    bool       // applied is set

	reqMin, tokMin slidingLog
	day            int64 // unix ns of the UTC day counted in reqDay and tokDay
	reqDay, tokDay int64
	inflight       int64

	sync *rateSyncState // the other instances' counts (ratelimit_sync.go); nil: alone
}

// rollDay moves the day counters to the UTC day holding now.
func (st *rateState) rollDay(now int64) {
	if now >= st.day+rateDay || now < st.day {
		st.day = now - now%rateDay
		if now < 0 && now%rateDay != 0 {
			st.day -= rateDay
		}
		st.reqDay, st.tokDay = 0, 0
	}
}

// rateCounts are a scope's counts at a moment: this store's plus, with the
// sync, the other instances'.
type rateCounts struct {
	reqMin, tokMin, reqDay, tokDay, inflight int64
	remoteReqMin, remoteTokMin               int64
}

// countsLocked sums the scope's counts at now (windows expired and the day
// rolled by the caller); the caller holds acctMu.
func (st *rateState) countsLocked(now int64) rateCounts {
	c := rateCounts{reqMin: st.reqMin.sum, tokMin: st.tokMin.sum, reqDay: st.reqDay, tokDay: st.tokDay, inflight: st.inflight}
	if y := st.sync; y != nil && y.remote != nil {
		c.remoteReqMin, c.remoteTokMin = y.remote.window(now)
		rd, td := y.remote.dayCounts(st.day)
		c.reqMin += c.remoteReqMin
		c.tokMin += c.remoteTokMin
		c.reqDay += rd
		c.tokDay += td
		c.inflight += y.remote.inflight
	}
	return c
}

// waitMinLocked is how long until a minute window has room for need under
// limit, with remote counted by the other instances: when this store's own
// entries leaving cannot make room, until the other instances' oldest
// bucket leaves.
func (st *rateState) waitMinLocked(l *slidingLog, need, limit, remote, now int64, tokens bool) time.Duration {
	if remote == 0 {
		return l.waitFor(need, limit, now)
	}
	if w := l.waitFor(need, limit-remote, now); w > 0 {
		return w
	}
	wait := time.Duration(rateWindow)
	for _, b := range st.sync.remote.secs {
		if d := time.Duration((b.bucket+1)*int64(time.Second) + rateWindow - now); d > 0 && d < wait {
			wait = d
		}
	}
	return wait
}

// rateRef is what a hold counted in one scope, to give back when it ends.
type rateRef struct {
	st        *rateState
	tokens    int64  // the estimate counted
	tokSeq    uint64 // entry in st.tokMin, when tokMin is set
	tokMin    bool
	tokDay    bool // counted in st.tokDay of day
	day       int64
	at        int64 // admission time, unix ns
	countedIn bool  // counted in st.inflight
}

// holdRates is what a hold counted against rate limits.
type holdRates struct {
	refs   [3]rateRef
	n      int
	status RateStatus
}

// holdWithRates allocates a hold and its rate counts at once.
type holdWithRates struct {
	Hold
	rates holdRates
}

// rateScope is one scope a request is checked against.
type rateScope struct {
	st       *rateState
	limits   RateLimits // in force: the own limits, completed by the defaults
	defaults RateLimits // of the request (a model's: its limits)
	scope    string
	id       string
}

// rateStateLocked finds or makes the state of name in m (prefix names the
// kind of scope for the sync: "k:" key lineages, "m:" models); the caller
// holds acctMu.
func (s *Store) rateStateLocked(m map[string]*rateState, prefix, name string) *rateState {
	st := m[name]
	if st == nil {
		st = &rateState{}
		s.syncStateLocked(st, prefix+name)
		m[name] = st
	}
	return st
}

// accountRateLocked finds or makes an account's state; the caller holds
// acctMu.
func (s *Store) accountRateLocked(a *accountState) *rateState {
	if a.rate == nil {
		a.rate = &rateState{}
		s.syncStateLocked(a.rate, "a:"+a.id)
	}
	return a.rate
}

// rateScopesLocked collects the scopes that limit the request; the caller
// holds acctMu. Scopes without any limit are left out (and get no state).
func (s *Store) rateScopesLocked(id Identity, a *accountState, r *RateRequest, out *[3]rateScope) int {
	n := 0
	var kd, ad, ml RateLimits
	if r != nil {
		kd, ad, ml = r.KeyDefaults, r.AccountDefaults, r.ModelLimits
	}
	if id.lineage != "" {
		st := s.keyRates[id.lineage]
		var own RateLimits
		if st != nil {
			own = st.own
		}
		if l := own.or(kd); !l.IsZero() {
			if st == nil {
				st = s.rateStateLocked(s.keyRates, "k:", id.lineage)
			}
			out[n] = rateScope{st, l, kd, ScopeKey, id.KeyID}
			n++
		}
	}
	var own RateLimits
	if a.rate != nil {
		own = a.rate.own
	}
	if l := own.or(ad); !l.IsZero() {
		out[n] = rateScope{s.accountRateLocked(a), l, ad, ScopeAccount, a.id}
		n++
	}
	if r != nil && r.Model != "" && !ml.IsZero() {
		out[n] = rateScope{s.rateStateLocked(s.modelRates, "m:", r.Model), ml, ml, ScopeModel, r.Model}
		n++
	}
	return n
}

// checkRatesLocked decides whether the scopes admit a request of tokens at
// now; the caller holds acctMu. Of several refusing limits it returns the
// one with the longest wait (a request that can never fit first). With the
// sync (ratelimit_sync.go), the other instances' counts add to the local
// ones, and, while other instances share them (syncEvery > 0), each limit
// admits at most its allowance between two syncs (syncEvery apart).
func checkRatesLocked(scopes []rateScope, tokens, now int64, syncEvery time.Duration) *RateLimitError {
	var worst *RateLimitError
	refuse := func(e *RateLimitError) {
		if worst == nil || (e.TooLarge && !worst.TooLarge) || (e.TooLarge == worst.TooLarge && e.RetryAfter > worst.RetryAfter) {
			worst = e
		}
	}
	for _, sc := range scopes {
		st, l := sc.st, sc.limits
		st.reqMin.expire(now)
		st.tokMin.expire(now)
		st.rollDay(now)
		untilMidnight := time.Duration(st.day + rateDay - now)
		c := st.countsLocked(now)
		if l.Concurrency > 0 && c.inflight >= l.Concurrency {
			refuse(&RateLimitError{Scope: sc.scope, ID: sc.id, Kind: RateConcurrency, Limit: l.Concurrency, Used: c.inflight, Requested: 1})
		}
		if l.RPM > 0 && c.reqMin+1 > l.RPM {
			refuse(&RateLimitError{Scope: sc.scope, ID: sc.id, Kind: RateRPM, Limit: l.RPM, Used: c.reqMin, Requested: 1,
				RetryAfter: st.waitMinLocked(&st.reqMin, 1, l.RPM, c.remoteReqMin, now, false)})
		}
		if l.RPD > 0 && c.reqDay+1 > l.RPD {
			refuse(&RateLimitError{Scope: sc.scope, ID: sc.id, Kind: RateRPD, Limit: l.RPD, Used: c.reqDay, Requested: 1,
				RetryAfter: untilMidnight})
		}
		if tokens > 0 && l.TPM > 0 && c.tokMin+tokens > l.TPM {
			e := &RateLimitError{Scope: sc.scope, ID: sc.id, Kind: RateTPM, Limit: l.TPM, Used: c.tokMin, Requested: tokens}
			if tokens > l.TPM {
				e.TooLarge = true
			} else {
				e.RetryAfter = st.waitMinLocked(&st.tokMin, tokens, l.TPM, c.remoteTokMin, now, true)
			}
			refuse(e)
		}
		if tokens > 0 && l.TPD > 0 && c.tokDay+tokens > l.TPD {
			e := &RateLimitError{Scope: sc.scope, ID: sc.id, Kind: RateTPD, Limit: l.TPD, Used: c.tokDay, Requested: tokens,
				RetryAfter: untilMidnight}
			e.TooLarge = tokens > l.TPD
			refuse(e)
		}
		if y := st.sync; y != nil && syncEvery > 0 {
			// The local allowance between two syncs (see ratelimit_sync.go).
			for _, k := range [...]struct {
				kind  string
				limit int64
			}{{RateRPM, l.RPM}, {RateRPD, l.RPD}, {RateConcurrency, l.Concurrency}} {
				if k.limit > 0 && y.sinceReq >= allowance(k.limit) {
					refuse(&RateLimitError{Scope: sc.scope, ID: sc.id, Kind: k.kind, Limit: k.limit, Used: y.sinceReq, Requested: 1, RetryAfter: syncEvery})
				}
			}
			for _, k := range [...]struct {
				kind  string
				limit int64
			}{{RateTPM, l.TPM}, {RateTPD, l.TPD}} {
				if tokens > 0 && k.limit > 0 && y.sinceTok > 0 && y.sinceTok+tokens > allowance(k.limit) {
					refuse(&RateLimitError{Scope: sc.scope, ID: sc.id, Kind: k.kind, Limit: k.limit, Used: y.sinceTok, Requested: tokens, RetryAfter: syncEvery})
				}
			}
		}
	}
	if worst != nil {
		worst.Status = rateStatusLocked(scopes, now)
		if worst.TooLarge {
			worst.RetryAfter = 0
		}
	}
	return worst
}

// countRatesLocked counts an admitted request in every scope and returns
// what to give back; the caller holds acctMu and checked the scopes at now.
func countRatesLocked(scopes []rateScope, tokens, now int64, refs *[3]rateRef) {
	for i, sc := range scopes {
		st, l := sc.st, sc.limits
		st.applied, st.seen = sc.defaults, true
		ref := rateRef{st: st, tokens: tokens, day: st.day, at: now, countedIn: true}
		st.inflight++
		if l.RPM > 0 {
			st.reqMin.push(now, 1)
		}
		st.reqDay++
		if tokens > 0 {
			if l.TPM > 0 {
				ref.tokSeq, ref.tokMin = st.tokMin.push(now, tokens), true
			}
			st.tokDay += tokens
			ref.tokDay = true
		}
		if y := st.sync; y != nil {
			y.sinceReq++
			y.sinceTok += tokens
			y.addPending(spanSecond, now/int64(time.Second), 1, tokens)
			y.addPending(spanDay, st.day/int64(time.Millisecond), 1, tokens)
		}
		refs[i] = ref
	}
}

// rateStatusLocked is the tightest request and token limits of the scopes
// at now, as counted (after an admission, the request included).
func rateStatusLocked(scopes []rateScope, now int64) RateStatus {
	var rs RateStatus
	pick := func(has *bool, limit, remaining *int64, reset *time.Duration, l, used int64, r time.Duration) {
		rem := max(l-used, 0)
		if !*has || rem < *remaining || (rem == *remaining && r > *reset) {
			*has, *limit, *remaining, *reset = true, l, rem, r
		}
	}
	for _, sc := range scopes {
		st, l := sc.st, sc.limits
		untilMidnight := time.Duration(st.day + rateDay - now)
		c := st.countsLocked(now)
		if l.RPM > 0 {
			pick(&rs.HasRequests, &rs.RequestsLimit, &rs.RequestsRemaining, &rs.RequestsReset, l.RPM, c.reqMin, st.reqMin.oldestReset(now))
		}
		if l.RPD > 0 {
			pick(&rs.HasRequests, &rs.RequestsLimit, &rs.RequestsRemaining, &rs.RequestsReset, l.RPD, c.reqDay, untilMidnight)
		}
		if l.TPM > 0 {
			pick(&rs.HasTokens, &rs.TokensLimit, &rs.TokensRemaining, &rs.TokensReset, l.TPM, c.tokMin, st.tokMin.oldestReset(now))
		}
		if l.TPD > 0 {
			pick(&rs.HasTokens, &rs.TokensLimit, &rs.TokensRemaining, &rs.TokensReset, l.TPD, c.tokDay, untilMidnight)
		}
	}
	return rs
}

// endRatesLocked gives back what a hold counted: it leaves the scopes'
// requests in flight, and its token estimate becomes tokens, the tokens it
// consumed. The caller holds acctMu.
func (h *Hold) endRatesLocked(tokens int64) {
	if h.rl == nil {
		return
	}
	for i := range h.rl.n {
		ref := &h.rl.refs[i]
		st := ref.st
		if ref.countedIn {
			st.inflight--
			ref.countedIn = false
		}
		if ref.tokMin {
			st.tokMin.correct(ref.tokSeq, tokens)
		}
		if ref.tokDay && st.day == ref.day {
			st.tokDay += tokens - ref.tokens
		}
		if y := st.sync; y != nil && ref.tokDay && tokens != ref.tokens {
			y.addPending(spanSecond, ref.at/int64(time.Second), 0, tokens-ref.tokens)
			if st.day == ref.day {
				y.addPending(spanDay, ref.day/int64(time.Millisecond), 0, tokens-ref.tokens)
			}
		}
	}
}

// RateStatus is where the hold's request stood against the tightest rate
// limits right after its admission (see RateStatus); the zero value when no
// limit applied.
func (h *Hold) RateStatus() RateStatus {
	if h.rl == nil {
		return RateStatus{}
	}
	return h.rl.status
}

// RateUsage is one limit of a scope and its use right now.
type RateUsage struct {
	Kind  string `json:"kind"`
	Scope string `json:"scope"`
	// Name is the model limit's name (scope model only).
	Name  string `json:"name,omitempty"`
	Limit int64  `json:"limit"`
	// Used is what counts in the current window (requests in flight for
	// concurrency); Remaining is Limit - Used, at least 0.
	Used      int64 `json:"used"`
	Remaining int64 `json:"remaining"`
	// ResetsAt is when Used next drops if nothing else is admitted: the
	// oldest entry leaves the 60 s window, or the next UTC midnight; absent
	// for concurrency and for an empty window.
	ResetsAt *time.Time `json:"resets_at,omitempty"`
	// Default: the limit comes from the gateway's config (a default for
	// keys or accounts that set none of this kind), not from the key's or
	// account's own limits.
	Default bool `json:"default,omitempty"`
}

// usageLocked lists the limits of a state with their use at now; the
// caller holds acctMu. Kinds the state's own limits leave unset are marked
// Default (for a model limit, which has no own limits: none is).
func (st *rateState) usageLocked(scope, name string, limits RateLimits, now int64) []RateUsage {
	own := st.own
	if scope == ScopeModel {
		own = limits
	}
	st.reqMin.expire(now)
	st.tokMin.expire(now)
	st.rollDay(now)
	at := func(d time.Duration) *time.Time {
		if d <= 0 {
			return nil
		}
		t := time.Unix(0, now+int64(d)).UTC()
		return &t
	}
	midnight := time.Unix(0, st.day+rateDay).UTC()
	var out []RateUsage
	add := func(kind string, limit, ownLimit, used int64, resets *time.Time) {
		if limit > 0 {
			out = append(out, RateUsage{Kind: kind, Scope: scope, Name: name, Limit: limit, Used: used,
				Remaining: max(limit-used, 0), ResetsAt: resets, Default: ownLimit == 0})
		}
	}
	c := st.countsLocked(now)
	add(RateRPM, limits.RPM, own.RPM, c.reqMin, at(st.reqMin.oldestReset(now)))
	add(RateTPM, limits.TPM, own.TPM, c.tokMin, at(st.tokMin.oldestReset(now)))
	add(RateConcurrency, limits.Concurrency, own.Concurrency, c.inflight, nil)
	add(RateRPD, limits.RPD, own.RPD, c.reqDay, &midnight)
	add(RateTPD, limits.TPD, own.TPD, c.tokDay, &midnight)
	return out
}

// effectiveLocked is the limits a view shows for a key lineage or account:
// its own, with the defaults of the last request checked against it.
func (st *rateState) effectiveLocked() RateLimits {
	if st.seen {
		return st.own.or(st.applied)
	}
	return st.own
}

// KeyRateUsage lists the rate limits of a key's lineage and of its
// account, with their use right now. Limits that come from defaults
// (RateRequest) show once a request of the key was checked against them
// since the store opened.
func (s *Store) KeyRateUsage(ctx context.Context, keyID string) ([]RateUsage, error) {
	lineage, err := s.lineageOf(ctx, keyID)
	if err != nil {
		return nil, err
	}
	var accountID string
	if err := s.r.QueryRowContext(ctx, `SELECT account_id FROM api_keys WHERE id = ?`, keyID).Scan(&accountID); err != nil {
		return nil, fmt.Errorf("reading key %q: %w", keyID, err)
	}
	now := s.now().UnixNano()
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	var out []RateUsage
	if st := s.keyRates[lineage]; st != nil {
		out = append(out, st.usageLocked(ScopeKey, "", st.effectiveLocked(), now)...)
	}
	if a := s.accounts[accountID]; a != nil && a.rate != nil {
		out = append(out, a.rate.usageLocked(ScopeAccount, "", a.rate.effectiveLocked(), now)...)
	}
	return out, nil
}

// AccountRateUsage lists the rate limits of an account with their use.
func (s *Store) AccountRateUsage(accountID string) ([]RateUsage, error) {
	now := s.now().UnixNano()
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	a := s.accounts[accountID]
	if a == nil {
		return nil, fmt.Errorf("account %q: %w", accountID, ErrNotFound)
	}
	if a.rate == nil {
		return nil, nil
	}
	return a.rate.usageLocked(ScopeAccount, "", a.rate.effectiveLocked(), now), nil
}

// ModelRateUsage lists the model limits requests were checked against
// since the store opened, with their use, by name.
func (s *Store) ModelRateUsage() []RateUsage {
	now := s.now().UnixNano()
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	var out []RateUsage
	for _, name := range slices.Sorted(maps.Keys(s.modelRates)) {
		st := s.modelRates[name]
		out = append(out, st.usageLocked(ScopeModel, name, st.applied, now)...)
	}
	return out
}

// satAdd is a+b for non-negative a and b, saturating.
func satAdd(a, b int64) int64 {
	if c, ok := addInt64(a, b); ok {
		return c
	}
	return math.MaxInt64
}
