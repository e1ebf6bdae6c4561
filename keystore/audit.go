package keystore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// The audit log records every change of accounts, balances and keys: who
// made it (the actor), when, on which account and target, and what changed.
// Each entry is written in the transaction of the change it records, so a
// change that fails leaves no entry and a committed change always has one.
// An entry never holds a key's plaintext or hash: keys are named by id.

// Audit actions.
const (
	ActionAccountCreate     = "account.create"
	ActionAccountUpdate     = "account.update" // the name
	ActionAccountDisable    = "account.disable"
	ActionAccountEnable     = "account.enable"
	ActionAccountRateLimits = "account.rate_limits" // its own rate limits
	ActionBalanceTopup      = "balance.topup"       // a positive adjustment
	ActionBalanceCorrection = "balance.correction"  // a negative adjustment
	ActionKeyCreate         = "key.create"
	ActionKeyRename         = "key.rename"
	ActionKeyUpdate         = "key.update" // its policy: allowed models, spend limit, rate limits, expiry
	ActionKeyDisable        = "key.disable"
	ActionKeyEnable         = "key.enable"
	ActionKeyRotate         = "key.rotate"
	ActionKeyDelete         = "key.delete"
)

// UnknownActor is the actor of a change whose context names none
// (WithActor); every surface of the gateway names one.
const UnknownActor = "unknown"

// maxActorRunes bounds an actor's length.
const maxActorRunes = 200

type actorKey struct{}

// WithActor returns a context that makes the store record actor ("cli
// (alice@host)", "admin API 127.0.0.1:5555", "dashboard:alice") as the
// author of the changes made with it.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorOf returns the actor that ctx names, or UnknownActor. Control
// characters are replaced and the length is bounded, so an actor taken from
// a request header cannot forge lines in a log that shows it.
func ActorOf(ctx context.Context) string {
	a, _ := ctx.Value(actorKey{}).(string)
	a = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return '?'
		}
		return r
	}, strings.TrimSpace(a))
	if a == "" {
		return UnknownActor
	}
	if utf8.RuneCountInString(a) > maxActorRunes {
		a = string([]rune(a)[:maxActorRunes]) + "…"
	}
	return a
}

// AuditEntry is one recorded change.
type AuditEntry struct {
	ID        int64     `json:"id"`
	CreatedAt time.Time `json:"time"`
	Actor     string    `json:"actor"`
	// AccountID is the account the change was made in.
	AccountID string `json:"account"`
	// Target is what changed: a key id or an account id.
	Target string `json:"target"`
	Action string `json:"action"`
	// Detail says what changed, as a JSON object: for updates the old and
	// new values ({"name":{"old":"a","new":"b"}}).
	Detail json.RawMessage `json:"detail"`
}

// Change is the old and new value of a field, in an audit entry's detail.
type Change struct {
	Old any `json:"old"`
	New any `json:"new"`
}

