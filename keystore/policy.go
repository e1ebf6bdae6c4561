package keystore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"reflect"
	"strings"
	"time"
)

// A key's policy says what it may use and spend: an optional model allowlist,
// an optional spend limit and an optional expiry. A key and the keys that
// replaced it by rotation form one lineage: they share one policy and one
// spend counter, so rotating a key never resets what it has spent.

// Spend limit periods. Days and months are calendar periods in UTC.
const (
	PeriodTotal = "total"
	PeriodDay   = "day"
	PeriodMonth = "month"
)

// SpendLimit caps what a key lineage may spend in a period.
type SpendLimit struct {
	// Amount is the cap in nano-units, > 0.
	Amount int64 `json:"amount_nano"`
	// Period is PeriodTotal, PeriodDay or PeriodMonth.
	Period string `json:"period"`
}

// Validation bounds of a model allowlist.
const (
	maxAllowedModels = 100
	maxPatternBytes  = 256
)

// ValidateModelPatterns checks an allowlist: each entry a non-empty glob in
// path.Match syntax ("gpt-4o*"), at most 100 of them. It returns the list
// with surrounding spaces trimmed and duplicates removed.
func ValidateModelPatterns(patterns []string) ([]string, error) {
	if len(patterns) > maxAllowedModels {
		return nil, fmt.Errorf("%w: at most %d model patterns, got %d", ErrInvalid, maxAllowedModels, len(patterns))
	}
	out := make([]string, 0, len(patterns))
	seen := make(map[string]bool, len(patterns))
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		switch {
		case p == "":
			return nil, fmt.Errorf("%w: empty model pattern", ErrInvalid)
		case len(p) > maxPatternBytes:
			return nil, fmt.Errorf("%w: model pattern longer than %d bytes", ErrInvalid, maxPatternBytes)
		case strings.ContainsAny(p, " \t\r\n"):
			return nil, fmt.Errorf("%w: model pattern %q contains white space", ErrInvalid, p)
		}
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("%w: model pattern %q: %v", ErrInvalid, p, err)
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// MatchModel reports whether model matches any of the glob patterns.
func MatchModel(patterns []string, model string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, model); ok {
			return true
		}
	}
	return false
}

func (l *SpendLimit) validate() error {
	if l.Amount <= 0 || l.Amount > maxAmountUnits*NanoPerUnit {
		return fmt.Errorf("%w: spend limit %s must be greater than zero", ErrInvalid, FormatAmount(l.Amount))
	}
	switch l.Period {
	case PeriodTotal, PeriodDay, PeriodMonth:
	default:
		return fmt.Errorf("%w: spend limit period must be total, day or month, not %q", ErrInvalid, l.Period)
	}
	return nil
}

// KeyPolicy is the policy a key is created with. The zero value allows every
// model, spends without a cap and never expires.
type KeyPolicy struct {
	ExpiresAt     *time.Time
	AllowedModels []string
	SpendLimit    *SpendLimit
	// ByHolder: the account holder creates the key (the dashboard); the
	// policy is then the key's own, and not an operator's AdminPolicy.
	ByHolder bool
	// RateLimits of the lineage (ratelimit.go); nil or zero: none of its
	// own.
	RateLimits *RateLimits
}

// AdminPolicy is the part of a key lineage's policy that an operator set:
// the ceiling within which the account holder may narrow the key's own
// policy. An account holder may set a model allowlist only of models the
// operator's allows (see ModelsWithin), and a spend limit only of at most
// the operator's amount, per the same period or in total. Without an
// operator's allowlist or limit the holder may set any.
type AdminPolicy struct {
	AllowedModels []string    `json:"allowed_models,omitempty"`
	SpendLimit    *SpendLimit `json:"spend_limit,omitempty"`
}

// adminPolicyColumns are the api_keys columns of the operator's policy.
const adminPolicyColumns = `admin_models, admin_spend_limit, admin_limit_period`

// ceilingOf returns the operator's policy of k.
func ceilingOf(k Key) AdminPolicy {
	if k.AdminPolicy == nil {
		return AdminPolicy{}
	}
	return *k.AdminPolicy
}

