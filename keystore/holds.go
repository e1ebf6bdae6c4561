package keystore

import (
	"fmt"
	"math"
	"time"
)

// Hold is a reservation of part of an account's balance for one request in
// flight, made by Reserve. It lives in memory only: holds protect concurrent
// admission, and after a crash they simply vanish.
//
// A hold ends exactly once, by Settle (charge the request) or Release (charge
// nothing); whichever comes first wins and later calls of either do nothing
// (Settle then returns an error wrapping ErrSettled). A Hold is safe for
// concurrent use. The zero Hold is not usable: get one from Reserve.
type Hold struct {
	s      *Store
	acct   *accountState
	amount int64
	done   bool // guarded by s.acctMu

	lineage   string // key lineage whose spend counter the charge goes to
	spendHeld bool   // amount is counted in that counter's holds

	rl *holdRates // what the hold counted against rate limits; nil: none (ratelimit.go)
}

// Amount returns the reserved amount in nano-units.
func (h *Hold) Amount() int64 { return h.amount }

// AccountID returns the id of the account the hold is on.
func (h *Hold) AccountID() string {
	if h.acct == nil {
		return ""
	}
	return h.acct.id
}

// ReserveFor admits a request made with id's key on its account and holds
// amount (nano-units, >= 0) of the balance until the hold is settled or
// released. It does no I/O. (An Identity with only AccountID set admits on
// the account alone, without a key's spend limit.)
//
// Admission rule: the account's available balance, its balance minus the sum
// of its holds in flight, must be greater than zero before this hold is
// added; the hold is then added in full, even if it exceeds what is
// available. ReserveFor fails with ErrNotFound (unknown account),
// ErrAccountDisabled, ErrClosed, ErrBacklog (the database is failing to
// commit, see WriteBacklog), ErrInvalid (amount out of range) or
// ErrInsufficientBalance (available <= 0; the message gives the available
// amount).
//
// Bound: the rule lets the balance go below zero, but not far. Leaving
// AdjustBalance aside, the balance B and the holds H only move in three ways:
// an admission lowers B-H by the hold h, and only when B-H > 0; a release
// raises it by h; a settlement raises it by h-cost. Consider the last request
// r admitted before the account comes to rest (no holds left). Just before
// its admission B-H >= 1 nano-unit; after it, every request still in flight
// (r included) ends, each changing B-H by h-cost (h for a release). Summed,
// r contributes -cost(r) and every other one contributes -(cost-hold) if it
// overran its hold and something >= 0 otherwise. Hence, with H back at 0,
//
//	final balance >= 1 - cost(r) - Σ overruns (cost-hold > 0) of the requests in flight together with r
//	              >= 1 - (largest single request cost) - Σ those overruns.
//
// In particular, when every request costs at most its hold, the final balance
// is greater than minus the cost of the last request admitted, so greater
// than minus the largest single request cost: the overdraft is at most one
// request's worth. Negative adjustments lower the balance on top of this.
//
// On top of the account's rule, ReserveFor applies the key's spend limit, if
// it has one, by the same rule (the lineage's spend in the current period plus its holds must be
// below the limit; the hold then counts in full). A request refused by the
// limit fails with a *LimitError, which wraps ErrKeyLimitExceeded; the same
// bound as the account's applies: the limit is exceeded by at most the last
// admitted request's cost plus the overruns of requests in flight with it.
//
// Options tighten the account's rule (see RequireCovered and UpTo): the
// check and the hold happen under the store's lock, so two concurrent
// requests cannot both be admitted on the same available balance. A
// request refused under an option fails with a *BalanceError, which wraps
// ErrInsufficientBalance and carries the amounts seen under the lock.
func (s *Store) ReserveFor(id Identity, amount int64, opts ...ReserveOption) (*Hold, error) {
	accountID := id.AccountID
	if amount < 0 || amount > maxAmountUnits*NanoPerUnit {
		return nil, fmt.Errorf("%w: hold amount %s out of range", ErrInvalid, FormatAmount(amount))
	}
	var (
		opt  ReserveOption
		rate *RateRequest
	)
	for _, o := range opts {
		if o.withRate {
			rate = o.rate
			continue
		}
		opt = o
	}
	if opt.upTo && (opt.minimum < 0 || opt.minimum > amount) {
		return nil, fmt.Errorf("%w: minimum hold %s outside 0..%s", ErrInvalid, FormatAmount(opt.minimum), FormatAmount(amount))
	}
	if s.isClosed() {
		return nil, ErrClosed
	}
	if err := s.WriteBacklog(); err != nil {
		return nil, err
	}
	if s.cluster != nil {
		return s.reserveCluster(id, amount, opt, rate)
	}
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	a, ok := s.accounts[accountID]
	if !ok {
		return nil, fmt.Errorf("account %q: %w", accountID, ErrNotFound)
	}
	return s.reserveLocked(a, id, amount, opt, rate, false)
}

