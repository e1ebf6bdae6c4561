package keystore

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Account is a prepaid account that owns API keys.
type Account struct {
	// ID is the operator-chosen slug.
	ID string `json:"id"`
	// Name is a human-readable name.
	Name string `json:"name"`
	// Balance in nano-units of the currency.
	Balance int64 `json:"balance_nano"`
	// Disabled accounts cannot make requests.
	Disabled bool `json:"disabled"`
	// CreatedAt is when the account was created.
	CreatedAt time.Time `json:"created_at"`
	// RateLimits are the account's own rate limits, across all its keys;
	// nil: none (defaults of the gateway's config may still apply). Views
	// show them with their use (AccountRateUsage) instead.
	RateLimits *RateLimits `json:"-"`

	// reserved is, on a database shared by several instances, the part of
	// the balance the instances have leased (see Reserved).
	reserved    int64
	hasReserved bool
}

// Reserved returns, for an account read from a database shared by several
// instances, the part of its balance that the instances have reserved
// (their live leases: holds in flight, charges not yet committed, and
// budget not yet used), the same whichever instance reads it; ok is false
// for a store alone on its database (see Store.Available for its holds).
func (a Account) Reserved() (amount int64, ok bool) { return a.reserved, a.hasReserved }

// LedgerEntry is one row of the ledger: a change of an account's balance.
// Usage rows (Kind KindUsage) also carry what the request consumed.
type LedgerEntry struct {
	ID           int64     `json:"id"`
	CreatedAt    time.Time `json:"created_at"`
	AccountID    string    `json:"account_id"`
	KeyID        string    `json:"key_id,omitempty"`
	Kind         string    `json:"kind"`
	Amount       int64     `json:"amount_nano"`
	BalanceAfter int64     `json:"balance_after_nano"`
	Note         string    `json:"note,omitempty"`

	// Model is the model the request used (usage rows).
	Model string `json:"model,omitempty"`
	// PromptTokens, CompletionTokens, CachedTokens and ReasoningTokens
	// are the token counts the request was charged for (usage rows).
	PromptTokens     int64 `json:"prompt_tokens,omitempty"`
	CompletionTokens int64 `json:"completion_tokens,omitempty"`
	CachedTokens     int64 `json:"cached_tokens,omitempty"`
	ReasoningTokens  int64 `json:"reasoning_tokens,omitempty"`
	// Status is the HTTP status the request ended with, 0 if unknown.
	Status int `json:"status,omitempty"`
	// DurationMS is how long the request took, in milliseconds.
	DurationMS int64 `json:"duration_ms,omitempty"`
	// RequestID identifies the request in the gateway's logs.
	RequestID string `json:"request_id,omitempty"`
	// Estimated is set when the cost was estimated because the upstream
	// did not report usage.
	Estimated bool `json:"estimated,omitempty"`

	// seq is the writer queue position of an entry returned by Settle,
	// for WaitCommitted; 0 for entries already committed.
	seq uint64
}

// Ledger entry kinds.
const (
	KindAdjustment = "adjustment"
	KindUsage      = "usage"
)

var accountIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidateAccountID checks an account id: 1-64 characters of lower-case
// letters, digits, '.', '_' and '-', starting with a letter or digit.
func ValidateAccountID(id string) error {
	if !accountIDRe.MatchString(id) {
		return fmt.Errorf("%w: account id %q must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit", ErrInvalid, id)
	}
	return nil
}

// validateName checks a display name (account or key).
func validateName(what, name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return "", fmt.Errorf("%w: %s name must not be empty", ErrInvalid, what)
	}
	if !utf8.ValidString(name) || utf8.RuneCountInString(name) > 128 {
		return "", fmt.Errorf("%w: %s name must be valid UTF-8 of at most 128 characters", ErrInvalid, what)
	}
	for _, r := range name {
		// C0 and C1 controls (a C1 CSI is a terminal escape in the CLI's
		// tables), bidirectional overrides (a name that displays
		// reversed) and line separators.
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029' {
			return "", fmt.Errorf("%w: %s name must not contain control characters (%U)", ErrInvalid, what, r)
		}
	}
	return name, nil
}