// globMeta are the characters that make a model pattern a glob.
const globMeta = `*?[\`

// ModelsWithin reports whether every model that patterns allow is also
// allowed by ceiling (empty ceiling: any model). It is conservative: a
// pattern is within the ceiling if the ceiling lists it, or it is a plain
// model name the ceiling matches, or its literal start begins with the
// literal start of a ceiling pattern of the form "prefix*".
func ModelsWithin(patterns, ceiling []string) bool {
	if len(ceiling) == 0 {
		return true
	}
	if len(patterns) == 0 {
		return false // any model
	}
	for _, p := range patterns {
		if !modelWithin(p, ceiling) {
			return false
		}
	}
	return true
}

func modelWithin(p string, ceiling []string) bool {
	lit := p
	if i := strings.IndexAny(p, globMeta); i >= 0 {
		lit = p[:i]
	} else if MatchModel(ceiling, p) {
		return true
	}
	for _, c := range ceiling {
		if c == p {
			return true
		}
		if pre, ok := strings.CutSuffix(c, "*"); ok && !strings.ContainsAny(pre, globMeta) && strings.HasPrefix(lit, pre) {
			return true
		}
	}
	return false
}

// LimitWithin reports whether limit l is at most ceiling c (nil: no
// ceiling): an amount not above c's, per the same period or in total.
func LimitWithin(l, c *SpendLimit) bool {
	if c == nil {
		return true
	}
	if l == nil {
		return false
	}
	return l.Amount <= c.Amount && (l.Period == c.Period || l.Period == PeriodTotal)
}

func (p *KeyPolicy) validate(now time.Time) error {
	if p.ExpiresAt != nil && !p.ExpiresAt.After(now) {
		return fmt.Errorf("%w: expiry %s is not in the future", ErrInvalid, p.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if p.AllowedModels != nil {
		m, err := ValidateModelPatterns(p.AllowedModels)
		if err != nil {
			return err
		}
		p.AllowedModels = m
	}
	if p.SpendLimit != nil {
		if err := p.SpendLimit.validate(); err != nil {
			return err
		}
	}
	if p.RateLimits != nil {
		if err := p.RateLimits.Validate(); err != nil {
			return err
		}
		if p.RateLimits.IsZero() {
			p.RateLimits = nil
		}
	}
	return nil
}

// KeyUpdate changes a key. Name applies to the key itself; the policy fields
// apply to its whole lineage (the key and its rotation predecessors still in
// their grace period). Each Set flag says whether its field is changed; a
// changed field with a nil value removes that part of the policy.
//
// With AsHolder the account holder makes the change (the dashboard of a user
// who is not an operator): the allowlist and the limit must stay within the
// key's AdminPolicy (ErrNotAllowed otherwise), and clearing one sets it back
// to the operator's; a key an operator disabled stays disabled; an expiry
// may only come earlier. Otherwise an operator makes it, and the allowlist
// and limit set become the AdminPolicy too.
type KeyUpdate struct {
	Name *string

	// Disabled, if set, disables (true) or enables (false) the key itself,
	// not its lineage. A disabled key is refused from the next request on.
	Disabled *bool

	AsHolder bool

	SetExpiry bool
	ExpiresAt *time.Time

	SetAllowedModels bool
	AllowedModels    []string // nil or empty: every model

	SetSpendLimit bool
	SpendLimit    *SpendLimit // nil: no limit

	SetRateLimits bool
	RateLimits    *RateLimits // nil or zero: none of its own
}

// LimitError is the error of a request refused because its key lineage has
// spent its limit. It wraps ErrKeyLimitExceeded.
type LimitError struct {
	KeyID  string
	Limit  SpendLimit
	Spent  int64 // settled in the current period, nano-units
	Held   int64 // held for requests in flight
	Resets *time.Time
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("key %q: %s spend limit %s reached (spent %s, held %s): %v",
		e.KeyID, e.Limit.Period, FormatAmount(e.Limit.Amount), FormatAmount(e.Spent), FormatAmount(e.Held), ErrKeyLimitExceeded)
}

func (e *LimitError) Unwrap() error { return ErrKeyLimitExceeded }

// spendState is the in-memory spend counter of one key lineage with a limit.
// Fields are guarded by Store.acctMu.
type spendState struct {
	limit  SpendLimit
	start  int64 // unix ms: start of the current period (0 for total)
	end    int64 // unix ms: start of the next period (0 for total: never)
	spent  int64 // charged in the current period, settled in memory
	held   int64 // holds in flight counted against the limit
	loaded bool  // spent includes the ledger rows committed before the state existed

	// budget is, on a database shared by several instances, what this
	// instance has leased of the limit in the current period minus what it
	// charged since (lease.go); the limit's rule applies to it there.
	budget int64
}

// periodBounds returns the start and end (unix ms) of the period that holds
// nowMS.
func periodBounds(period string, nowMS int64) (start, end int64) {
	t := fromMS(nowMS)
	switch period {
	case PeriodDay:
		s := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return unixMS(s), unixMS(s.AddDate(0, 0, 1))
	case PeriodMonth:
		s := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return unixMS(s), unixMS(s.AddDate(0, 1, 0))
	}
	return 0, 0
}

// roll moves the state into the period that holds nowMS, forgetting what was
// spent in earlier periods. The caller holds acctMu.
func (st *spendState) roll(nowMS int64) {
	if st.end != 0 && nowMS >= st.end {
		st.start, st.end = periodBounds(st.limit.Period, nowMS)
		st.spent = 0
		st.budget = 0    // leased for the period that ended
		st.loaded = true // nothing committed before the state belongs to this period
	}
}

func (st *spendState) resets() *time.Time {
	if st.end == 0 {
		return nil
	}
	t := fromMS(st.end)
	return &t
}

// spendLoad is a queued request to the ledger writer: add to a new spend
// state what its lineage spent in ledger rows committed before the state was
// installed. The writer runs it in queue order, so the rows queued before it
// are committed and those queued after it are counted in memory.
type spendLoad struct {
	lineage string
	state   *spendState
	done    chan struct{}
}

// KeySpend reports a key lineage's spend in the current period of its limit:
// settled charges, holds in flight, and when the period resets (nil for a
// total limit). ok is false when the key has no spend limit.
func (s *Store) KeySpend(ctx context.Context, keyID string) (spent, held int64, resets *time.Time, ok bool) {
	lineage, err := s.lineageOf(ctx, keyID)
	if err != nil {
		return 0, 0, nil, false
	}
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	st := s.spend[lineage]
	if st == nil {
		return 0, 0, nil, false
	}
	st.roll(unixMS(s.now()))
	if s.cluster != nil {
		// Shared database: committed spend and every instance's leases,
		// the same on each.
		start, resets := st.start, st.resets()
		s.acctMu.Unlock()
		spent, leased, err := s.lineageCommitted(ctx, lineage, start)
		s.acctMu.Lock()
		if err != nil {
			return 0, 0, nil, false
		}
		return spent, leased, resets, true
	}
	return st.spent, st.held, st.resets(), true
}

// lineageSpendSQL sums a lineage's usage charges since the start of its
// period, a UTC day boundary, from the usage rollups (so that retention does
// not forget what a total limit counted).
const lineageSpendSQL = rollupSpendSQL

// loadSpendStates builds the spend counters of every lineage with a limit.
// It runs in Open before the writer starts, so the ledger is complete.
func (s *Store) loadSpendStates(ctx context.Context) error {
	rows, err := s.w.QueryContext(ctx, `SELECT lineage, spend_limit, limit_period FROM api_keys
		WHERE deleted_at IS NULL AND spend_limit IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("loading key policies: %w", err)
	}
	type lim struct {
		lineage string
		limit   SpendLimit
	}
	var limited []lim
	seen := map[string]bool{}
	for rows.Next() {
		var (
			lineage string
			amount  sql.NullInt64
			period  sql.NullString
		)
		if err := rows.Scan(&lineage, &amount, &period); err != nil {
			rows.Close()
			return fmt.Errorf("loading key policies: %w", err)
		}
		if amount.Valid && !seen[lineage] {
			seen[lineage] = true
			limited = append(limited, lim{lineage, SpendLimit{Amount: amount.Int64, Period: period.String}})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("loading key policies: %w", err)
	}
	now := unixMS(s.now())
	for _, l := range limited {
		st := &spendState{limit: l.limit, loaded: true}
		st.start, st.end = periodBounds(l.limit.Period, now)
		if err := s.w.QueryRowContext(ctx, lineageSpendSQL, st.start, l.lineage).Scan(&st.spent); err != nil {
			return fmt.Errorf("loading spend of key %q: %w", l.lineage, err)
		}
		s.spend[l.lineage] = st
	}
	return nil
}