// reserveLocked is ReserveFor's rule and hold on account a; the caller holds
// s.acctMu. admitted skips the balance rule: the caller applied it already
// (exact mode across instances, lease.go), and amount is the hold.
func (s *Store) reserveLocked(a *accountState, id Identity, amount int64, opt ReserveOption, rate *RateRequest, admitted bool) (*Hold, error) {
	accountID := a.id
	if a.disabled {
		return nil, fmt.Errorf("account %q: %w", accountID, ErrAccountDisabled)
	}
	if !admitted {
		avail, ok := subInt64(a.balance, a.held)
		if !ok {
			avail = math.MinInt64 // only reachable with absurd balances
		}
		if amount, ok = opt.fit(amount, avail); !ok {
			return nil, &BalanceError{AccountID: accountID, Balance: a.balance, Held: a.held, Wanted: opt.wanted(amount)}
		}
		if avail <= 0 {
			return nil, fmt.Errorf("account %q: available balance %s: %w", accountID, FormatAmount(avail), ErrInsufficientBalance)
		}
	}
	held, ok := addInt64(a.held, amount)
	if !ok {
		return nil, fmt.Errorf("%w: holds on account %q would overflow", ErrInvalid, accountID)
	}
	var (
		scopes [3]rateScope
		now    int64
		tokens int64
	)
	nscopes := s.rateScopesLocked(id, a, rate, &scopes)
	if nscopes > 0 {
		now = s.now().UnixNano()
		if rate != nil {
			tokens = max(rate.Tokens, 0)
		}
		var allowEvery time.Duration // the local allowance applies while other instances share the counts
		if s.rateOthers > 0 {
			allowEvery = s.rateSyncEvery
		}
		if e := checkRatesLocked(scopes[:nscopes], tokens, now, allowEvery); e != nil {
			return nil, e
		}
	}
	counted, err := s.reserveSpend(id, amount)
	if err != nil {
		return nil, err
	}
	a.held = held
	s.holdCount++
	s.holdAmount += amount
	if nscopes == 0 {
		return &Hold{s: s, acct: a, amount: amount, lineage: id.lineage, spendHeld: counted}, nil
	}
	hr := &holdWithRates{Hold: Hold{s: s, acct: a, amount: amount, lineage: id.lineage, spendHeld: counted}}
	hr.Hold.rl = &hr.rates
	countRatesLocked(scopes[:nscopes], tokens, now, &hr.rates.refs)
	hr.rates.n = nscopes
	hr.rates.status = rateStatusLocked(scopes[:nscopes], now)
	return &hr.Hold, nil
}

// ReserveOption tightens ReserveFor's admission rule. The zero value is the
// plain rule (available > 0, the hold then counts in full); when several
// balance options are given, the last one applies. WithRate combines with
// them.
type ReserveOption struct {
	rate     *RateRequest // WithRate: combines with the others
	withRate bool
	covered  bool  // the whole amount must be available
	upTo     bool  // hold what is available, between minimum and amount
	minimum  int64 // with upTo
}

// RequireCovered admits a hold only if the account's available balance
// covers all of it (available >= amount, and available > 0), so that a
// request cannot take the balance below zero by its own hold.
var RequireCovered = ReserveOption{covered: true}