// writeAudit inserts an audit entry inside tx, the transaction of the
// change it records; the actor comes from ctx.
//
// In a detail map, Change members whose old and new values are the same
// are left out; when the map had Change members and none is left, the
// change changed nothing and no entry is written, so that the log is not
// filled with updates that set what was already there. (Other members,
// such as "set_by", only describe the changes.)
func (s *Store) writeAudit(ctx context.Context, tx *sql.Tx, accountID, target, action string, detail any) error {
	if m, ok := detail.(map[string]any); ok {
		kept, changes, real := make(map[string]any, len(m)), 0, 0
		for name, v := range m {
			c, isChange := v.(Change)
			if isChange {
				changes++
				if sameJSON(c.Old, c.New) {
					continue
				}
				real++
			}
			kept[name] = v
		}
		if changes > 0 && real == 0 {
			return nil
		}
		detail = kept
	}
	if detail == nil {
		detail = struct{}{}
	}
	b, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("recording %s in the audit log: %w", action, err)
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO audit (created_at, actor, account_id, target, action, detail) VALUES (?, ?, ?, ?, ?, ?)`,
		unixMS(s.now()), ActorOf(ctx), accountID, target, action, string(b)); err != nil {
		return fmt.Errorf("recording %s in the audit log: %w", action, err)
	}
	return nil
}

// sameJSON reports whether a and b encode to the same JSON (nil and a nil
// pointer or slice both encode as null).
func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// AuditFilter selects audit entries. Zero-valued fields do not filter.
type AuditFilter struct {
	// AccountID and Target match exactly.
	AccountID, Target string
	// Actor matches exactly or, ending in '*', as a prefix
	// ("dashboard:*").
	Actor string
	// Action matches exactly ("key.rotate") or, without a dot, every
	// action of that group ("key": key.create, key.rotate, …).
	Action string
	// Since (inclusive) and Until (exclusive) bound the time.
	Since, Until time.Time
	// BeforeID keeps only entries with id < BeforeID (paging: pass the
	// smallest id of the previous page).
	BeforeID int64
	// Limit is the page size: 0 means 100, more than 1000 means 1000.
	Limit int
}

// Limits of AuditFilter.Limit.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 1000
)

// RowLimit is the number of entries Audit returns at most for f.
func (f AuditFilter) RowLimit() int {
	switch {
	case f.Limit <= 0:
		return defaultAuditLimit
	case f.Limit > maxAuditLimit:
		return maxAuditLimit
	}
	return f.Limit
}

// Audit returns the audit entries matching f, newest first.
func (s *Store) Audit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	if f.Limit < 0 || f.BeforeID < 0 {
		return nil, fmt.Errorf("%w: limit and before id must not be negative", ErrInvalid)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return nil, fmt.Errorf("%w: until %s is before since %s", ErrInvalid,
			f.Until.UTC().Format(time.RFC3339), f.Since.UTC().Format(time.RFC3339))
	}
	if s.isClosed() {
		return nil, ErrClosed
	}
	conds := []string{"1 = 1"}
	var args []any
	add := func(cond string, a ...any) {
		conds = append(conds, cond)
		args = append(args, a...)
	}
	if f.AccountID != "" {
		add("account_id = ?", f.AccountID)
	}
	if f.Target != "" {
		add("target = ?", f.Target)
	}
	if p, ok := strings.CutSuffix(f.Actor, "*"); ok {
		if p != "" {
			add("substr(actor, 1, ?) = ?", utf8.RuneCountInString(p), p)
		}
	} else if f.Actor != "" {
		add("actor = ?", f.Actor)
	}
	if f.Action != "" {
		if strings.Contains(f.Action, ".") {
			add("action = ?", f.Action)
		} else {
			p := f.Action + "."
			add("substr(action, 1, ?) = ?", len(p), p)
		}
	}
	if !f.Since.IsZero() {
		add("created_at >= ?", unixMS(f.Since))
	}
	if !f.Until.IsZero() {
		add("created_at < ?", unixMS(f.Until))
	}
	if f.BeforeID > 0 {
		add("id < ?", f.BeforeID)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT id, created_at, actor, account_id, target, action, detail FROM audit
		WHERE `+strings.Join(conds, " AND ")+` ORDER BY id DESC LIMIT ?`, append(args, f.RowLimit())...)
	if err != nil {
		return nil, fmt.Errorf("reading the audit log: %w", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var (
			e       AuditEntry
			created int64
			acct    sql.NullString
			detail  string
		)
		if err := rows.Scan(&e.ID, &created, &e.Actor, &acct, &e.Target, &e.Action, &detail); err != nil {
			return nil, fmt.Errorf("reading the audit log: %w", err)
		}
		e.CreatedAt, e.AccountID, e.Detail = fromMS(created), acct.String, json.RawMessage(detail)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the audit log: %w", err)
	}
	return out, nil
}