// installSpendState puts a new spend counter for a lineage in place and
// queues the load of its committed spend; the returned channel is closed once
// the load is done. Holds already counted by the previous counter move over.
// A nil limit removes the counter.
func (s *Store) installSpendState(lineage string, limit *SpendLimit) (<-chan struct{}, error) {
	q := s.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, ErrClosed
	}
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	old := s.spend[lineage]
	if limit == nil {
		delete(s.spend, lineage)
		return closedChan, nil
	}
	if old != nil && old.limit.Period == limit.Period {
		old.limit.Amount = limit.Amount
		return closedChan, nil
	}
	st := &spendState{limit: *limit}
	st.start, st.end = periodBounds(limit.Period, unixMS(s.now()))
	if old != nil {
		st.held = old.held
	}
	s.spend[lineage] = st
	load := &spendLoad{lineage: lineage, state: st, done: make(chan struct{})}
	q.pushLocked(&writeOp{load: load})
	return load.done, nil
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// runSpendLoad adds the committed spend of a lineage to its new counter. It
// runs on the writer goroutine, after every row queued before the load was
// committed.
func (s *Store) runSpendLoad(op *writeOp) {
	l := op.load
	defer close(l.done)
	defer s.queue.markDone(op.seq)
	s.acctMu.Lock()
	start := l.state.start
	s.acctMu.Unlock()
	var sum int64
	err := s.r.QueryRowContext(context.Background(), lineageSpendSQL, start, l.lineage).Scan(&sum)
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	if err != nil {
		// Counted from now on only; say so rather than refuse all traffic.
		s.reportWriteError(fmt.Errorf("loading spend of key lineage %q (its limit counts only new charges): %w", l.lineage, err))
		l.state.loaded = true
		return
	}
	if l.state.start == start && !l.state.loaded {
		l.state.spent += sum
	}
	l.state.loaded = true
}