func (s *Store) loadAccounts(ctx context.Context) error {
	rows, err := s.r.QueryContext(ctx, `SELECT id, name, balance, disabled, created_at FROM accounts`)
	if err != nil {
		return fmt.Errorf("loading accounts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		a := &accountState{}
		if err := rows.Scan(&a.id, &a.name, &a.balance, &a.disabled, &a.createdAt); err != nil {
			return fmt.Errorf("loading accounts: %w", err)
		}
		a.durable = a.balance
		s.accounts[a.id] = a
	}
	return rows.Err()
}

func (a *accountState) snapshot() Account {
	acct := Account{ID: a.id, Name: a.name, Balance: a.balance, Disabled: a.disabled, CreatedAt: fromMS(a.createdAt)}
	if a.rate != nil && !a.rate.own.IsZero() {
		own := a.rate.own
		acct.RateLimits = &own
	}
	return acct
}

// snapshotOf is a.snapshot() with the balance the store reports (see
// shownBalance); the caller holds acctMu.
func (s *Store) snapshotOf(a *accountState) Account {
	acct := a.snapshot()
	acct.Balance = s.shownBalance(a)
	return acct
}

// shownBalance is the balance the store reports for a: on a database shared
// by several instances the committed balance last seen (in memory, balance
// is this instance's budget, see lease.go). The caller holds acctMu.
func (s *Store) shownBalance(a *accountState) int64 {
	if s.cluster == nil {
		return a.balance
	}
	if l := s.cluster.peekLease(a.id); l != nil && l.seen {
		return l.seenBalance
	}
	return 0
}

// CreateAccount creates an account with a zero balance. An empty name
// defaults to the id.
func (s *Store) CreateAccount(ctx context.Context, id, name string) (Account, error) {
	if err := ValidateAccountID(id); err != nil {
		return Account{}, err
	}
	if strings.TrimSpace(name) == "" {
		name = id
	}
	name, err := validateName("account", name)
	if err != nil {
		return Account{}, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.isClosed() {
		return Account{}, ErrClosed
	}
	s.acctMu.RLock()
	_, exists := s.accounts[id]
	s.acctMu.RUnlock()
	if exists {
		return Account{}, fmt.Errorf("account %q: %w", id, ErrExists)
	}
	now := unixMS(s.now())
	err = s.adminTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO accounts (id, name, balance, disabled, created_at) VALUES (?, ?, 0, 0, ?)`,
			id, name, now); err != nil {
			return err
		}
		if err := s.writeAudit(ctx, tx, id, id, ActionAccountCreate, map[string]any{"name": name}); err != nil {
			return err
		}
		return s.recordChange(ctx, tx, change{kind: changeAccount, accountID: id})
	})
	if err != nil {
		return Account{}, fmt.Errorf("creating account %q: %w", id, err)
	}
	a := &accountState{id: id, name: name, createdAt: now}
	s.acctMu.Lock()
	s.accounts[id] = a
	snap := s.snapshotOf(a)
	s.acctMu.Unlock()
	return snap, nil
}

// Account returns one account. On a database shared by several instances
// it reads the account's committed state from the database, the same on
// every instance.
func (s *Store) Account(ctx context.Context, id string) (Account, error) {
	if s.cluster != nil {
		return s.clusterAccount(ctx, id)
	}
	s.acctMu.RLock()
	defer s.acctMu.RUnlock()
	a, ok := s.accounts[id]
	if !ok {
		return Account{}, fmt.Errorf("account %q: %w", id, ErrNotFound)
	}
	return a.snapshot(), nil
}

// Accounts lists all accounts ordered by id. On a database shared by
// several instances it reads their committed state from the database (if
// that fails, the last committed balances this instance saw).
func (s *Store) Accounts(ctx context.Context) []Account {
	if s.cluster != nil {
		if out, ok := s.clusterAccounts(ctx); ok {
			return out
		}
	}
	s.acctMu.RLock()
	out := make([]Account, 0, len(s.accounts))
	for _, a := range s.accounts {
		out = append(out, s.snapshotOf(a))
	}
	s.acctMu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Balance returns an account's balance in nano-units and whether it is
// enabled; it does no I/O.
func (s *Store) Balance(accountID string) (balance int64, disabled bool, err error) {
	s.acctMu.RLock()
	defer s.acctMu.RUnlock()
	a, ok := s.accounts[accountID]
	if !ok {
		return 0, false, fmt.Errorf("account %q: %w", accountID, ErrNotFound)
	}
	return s.shownBalance(a), a.disabled, nil
}

// AdjustBalance adds amount (nano-units, negative for a correction) to an
// account's balance and writes the matching ledger row with the note, in one
// transaction. A zero amount is refused: it would be a ledger row that
// changes nothing.
//
// The adjustment is committed by the ledger writer in queue order, after
// every charge settled before the call, so balance_after continues the
// account's chain. AdjustBalance waits for that commit and returns the row
// with its ID; memory changes only after the commit succeeded, and a failed
// or cancelled adjustment changes nothing. The returned Account's balance
// also includes charges settled but not yet committed.
func (s *Store) AdjustBalance(ctx context.Context, accountID string, amount int64, note string) (Account, LedgerEntry, error) {
	if amount == 0 {
		return Account{}, LedgerEntry{}, fmt.Errorf("%w: amount must not be zero", ErrInvalid)
	}
	if a := amount; a > maxAmountUnits*NanoPerUnit || a < -maxAmountUnits*NanoPerUnit {
		return Account{}, LedgerEntry{}, fmt.Errorf("%w: amount is too large", ErrInvalid)
	}
	note = strings.TrimSpace(note)
	if utf8.RuneCountInString(note) > 1024 || !utf8.ValidString(note) {
		return Account{}, LedgerEntry{}, fmt.Errorf("%w: note must be valid UTF-8 of at most 1024 characters", ErrInvalid)
	}
	if s.isClosed() {
		return Account{}, LedgerEntry{}, ErrClosed
	}
	s.acctMu.RLock()
	a, ok := s.accounts[accountID]
	s.acctMu.RUnlock()
	if !ok {
		return Account{}, LedgerEntry{}, fmt.Errorf("account %q: %w", accountID, ErrNotFound)
	}
	adj := &adjustment{ctx: ctx, amount: amount, note: note, done: make(chan struct{})}
	if err := s.queue.push(&writeOp{acct: a, adj: adj}); err != nil {
		return Account{}, LedgerEntry{}, err
	}
	select {
	case <-adj.done:
	case <-ctx.Done():
		if adj.state.CompareAndSwap(adjQueued, adjCancelled) {
			return Account{}, LedgerEntry{}, fmt.Errorf("adjusting balance of %q: %w", accountID, ctx.Err())
		}
		// The writer has started it: its transaction uses ctx and
		// ends promptly, committed or not. Report what happened.
		<-adj.done
	}
	return adj.account, adj.entry, adj.err
}

// UpdateAccount changes an account's name and/or disabled flag. A nil
// argument leaves that field as it is.
func (s *Store) UpdateAccount(ctx context.Context, id string, name *string, disabled *bool) (Account, error) {
	var newName string
	if name != nil {
		n, err := validateName("account", *name)
		if err != nil {
			return Account{}, err
		}
		newName = n
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.isClosed() {
		return Account{}, ErrClosed
	}
	s.acctMu.RLock()
	a, ok := s.accounts[id]
	var cur accountState
	if ok {
		cur = *a
	}
	s.acctMu.RUnlock()
	if !ok {
		return Account{}, fmt.Errorf("account %q: %w", id, ErrNotFound)
	}
	prev := cur
	if name != nil {
		cur.name = newName
	}
	if disabled != nil {
		cur.disabled = *disabled
	}
	err := s.adminTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET name = ?, disabled = ? WHERE id = ?`,
			cur.name, boolInt(cur.disabled), id); err != nil {
			return err
		}
		if cur.name != prev.name {
			if err := s.writeAudit(ctx, tx, id, id, ActionAccountUpdate, map[string]any{"name": Change{prev.name, cur.name}}); err != nil {
				return err
			}
		}
		if cur.disabled != prev.disabled {
			action := ActionAccountEnable
			if cur.disabled {
				action = ActionAccountDisable
			}
			if err := s.writeAudit(ctx, tx, id, id, action, nil); err != nil {
				return err
			}
		}
		return s.recordChange(ctx, tx, change{kind: changeAccount, accountID: id})
	})
	if err != nil {
		return Account{}, fmt.Errorf("updating account %q: %w", id, err)
	}
	s.acctMu.Lock()
	a.name, a.disabled = cur.name, cur.disabled
	snap := s.snapshotOf(a)
	s.acctMu.Unlock()
	return snap, nil
}

