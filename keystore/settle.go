package keystore

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Charge is what one request costs and consumed; Hold.Settle turns it into a
// usage row of the ledger.
type Charge struct {
	// KeyID is the key that made the request (may be empty).
	KeyID string
	// Model is the model used. Longer than 256 bytes is truncated.
	Model string
	// RequestID identifies the request in logs. Longer than 256 bytes is
	// truncated.
	RequestID string
	// Note is free text. Longer than 1024 characters is truncated.
	Note string
	// Cost in nano-units, >= 0; the ledger row's amount is -Cost.
	Cost int64
	// Token counts, each >= 0.
	PromptTokens, CompletionTokens, CachedTokens, ReasoningTokens int64
	// Status is the HTTP status the request ended with (0: unknown).
	Status int
	// Duration is how long the request took, >= 0; stored in milliseconds.
	Duration time.Duration
	// Estimated marks a cost estimated without usage from the upstream.
	Estimated bool
}

// Text limits of a usage row. Descriptive fields are truncated rather than
// refused: a charge must never be lost to an over-long model name.
const (
	maxLabelBytes = 256
	maxNoteRunes  = 1024
)

// ledgerRow is a ledger row waiting for the writer; balance_after is computed
// only when it is committed.
type ledgerRow struct {
	createdAt  int64 // unix ms
	accountID  string
	keyID      string
	kind       string
	amount     int64
	note       string
	model      string
	prompt     int64
	completion int64
	cached     int64
	reasoning  int64
	status     int
	durationMS int64
	requestID  string
	estimated  bool
}

// entry renders the row as a LedgerEntry with the given id and balance_after.
func (r *ledgerRow) entry(id, balanceAfter int64) LedgerEntry {
	return LedgerEntry{
		ID: id, CreatedAt: fromMS(r.createdAt), AccountID: r.accountID, KeyID: r.keyID,
		Kind: r.kind, Amount: r.amount, BalanceAfter: balanceAfter, Note: r.note,
		Model: r.model, PromptTokens: r.prompt, CompletionTokens: r.completion,
		CachedTokens: r.cached, ReasoningTokens: r.reasoning, Status: r.status,
		DurationMS: r.durationMS, RequestID: r.requestID, Estimated: r.estimated,
	}
}

// usageRow validates a charge and builds its ledger row (without account and
// time).
func (c *Charge) usageRow() (ledgerRow, error) {
	if c.Cost < 0 || c.Cost > maxAmountUnits*NanoPerUnit {
		return ledgerRow{}, fmt.Errorf("%w: cost %s out of range", ErrInvalid, FormatAmount(c.Cost))
	}
	if c.PromptTokens < 0 || c.CompletionTokens < 0 || c.CachedTokens < 0 || c.ReasoningTokens < 0 {
		return ledgerRow{}, fmt.Errorf("%w: token counts must not be negative", ErrInvalid)
	}
	if c.Duration < 0 {
		return ledgerRow{}, fmt.Errorf("%w: duration must not be negative", ErrInvalid)
	}
	return ledgerRow{
		keyID:      clipBytes(c.KeyID, maxLabelBytes),
		kind:       KindUsage,
		amount:     -c.Cost,
		note:       clipRunes(strings.TrimSpace(c.Note), maxNoteRunes),
		model:      clipBytes(c.Model, maxLabelBytes),
		prompt:     c.PromptTokens,
		completion: c.CompletionTokens,
		cached:     c.CachedTokens,
		reasoning:  c.ReasoningTokens,
		status:     c.Status,
		durationMS: c.Duration.Milliseconds(),
		requestID:  clipBytes(c.RequestID, maxLabelBytes),
		estimated:  c.Estimated,
	}, nil
}

// Settle ends the hold by charging u.Cost: the account's balance in memory
// drops at once (the next Reserve sees it) and the hold is removed. The
// ledger row (kind "usage", amount -Cost, with the usage fields) is queued for
// the ledger writer, which commits it with others in one transaction; Settle
// does not wait for that commit (use Flush to wait). The cost is charged in
// full even when it exceeds the hold.
//
// The returned entry has no ID (0: the row is not committed yet); pass it to
// Store.WaitCommitted to wait for the commit of this row alone. Its
// BalanceAfter is the balance in memory right after this charge; the
// committed row's balance_after is computed by the writer in commit order and
// differs only when an AdjustBalance of the same account was committing at
// the same moment.
//
// Errors leave the hold open (the caller may Release it or Settle again):
// ErrInvalid for a negative cost, token count or duration (and for a charge
// that would overflow the balance), ErrClosed once the store is closed (the
// balance is then unchanged). Settling a hold that was already settled or
// released does nothing and returns an error wrapping ErrSettled.
func (h *Hold) Settle(u Charge) (LedgerEntry, error) {
	s := h.s
	if s == nil {
		return LedgerEntry{}, fmt.Errorf("%w: hold was not made by Reserve", ErrInvalid)
	}
	row, err := u.usageRow()
	if err != nil {
		return LedgerEntry{}, err
	}
	a := h.acct
	row.accountID = a.id
	row.createdAt = unixMS(s.now())

	q := s.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return LedgerEntry{}, fmt.Errorf("settling hold on %q: %w", a.id, ErrClosed)
	}
	s.acctMu.Lock()
	if h.done {
		s.acctMu.Unlock()
		return LedgerEntry{}, fmt.Errorf("settling hold on %q: %w", a.id, ErrSettled)
	}
	after, ok := addInt64(a.balance, row.amount)
	if !ok {
		s.acctMu.Unlock()
		return LedgerEntry{}, fmt.Errorf("%w: charge would overflow the balance of %q", ErrInvalid, a.id)
	}
	a.balance = after
	h.endLocked()
	scope := s.endSpendLocked(h, -row.amount)
	h.endRatesLocked(satAdd(row.prompt, row.completion))
	s.acctMu.Unlock()
	// Still under q.mu: the queue order is the order in which charges hit
	// memory, so the writer's balance_after chain follows it.
	op := &writeOp{acct: a, row: row, scope: scope}
	q.pushLocked(op)
	e := row.entry(0, after)
	e.seq = op.seq
	return e, nil
}

// clipBytes makes s valid UTF-8 without NUL bytes (PostgreSQL stores
// none) and cuts it to at most n bytes on a rune boundary.
func clipBytes(s string, n int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// clipRunes makes s valid UTF-8 without NUL bytes and cuts it to at most
// n runes.
func clipRunes(s string, n int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}