// UpTo holds as much of the amount as is available, but at least minimum
// (0 <= minimum <= amount): the hold is min(amount, available), and the
// request is refused when available < minimum (or available <= 0). The
// caller reads what it got from Hold.Amount, decided from the same
// available balance the check used.
func UpTo(minimum int64) ReserveOption {
	return ReserveOption{upTo: true, minimum: minimum}
}

// fit returns the amount to hold out of avail, and false when the option
// refuses the request. The plain rule is left to the caller.
func (o ReserveOption) fit(amount, avail int64) (int64, bool) {
	switch {
	case o.covered:
		return amount, avail > 0 && amount <= avail
	case o.upTo:
		return min(amount, avail), avail > 0 && o.minimum <= avail
	}
	return amount, true
}

// wanted is the smallest hold the option would have admitted.
func (o ReserveOption) wanted(amount int64) int64 {
	if o.upTo {
		return o.minimum
	}
	return amount
}

// BalanceError is a hold refused under a ReserveOption: the account's
// available balance (Balance - Held, as seen under the store's lock) did not
// cover Wanted, the smallest hold the request would have taken. It wraps
// ErrInsufficientBalance.
type BalanceError struct {
	AccountID string
	Balance   int64 // the account's balance, nano-units
	Held      int64 // the holds in flight on it
	Wanted    int64 // the smallest hold that would have been admitted
}

// Available is the balance minus the holds in flight.
func (e *BalanceError) Available() int64 {
	if a, ok := subInt64(e.Balance, e.Held); ok {
		return a
	}
	return math.MinInt64
}

func (e *BalanceError) Error() string {
	return fmt.Sprintf("account %q: available balance %s (balance %s, held %s) does not cover %s: %v",
		e.AccountID, FormatAmount(e.Available()), FormatAmount(e.Balance), FormatAmount(e.Held), FormatAmount(e.Wanted), ErrInsufficientBalance)
}

func (e *BalanceError) Unwrap() error { return ErrInsufficientBalance }

// Release ends the hold without charging anything, e.g. when the request
// failed before reaching the upstream. It is idempotent, does nothing after
// Settle, and works on a closed store.
func (h *Hold) Release() {
	if h.s == nil {
		return
	}
	h.s.acctMu.Lock()
	if h.endLocked() {
		_ = h.s.endSpendLocked(h, 0)
		h.endRatesLocked(0)
	}
	h.s.acctMu.Unlock()
}

// endLocked marks the hold done and drops it from the account; the caller
// holds s.acctMu. It reports whether the hold was still open.
func (h *Hold) endLocked() bool {
	if h.done {
		return false
	}
	h.done = true
	h.acct.held -= h.amount
	h.s.holdCount--
	h.s.holdAmount -= h.amount
	return true
}

// Available returns an account's balance (including charges settled but not
// yet committed) and the sum of its holds in flight; the available balance
// Reserve checks is balance - held. It does no I/O.
func (s *Store) Available(accountID string) (balance, held int64, err error) {
	s.acctMu.RLock()
	defer s.acctMu.RUnlock()
	a, ok := s.accounts[accountID]
	if !ok {
		return 0, 0, fmt.Errorf("account %q: %w", accountID, ErrNotFound)
	}
	if s.cluster != nil {
		// Shared database: the committed balance as last seen, and the
		// holds in flight on this instance.
		return s.shownBalance(a), a.held, nil
	}
	return a.balance, a.held, nil
}

// HoldsInFlight returns how many holds are open across all accounts and the
// total amount they reserve, for metrics.
func (s *Store) HoldsInFlight() (count int, amount int64) {
	s.acctMu.RLock()
	defer s.acctMu.RUnlock()
	return s.holdCount, s.holdAmount
}

// addInt64 returns a+b and whether it did not overflow.
func addInt64(a, b int64) (int64, bool) {
	c := a + b
	if (b > 0 && c < a) || (b < 0 && c > a) {
		return 0, false
	}
	return c, true
}

// subInt64 returns a-b and whether it did not overflow.
func subInt64(a, b int64) (int64, bool) {
	c := a - b
	if (b > 0 && c > a) || (b < 0 && c < a) {
		return 0, false
	}
	return c, true
}