// reserveSpend applies a key lineage's limit to a new hold of amount. The
// caller holds acctMu. It reports whether the hold was counted.
func (s *Store) reserveSpend(id Identity, amount int64) (bool, error) {
	st := s.spend[id.lineage]
	if st == nil || id.lineage == "" {
		return false, nil
	}
	st.roll(unixMS(s.now()))
	// On a shared database reserveLineage has applied the rule to the
	// lineage's spend across instances already, and leased the hold.
	if used, ok := addInt64(st.spent, st.held); s.cluster == nil && (!ok || used >= st.limit.Amount) {
		return false, &LimitError{KeyID: id.KeyID, Limit: st.limit, Spent: st.spent, Held: st.held, Resets: st.resets()}
	}
	held, ok := addInt64(st.held, amount)
	if !ok {
		return false, fmt.Errorf("%w: holds on key %q would overflow", ErrInvalid, id.KeyID)
	}
	st.held = held
	return true, nil
}

// endSpendLocked takes a hold off its lineage's counter and charges cost to
// it. The caller holds acctMu. On a database shared by several instances it
// returns the lease scope the charge counts against ("" if none).
func (s *Store) endSpendLocked(h *Hold, cost int64) string {
	if h.lineage == "" {
		return ""
	}
	st := s.spend[h.lineage]
	if st == nil {
		return ""
	}
	if h.spendHeld {
		st.held -= h.amount
		if st.held < 0 {
			st.held = 0
		}
	}
	if cost > 0 {
		st.roll(unixMS(s.now()))
		st.spent += cost
		if s.cluster != nil {
			st.budget -= cost
			return lineageScope(h.lineage, st.start)
		}
	}
	return ""
}

