package keystore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Key describes an API key. It never holds the plaintext.
type Key struct {
	ID         string     `json:"id"`
	AccountID  string     `json:"account_id"`
	Name       string     `json:"name"`
	Hint       string     `json:"hint"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	// ReplacedBy is set on a key that was rotated with a grace period: the
	// id of its replacement.
	ReplacedBy string `json:"replaced_by,omitempty"`
	// Status is, first that applies: "expired" (past its expiry or its
	// rotation grace), "disabled", "rotated" (replaced, in its grace
	// period), "expiring" (expires within ExpiringWithin), "active".
	// RotateKey answers "deleted" for an old key revoked at once.
	Status string `json:"status"`
	// Disabled keys are refused (ErrKeyDisabled) until enabled again.
	Disabled   bool       `json:"disabled"`
	DisabledAt *time.Time `json:"disabled_at,omitempty"`
	// DisabledByAdmin: an operator disabled the key, and only an operator
	// may enable it again.
	DisabledByAdmin bool `json:"disabled_by_admin,omitempty"`
	// AllowedModels lists the model globs the key may use; empty: any.
	AllowedModels []string `json:"allowed_models,omitempty"`
	// SpendLimit caps what the key (with its rotation predecessors and
	// successors) may spend; nil: only the account balance limits it.
	SpendLimit *SpendLimit `json:"spend_limit,omitempty"`
	// AdminPolicy is the policy an operator set on the key, within which
	// its account holder may narrow AllowedModels and SpendLimit; nil
	// when an operator set none.
	AdminPolicy *AdminPolicy `json:"admin_policy,omitempty"`
	// RateLimits are the lineage's own rate limits; nil: none (defaults
	// of the gateway's config may still apply). Views show them with
	// their use (KeyRateUsage) instead.
	RateLimits *RateLimits `json:"-"`
}

// ExpiringWithin is how close to its expiry a key is reported "expiring".
const ExpiringWithin = 7 * 24 * time.Hour

// Key statuses (Key.Status).
const (
	KeyActive   = "active"
	KeyExpiring = "expiring"
	KeyExpired  = "expired"
	KeyDisabled = "disabled"
	KeyRotated  = "rotated"
	KeyDeleted  = "deleted"
)

// Identity is what a successful Authenticate tells the caller.
type Identity struct {
	KeyID     string
	KeyName   string
	AccountID string
	// AllowedModels is the key's model allowlist (globs); empty: any model.
	// See AllowsModel.
	AllowedModels []string

	lineage string // key lineage, for the spend limit (policy.go)
}

const keyColumns = `id, account_id, name, hint, created_at, last_used_at, expires_at, replaced_by, ` + policyColumns +
	`, disabled_at, disabled_by_admin, ` + adminPolicyColumns

func (s *Store) scanKey(row interface{ Scan(...any) error }) (Key, error) {
	var (
		k                           Key
		created                     int64
		lastUsed, expires, disabled sql.NullInt64
		replacedBy                  sql.NullString
		models, period              sql.NullString
		limit                       sql.NullInt64
		byAdmin                     int64
		aModels, aPeriod            sql.NullString
		aLimit                      sql.NullInt64
		rates                       sql.NullString
	)
	if err := row.Scan(&k.ID, &k.AccountID, &k.Name, &k.Hint, &created, &lastUsed, &expires, &replacedBy,
		&models, &limit, &period, &rates, &disabled, &byAdmin, &aModels, &aLimit, &aPeriod); err != nil {
		return Key{}, err
	}
	var err error
	if k.AllowedModels, err = decodeModels(models); err != nil {
		return Key{}, err
	}
	if k.RateLimits, err = decodeRateLimits(rates.String); err != nil {
		return Key{}, err
	}
	k.SpendLimit = decodeLimit(limit, period)
	var ap AdminPolicy
	if ap.AllowedModels, err = decodeModels(aModels); err != nil {
		return Key{}, err
	}
	ap.SpendLimit = decodeLimit(aLimit, aPeriod)
	if ap.AllowedModels != nil || ap.SpendLimit != nil {
		k.AdminPolicy = &ap
	}
	k.CreatedAt = fromMS(created)
	k.LastUsedAt = nullMS(lastUsed)
	if p := s.lastUsed.peek(k.ID); p != 0 && (!lastUsed.Valid || p > lastUsed.Int64) {
		t := fromMS(p)
		k.LastUsedAt = &t
	}
	k.ExpiresAt = nullMS(expires)
	k.ReplacedBy = replacedBy.String
	k.Disabled, k.DisabledAt, k.DisabledByAdmin = disabled.Valid, nullMS(disabled), byAdmin != 0
	k.Status = k.status(s.now())
	return k, nil
}

// status is the Status of k at now.
func (k *Key) status(now time.Time) string {
	switch {
	case k.ExpiresAt != nil && !k.ExpiresAt.After(now):
		return KeyExpired
	case k.Disabled:
		return KeyDisabled
	case k.ReplacedBy != "":
		return KeyRotated
	case k.ExpiresAt != nil && k.ExpiresAt.Sub(now) <= ExpiringWithin:
		return KeyExpiring
	}
	return KeyActive
}

func newKeyID() (string, error) {
	r, err := randomBase62(16)
	if err != nil {
		return "", err
	}
	return "key_" + r, nil
}

// CreateKey issues a new key for an account, with its policy (expiry, model
// allowlist, spend limit; the zero KeyPolicy sets none), and returns its
// description and the plaintext. The plaintext is not kept anywhere: this is
// the only time it exists outside the caller. A policy set by an operator
// (pol.ByHolder false) is also the key's AdminPolicy.
func (s *Store) CreateKey(ctx context.Context, accountID, name string, pol KeyPolicy) (Key, string, error) {
	name, err := validateName("key", name)
	if err != nil {
		return Key{}, "", err
	}
	if err := pol.validate(s.now()); err != nil {
		return Key{}, "", err
	}
	if pol.ByHolder && pol.RateLimits != nil {
		return Key{}, "", fmt.Errorf("%w: rate limits are set by an operator", ErrNotAllowed)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.isClosed() {
		return Key{}, "", ErrClosed
	}
	if _, err := s.Account(ctx, accountID); err != nil {
		return Key{}, "", err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return Key{}, "", fmt.Errorf("creating key: %w", err)
	}
	defer tx.Rollback()
	var ceiling AdminPolicy
	if !pol.ByHolder {
		ceiling = AdminPolicy{AllowedModels: pol.AllowedModels, SpendLimit: pol.SpendLimit}
	}
	k, plaintext, err := s.insertKey(ctx, tx, accountID, name, "", pol, ceiling)
	if err != nil {
		return Key{}, "", err
	}
	detail := map[string]any{"name": k.Name}
	if k.ExpiresAt != nil {
		detail["expires_at"] = k.ExpiresAt
	}
	if len(k.AllowedModels) > 0 {
		detail["allowed_models"] = k.AllowedModels
	}
	if k.SpendLimit != nil {
		detail["spend_limit"] = k.SpendLimit
	}
	if k.RateLimits != nil {
		detail["rate_limits"] = k.RateLimits
	}
	if err := s.writeAudit(ctx, tx, accountID, k.ID, ActionKeyCreate, detail); err != nil {
		return Key{}, "", err
	}
	if err := s.recordChange(ctx, tx, change{kind: changeKey, accountID: accountID, keyID: k.ID,
		keyHashes: [][32]byte{HashKey(plaintext)}}); err != nil {
		return Key{}, "", fmt.Errorf("creating key: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return Key{}, "", fmt.Errorf("creating key: %w", err)
	}
	// The new key may have been looked up, and found unknown, before.
	s.keys.invalidate(HashKey(plaintext))
	if pol.SpendLimit != nil {
		// A new lineage has spent nothing: no load from the ledger.
		st := &spendState{limit: *pol.SpendLimit, loaded: true}
		st.start, st.end = periodBounds(st.limit.Period, unixMS(s.now()))
		s.acctMu.Lock()
		s.spend[k.ID] = st
		s.acctMu.Unlock()
	}
	if pol.RateLimits != nil {
		s.setKeyRateLimits(k.ID, pol.RateLimits) // a new key is its own lineage
	}
	return k, plaintext, nil
}

// insertKey inserts a new key in lineage (empty: a lineage of its own) with
// the given policy and operator's policy.
func (s *Store) insertKey(ctx context.Context, tx *sql.Tx, accountID, name, lineage string, pol KeyPolicy, ceiling AdminPolicy) (Key, string, error) {
	expiresAt := pol.ExpiresAt
	plaintext, err := s.newPlaintext()
	if err != nil {
		return Key{}, "", err
	}
	id, err := newKeyID()
	if err != nil {
		return Key{}, "", err
	}
	h := HashKey(plaintext)
	now := s.now()
	var exp any
	if expiresAt != nil {
		exp = unixMS(*expiresAt)
	}
	if lineage == "" {
		lineage = id
	}
	limit, period := encodeLimit(pol.SpendLimit)
	aLimit, aPeriod := encodeLimit(ceiling.SpendLimit)
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO api_keys (id, account_id, name, hash, hint, created_at, expires_at, lineage, `+policyColumns+`, `+adminPolicyColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id, accountID, name, h[:], keyHint(plaintext), unixMS(now), exp, lineage,
		encodeModels(pol.AllowedModels), limit, period, encodeRateLimits(pol.RateLimits), encodeModels(ceiling.AllowedModels), aLimit, aPeriod); err != nil {
		return Key{}, "", fmt.Errorf("creating key: %w", err)
	}
	k := Key{
		ID: id, AccountID: accountID, Name: name, Hint: keyHint(plaintext),
		CreatedAt:     fromMS(unixMS(now)),
		AllowedModels: pol.AllowedModels, SpendLimit: pol.SpendLimit, RateLimits: pol.RateLimits,
	}
	if ceiling.AllowedModels != nil || ceiling.SpendLimit != nil {
		k.AdminPolicy = &ceiling
	}
	if expiresAt != nil {
		t := fromMS(unixMS(*expiresAt))
		k.ExpiresAt = &t
	}
	k.Status = k.status(now)
	return k, plaintext, nil
}