// adminTx runs fn in a transaction on the writer connection and commits
// it if fn returns nil.
func (s *Store) adminTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// boolInt stores a flag as the integer 0 or 1 (both databases keep flags
// in integer columns).
func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// LedgerSum returns the sum of an account's committed ledger amounts: the
// amount carried forward for rows retention pruned (ledger_pruned) plus the
// sum of the rows still in the ledger. For every account
//
//	balance = carried_forward + sum(ledger)
//
// so LedgerSum equals the stored balance, and after Flush the balance in
// memory too; tests and `usage` totals rely on it.
func (s *Store) LedgerSum(ctx context.Context, accountID string) (int64, error) {
	var sum int64
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE((SELECT amount FROM ledger_pruned WHERE account_id = ?1), 0)
		+ COALESCE((SELECT SUM(amount) FROM ledger WHERE account_id = ?1), 0)`, accountID).Scan(&sum)
	if err != nil {
		return 0, fmt.Errorf("summing ledger of %q: %w", accountID, err)
	}
	return sum, nil
}

// StoredBalance reads an account's balance from the database, bypassing
// memory (consistency checks). It excludes charges settled but not yet
// committed: call Flush first to compare it with Balance.
func (s *Store) StoredBalance(ctx context.Context, accountID string) (int64, error) {
	var b int64
	err := s.r.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE id = ?`, accountID).Scan(&b)
	if err != nil {
		return 0, fmt.Errorf("reading balance of %q: %w", accountID, err)
	}
	return b, nil
}