// policyColumns are the api_keys columns of a key's policy.
const policyColumns = `allowed_models, spend_limit, limit_period, rate_limits`

func encodeModels(m []string) any {
	if len(m) == 0 {
		return nil
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func decodeModels(v sql.NullString) ([]string, error) {
	if !v.Valid || v.String == "" {
		return nil, nil
	}
	var m []string
	if err := json.Unmarshal([]byte(v.String), &m); err != nil {
		return nil, fmt.Errorf("decoding allowed models: %w", err)
	}
	return m, nil
}

func encodeLimit(l *SpendLimit) (amount, period any) {
	if l == nil {
		return nil, nil
	}
	return l.Amount, l.Period
}

func decodeLimit(amount sql.NullInt64, period sql.NullString) *SpendLimit {
	if !amount.Valid {
		return nil
	}
	return &SpendLimit{Amount: amount.Int64, Period: period.String}
}

// UpdateKey changes a key's name, disabled state and/or its lineage's
// policy. The change holds from the very next request. A new spend limit
// counts what the lineage already spent in the current period (for a total
// limit: ever). Each change is recorded in the audit log: key.rename,
// key.disable / key.enable, key.update (policy).
func (s *Store) UpdateKey(ctx context.Context, id string, u KeyUpdate) (Key, error) {
	if u.Name == nil && u.Disabled == nil && !u.SetExpiry && !u.SetAllowedModels && !u.SetSpendLimit && !u.SetRateLimits {
		return Key{}, fmt.Errorf("%w: nothing to change", ErrInvalid)
	}
	if s.isClosed() {
		return Key{}, ErrClosed
	}
	var name string
	if u.Name != nil {
		n, err := validateName("key", *u.Name)
		if err != nil {
			return Key{}, err
		}
		name = n
	}
	pol := KeyPolicy{ExpiresAt: u.ExpiresAt, AllowedModels: u.AllowedModels, SpendLimit: u.SpendLimit, RateLimits: u.RateLimits}
	if !u.SetExpiry {
		pol.ExpiresAt = nil
	}
	if err := pol.validate(s.now()); err != nil {
		return Key{}, err
	}
	lineage, err := s.lineageOf(ctx, id)
	if err != nil {
		return Key{}, err
	}
	cur, err := s.Key(ctx, id)
	if err != nil {
		return Key{}, err
	}
	ceiling := ceilingOf(cur)
	if u.AsHolder && u.SetRateLimits {
		return Key{}, fmt.Errorf("%w: rate limits are set by an operator", ErrNotAllowed)
	}
	if u.AsHolder {
		if err := holderMayUpdate(cur, &u, &pol); err != nil {
			return Key{}, err
		}
	}

	// The counter goes in first, so no request admitted under the new
	// policy escapes it; it is taken back if the change does not commit.
	var (
		loaded   <-chan struct{} = closedChan
		restore  func()
		oldState *spendState
	)
	if u.SetSpendLimit {
		s.acctMu.Lock()
		oldState = s.spend[lineage]
		var oldCopy spendState
		if oldState != nil {
			oldCopy = *oldState
		}
		s.acctMu.Unlock()
		if loaded, err = s.installSpendState(lineage, pol.SpendLimit); err != nil {
			return Key{}, err
		}
		restore = func() {
			s.acctMu.Lock()
			defer s.acctMu.Unlock()
			if oldState == nil {
				delete(s.spend, lineage)
				return
			}
			oldState.limit = oldCopy.limit
			s.spend[lineage] = oldState
		}
	}

	err = s.updateKey(ctx, id, func(tx *sql.Tx, account string) ([][32]byte, error) {
		old, err := s.scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = ?`, id))
		if err != nil {
			return nil, err
		}
		if u.AsHolder && !reflect.DeepEqual(ceilingOf(old), ceiling) {
			return nil, fmt.Errorf("%w: an operator changed the key's policy meanwhile; reload and try again", ErrNotAllowed)
		}
		hashes, err := lineageHashes(ctx, tx, lineage)
		if err != nil {
			return nil, err
		}
		if u.Name != nil && name != old.Name {
			if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET name = ? WHERE id = ?`, name, id); err != nil {
				return nil, err
			}
			if err := s.writeAudit(ctx, tx, account, id, ActionKeyRename, map[string]any{"name": Change{old.Name, name}}); err != nil {
				return nil, err
			}
		}
		if u.Disabled != nil {
			if err := s.setDisabled(ctx, tx, account, old, *u.Disabled, u.AsHolder); err != nil {
				return nil, err
			}
		}
		detail := map[string]any{}
		if u.SetExpiry {
			var exp any
			if pol.ExpiresAt != nil {
				exp = unixMS(*pol.ExpiresAt)
			}
			// Only the key itself: a predecessor in its grace period keeps
			// its own, earlier end.
			if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET expires_at = ? WHERE id = ?`, exp, id); err != nil {
				return nil, err
			}
			var newExp *time.Time
			if pol.ExpiresAt != nil {
				t := fromMS(unixMS(*pol.ExpiresAt))
				newExp = &t
			}
			detail["expires_at"] = Change{old.ExpiresAt, newExp}
		}
		if u.SetAllowedModels {
			q := `UPDATE api_keys SET allowed_models = ? WHERE lineage = ? AND deleted_at IS NULL`
			args := []any{encodeModels(pol.AllowedModels), lineage}
			if !u.AsHolder {
				q = `UPDATE api_keys SET allowed_models = ?, admin_models = ? WHERE lineage = ? AND deleted_at IS NULL`
				args = []any{encodeModels(pol.AllowedModels), encodeModels(pol.AllowedModels), lineage}
			}
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return nil, err
			}
			detail["allowed_models"] = Change{nilIfEmpty(old.AllowedModels), nilIfEmpty(pol.AllowedModels)}
		}
		if u.SetRateLimits {
			if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET rate_limits = ? WHERE lineage = ? AND deleted_at IS NULL`,
				encodeRateLimits(pol.RateLimits), lineage); err != nil {
				return nil, err
			}
			detail["rate_limits"] = Change{old.RateLimits, pol.RateLimits}
		}
		if u.SetSpendLimit {
			amount, period := encodeLimit(pol.SpendLimit)
			q := `UPDATE api_keys SET spend_limit = ?, limit_period = ? WHERE lineage = ? AND deleted_at IS NULL`
			args := []any{amount, period, lineage}
			if !u.AsHolder {
				q = `UPDATE api_keys SET spend_limit = ?, limit_period = ?, admin_spend_limit = ?, admin_limit_period = ?
					WHERE lineage = ? AND deleted_at IS NULL`
				args = []any{amount, period, amount, period, lineage}
			}
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return nil, err
			}
			detail["spend_limit"] = Change{old.SpendLimit, pol.SpendLimit}
		}
		if len(detail) > 0 {
			detail["set_by"] = "operator"
			if u.AsHolder {
				detail["set_by"] = "account holder"
			}
			if err := s.writeAudit(ctx, tx, account, id, ActionKeyUpdate, detail); err != nil {
				return nil, err
			}
		}
		return hashes, nil
	})
	if err != nil {
		if restore != nil {
			restore()
		}
		return Key{}, err
	}
	if u.SetRateLimits {
		s.setKeyRateLimits(lineage, pol.RateLimits)
	}
	select {
	case <-loaded:
	case <-ctx.Done():
		// The load finishes on its own; the limit already applies.
	}
	return s.Key(ctx, id)
}