// Key returns a key that has not been deleted.
func (s *Store) Key(ctx context.Context, id string) (Key, error) {
	row := s.r.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = ? AND deleted_at IS NULL`, id)
	k, err := s.scanKey(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, fmt.Errorf("key %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Key{}, fmt.Errorf("reading key %q: %w", id, err)
	}
	return k, nil
}

// Keys lists the keys that have not been deleted, of one account or, with an
// empty accountID, of all accounts; oldest first.
func (s *Store) Keys(ctx context.Context, accountID string) ([]Key, error) {
	q := `SELECT ` + keyColumns + ` FROM api_keys WHERE deleted_at IS NULL`
	var args []any
	if accountID != "" {
		if _, err := s.Account(ctx, accountID); err != nil {
			return nil, err
		}
		q += ` AND account_id = ?`
		args = append(args, accountID)
	}
	q += ` ORDER BY created_at, id`
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	defer rows.Close()
	out := []Key{}
	for rows.Next() {
		k, err := s.scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("listing keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	return out, nil
}

// liveKey reads, inside tx, the hash and the account of a key that has
// not been deleted.
func liveKey(ctx context.Context, tx *sql.Tx, id string) ([32]byte, string, error) {
	var (
		h       []byte
		account string
	)
	err := tx.QueryRowContext(ctx, `SELECT hash, account_id FROM api_keys WHERE id = ? AND deleted_at IS NULL`, id).Scan(&h, &account)
	if errors.Is(err, sql.ErrNoRows) {
		return [32]byte{}, "", fmt.Errorf("key %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return [32]byte{}, "", fmt.Errorf("reading key %q: %w", id, err)
	}
	var out [32]byte
	copy(out[:], h)
	return out, account, nil
}

// DeleteKey revokes a key. The very next Authenticate with it fails, in this
// process, whichever caller deleted it. The row stays (ledger rows refer to
// it) but can never authenticate again.
func (s *Store) DeleteKey(ctx context.Context, id string) error {
	return s.updateKey(ctx, id, func(tx *sql.Tx, account string) ([][32]byte, error) {
		var name string
		if err := tx.QueryRowContext(ctx, `SELECT name FROM api_keys WHERE id = ?`, id).Scan(&name); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET deleted_at = ? WHERE id = ?`, unixMS(s.now()), id); err != nil {
			return nil, err
		}
		return nil, s.writeAudit(ctx, tx, account, id, ActionKeyDelete, map[string]any{"name": name})
	})
}