// setDisabled disables or enables key k inside tx and records it; a change
// that changes nothing records nothing.
func (s *Store) setDisabled(ctx context.Context, tx *sql.Tx, account string, k Key, disable, asHolder bool) error {
	switch {
	case disable && (!k.Disabled || (!asHolder && !k.DisabledByAdmin)):
		at := unixMS(s.now())
		if k.DisabledAt != nil {
			at = unixMS(*k.DisabledAt) // an operator takes over a holder's disabling
		}
		byAdmin := 0
		if !asHolder {
			byAdmin = 1
		}
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET disabled_at = ?, disabled_by_admin = ? WHERE id = ?`, at, byAdmin, k.ID); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, account, k.ID, ActionKeyDisable, map[string]any{"name": k.Name, "by_operator": !asHolder})
	case !disable && k.Disabled:
		if asHolder && k.DisabledByAdmin {
			return fmt.Errorf("%w: an operator disabled this key; only an operator can enable it", ErrNotAllowed)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET disabled_at = NULL, disabled_by_admin = 0 WHERE id = ?`, k.ID); err != nil {
			return err
		}
		return s.writeAudit(ctx, tx, account, k.ID, ActionKeyEnable, map[string]any{"name": k.Name})
	}
	return nil
}

// holderMayUpdate checks an account holder's change of key k against its
// operator's policy and fills in what clearing a part of the policy sets
// it back to.
func holderMayUpdate(k Key, u *KeyUpdate, pol *KeyPolicy) error {
	c := ceilingOf(k)
	if u.SetAllowedModels {
		if len(pol.AllowedModels) == 0 {
			pol.AllowedModels = c.AllowedModels
		} else if !ModelsWithin(pol.AllowedModels, c.AllowedModels) {
			return fmt.Errorf("%w: the operator allows this key only the models %s; choose among them",
				ErrNotAllowed, strings.Join(c.AllowedModels, ", "))
		}
	}
	if u.SetSpendLimit {
		if pol.SpendLimit == nil {
			pol.SpendLimit = c.SpendLimit
		} else if !LimitWithin(pol.SpendLimit, c.SpendLimit) {
			return fmt.Errorf("%w: the operator limits this key to %s %s; set a limit of at most that (%s or in total)",
				ErrNotAllowed, FormatAmount(c.SpendLimit.Amount), periodWords(c.SpendLimit.Period), periodWords(c.SpendLimit.Period))
		}
	}
	if u.SetExpiry && k.ExpiresAt != nil && (pol.ExpiresAt == nil || pol.ExpiresAt.After(*k.ExpiresAt)) {
		return fmt.Errorf("%w: the key's expiry may only be brought forward", ErrNotAllowed)
	}
	u.AllowedModels, u.SpendLimit = pol.AllowedModels, pol.SpendLimit
	return nil
}

// periodWords says a limit period in words: "per day", "in total".
func periodWords(p string) string {
	if p == PeriodTotal {
		return "in total"
	}
	return "per " + p
}

func nilIfEmpty(m []string) []string {
	if len(m) == 0 {
		return nil
	}
	return m
}

// lineageOf returns the lineage of a live key.
func (s *Store) lineageOf(ctx context.Context, id string) (string, error) {
	var lineage string
	err := s.r.QueryRowContext(ctx, `SELECT lineage FROM api_keys WHERE id = ? AND deleted_at IS NULL`, id).Scan(&lineage)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("key %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("reading key %q: %w", id, err)
	}
	return lineage, nil
}

// lineageHashes returns the hashes of a lineage's live keys.
func lineageHashes(ctx context.Context, tx *sql.Tx, lineage string) ([][32]byte, error) {
	rows, err := tx.QueryContext(ctx, `SELECT hash FROM api_keys WHERE lineage = ? AND deleted_at IS NULL`, lineage)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][32]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		var h [32]byte
		copy(h[:], b)
		out = append(out, h)
	}
	return out, rows.Err()
}

// AllowsModel reports whether the identity's key may use model: true when
// the key has no allowlist or a pattern of it matches.
func (id Identity) AllowsModel(model string) bool {
	return len(id.AllowedModels) == 0 || MatchModel(id.AllowedModels, model)
}