// changeOfKey is the change record of an update of key id that made the
// keys of hashes stale.
func changeOfKey(id string, hashes [][32]byte) change {
	return change{kind: changeKey, keyID: id, keyHashes: hashes}
}

// updateKey runs apply on a live key (given its account) inside a
// transaction and, once the change is committed, drops the key from the
// cache, together with the keys whose hashes apply returns (the change
// touched them too).
func (s *Store) updateKey(ctx context.Context, id string, apply func(tx *sql.Tx, account string) ([][32]byte, error)) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.isClosed() {
		return ErrClosed
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("updating key %q: %w", id, err)
	}
	defer tx.Rollback()
	h, account, err := liveKey(ctx, tx, id)
	if err != nil {
		return err
	}
	also, err := apply(tx, account)
	if err != nil {
		return fmt.Errorf("updating key %q: %w", id, err)
	}
	c := changeOfKey(id, append([][32]byte{h}, also...))
	c.accountID = account
	if err := s.recordChange(ctx, tx, c); err != nil {
		return fmt.Errorf("updating key %q: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("updating key %q: %w", id, err)
	}
	s.keys.invalidate(h)
	for _, h := range also {
		s.keys.invalidate(h)
	}
	return nil
}

// RotateKey issues a replacement for a key: same account, same name, same
// expiry if it had one in the future. With grace <= 0 the old key is revoked
// at once; otherwise it keeps working until now+grace (or its own earlier
// expiry) and then fails as expired. A key that was already rotated cannot be
// rotated again: rotate its replacement.
func (s *Store) RotateKey(ctx context.Context, id string, grace time.Duration) (newKey Key, plaintext string, old Key, err error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.isClosed() {
		return Key{}, "", Key{}, ErrClosed
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return Key{}, "", Key{}, fmt.Errorf("rotating key %q: %w", id, err)
	}
	defer tx.Rollback()
	h, _, err := liveKey(ctx, tx, id)
	if err != nil {
		return Key{}, "", Key{}, err
	}
	old, err = s.scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = ?`, id))
	if err != nil {
		return Key{}, "", Key{}, fmt.Errorf("rotating key %q: %w", id, err)
	}
	if old.ReplacedBy != "" {
		return Key{}, "", Key{}, fmt.Errorf("%w: key %q was already rotated; rotate its replacement %q instead", ErrInvalid, id, old.ReplacedBy)
	}
	if old.Disabled {
		return Key{}, "", Key{}, fmt.Errorf("%w: key %q is disabled; enable it before rotating it", ErrInvalid, id)
	}
	now := s.now()
	var newExpiry *time.Time
	if old.ExpiresAt != nil && old.ExpiresAt.After(now) {
		newExpiry = old.ExpiresAt
	}
	var lineage string
	if err := tx.QueryRowContext(ctx, `SELECT lineage FROM api_keys WHERE id = ?`, id).Scan(&lineage); err != nil {
		return Key{}, "", Key{}, fmt.Errorf("rotating key %q: %w", id, err)
	}
	newKey, plaintext, err = s.insertKey(ctx, tx, old.AccountID, old.Name, lineage,
		KeyPolicy{ExpiresAt: newExpiry, AllowedModels: old.AllowedModels, SpendLimit: old.SpendLimit, RateLimits: old.RateLimits}, ceilingOf(old))
	if err != nil {
		return Key{}, "", Key{}, err
	}
	if grace <= 0 {
		_, err = tx.ExecContext(ctx, `UPDATE api_keys SET deleted_at = ?, replaced_by = ? WHERE id = ?`, unixMS(now), newKey.ID, id)
	} else {
		until := unixMS(now.Add(grace))
		if old.ExpiresAt != nil && unixMS(*old.ExpiresAt) < until {
			until = unixMS(*old.ExpiresAt)
		}
		_, err = tx.ExecContext(ctx, `UPDATE api_keys SET expires_at = ?, replaced_by = ? WHERE id = ?`, until, newKey.ID, id)
		t := fromMS(until)
		old.ExpiresAt = &t
	}
	if err != nil {
		return Key{}, "", Key{}, fmt.Errorf("rotating key %q: %w", id, err)
	}
	detail := map[string]any{"new_key": newKey.ID, "name": old.Name}
	if grace > 0 {
		detail["grace"] = grace.String()
		detail["old_key_expires_at"] = old.ExpiresAt
	}
	if err := s.writeAudit(ctx, tx, old.AccountID, id, ActionKeyRotate, detail); err != nil {
		return Key{}, "", Key{}, err
	}
	c := changeOfKey(id, [][32]byte{h, HashKey(plaintext)})
	c.accountID = old.AccountID
	if err := s.recordChange(ctx, tx, c); err != nil {
		return Key{}, "", Key{}, fmt.Errorf("rotating key %q: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return Key{}, "", Key{}, fmt.Errorf("rotating key %q: %w", id, err)
	}
	s.keys.invalidate(h)
	s.keys.invalidate(HashKey(plaintext)) // see CreateKey
	old.ReplacedBy = newKey.ID
	old.Status = old.status(now)
	if grace <= 0 {
		old.Status = KeyDeleted
	}
	return newKey, plaintext, old, nil
}

// Authenticate resolves a plaintext key to the identity it grants. It fails
// with ErrUnknownKey (never issued, or deleted), ErrKeyDisabled,
// ErrExpiredKey, or another
// error when the database cannot answer (the caller must then refuse the
// request). A cached key costs no SQL, and neither does an unknown key seen
// in the last few seconds (negative cache, bounded; see unknownCacheMax):
// a key created by this Store is known from the moment its creation
// returns, and a deleted one is refused from the next call on.
func (s *Store) Authenticate(ctx context.Context, plaintext string) (Identity, error) {
	if !LooksLikeKey(plaintext) {
		return Identity{}, ErrUnknownKey
	}
	if s.isClosed() {
		return Identity{}, ErrClosed
	}
	if s.cluster != nil {
		// Another instance may have revoked the key: trust the cache only
		// while the change feed is fresh.
		if err := s.cluster.check(); err != nil {
			return Identity{}, err
		}
	}
	now := unixMS(s.now())
	h := HashKey(plaintext)
	e, unknownUntil, epoch := s.keys.get(h)
	if e == nil {
		if now < unknownUntil {
			return Identity{}, ErrUnknownKey
		}
		var err error
		e, err = s.loadKeyEntry(ctx, h)
		if errors.Is(err, ErrUnknownKey) {
			if s.unknownLookedUp != nil {
				s.unknownLookedUp()
			}
			s.keys.putUnknown(h, now+unknownCacheTTL.Milliseconds(), epoch)
			return Identity{}, err
		}
		if err != nil {
			return Identity{}, err
		}
		if s.cluster != nil {
			// The key may belong to an account another instance created
			// a moment ago, before the feed told this one.
			if err := s.knowAccount(ctx, e.accountID); err != nil {
				return Identity{}, err
			}
			// Likewise the key itself: its lineage's spend and rate
			// limits, which the feed would bring a moment later, must
			// hold from its first request here.
			if err := s.reloadLimits(ctx, []string{e.id}); err != nil {
				return Identity{}, err
			}
			if err := s.reloadRateLimits(ctx, nil, []string{e.id}); err != nil {
				return Identity{}, err
			}
		}
		s.keys.put(h, e, epoch)
	}
	if e.disabled {
		return Identity{}, ErrKeyDisabled
	}
	if e.expiresAt != 0 && now >= e.expiresAt {
		return Identity{}, ErrExpiredKey
	}
	s.lastUsed.touch(e, now)
	return Identity{KeyID: e.id, KeyName: e.name, AccountID: e.accountID, AllowedModels: e.models, lineage: e.lineage}, nil
}

func (s *Store) loadKeyEntry(ctx context.Context, h [32]byte) (*keyEntry, error) {
	var (
		e        keyEntry
		expires  sql.NullInt64
		models   sql.NullString
		disabled sql.NullInt64
	)
	s.keyLookups.Add(1)
	err := s.r.QueryRowContext(ctx,
		`SELECT id, account_id, name, expires_at, lineage, allowed_models, disabled_at FROM api_keys WHERE hash = ? AND deleted_at IS NULL`, h[:]).
		Scan(&e.id, &e.accountID, &e.name, &expires, &e.lineage, &models, &disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrUnknownKey
	}
	if err != nil {
		return nil, fmt.Errorf("looking up key: %w", err)
	}
	e.expiresAt = expires.Int64
	e.disabled = disabled.Valid
	if e.models, err = decodeModels(models); err != nil {
		return nil, fmt.Errorf("looking up key: %w", err)
	}
	return &e, nil
}

// flushLastUsed writes the last-used times collected since the last flush.
func (s *Store) flushLastUsed(ctx context.Context) error {
	p := s.lastUsed.take()
	if len(p) == 0 {
		return nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	ctx, cancel := s.backgroundWriteContext(ctx)
	defer cancel()
	err := func() error {
		tx, err := s.w.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		stmt, err := tx.PrepareContext(ctx,
			`UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for id, ms := range p {
			if _, err := stmt.ExecContext(ctx, ms, id, ms); err != nil {
				return err
			}
		}
		return tx.Commit()
	}()
	if err != nil {
		s.lastUsed.restore(p)
		return fmt.Errorf("writing last-used times: %w", err)
	}
	return nil
}
