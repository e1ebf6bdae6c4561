package keystore

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// AccountSummary is an account with what an operator's list of accounts
// shows beside it.
type AccountSummary struct {
	Account
	// Held is what the account's requests in flight hold right now.
	Held int64 `json:"held_nano"`
	// SpendMonth is what the account's requests cost in the current
	// calendar month (UTC), nano-units.
	SpendMonth int64 `json:"spend_month_nano"`
	// Keys counts the account's keys that are neither deleted nor expired
	// (disabled keys included).
	Keys int `json:"keys"`
}

// AccountSummaries lists every account, ordered by id, with its holds, its
// spend this month and its number of live keys. It costs two queries
// whatever the number of accounts: the month's usage totals by account
// (from the usage rollups) and a count of live keys by account.
func (s *Store) AccountSummaries(ctx context.Context) ([]AccountSummary, error) {
	now := s.now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	spend, err := s.UsageTotals(ctx, LedgerFilter{Since: month}, "account")
	if err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT account_id, COUNT(*) FROM api_keys
		WHERE deleted_at IS NULL AND (expires_at IS NULL OR expires_at > ?) GROUP BY account_id`, unixMS(now))
	if err != nil {
		return nil, fmt.Errorf("counting keys: %w", err)
	}
	defer rows.Close()
	keys := map[string]int{}
	for rows.Next() {
		var (
			id string
			n  int
		)
		if err := rows.Scan(&id, &n); err != nil {
			return nil, fmt.Errorf("counting keys: %w", err)
		}
		keys[id] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("counting keys: %w", err)
	}
	spent := make(map[string]int64, len(spend))
	for _, t := range spend {
		spent[t.Group] = t.Cost
	}
	// Accounts, not the memory map: on a database shared by several
	// instances memory holds this instance's lease, not the balance.
	accts := s.Accounts(ctx)
	out := make([]AccountSummary, 0, len(accts))
	s.acctMu.RLock()
	for _, acct := range accts {
		var held int64
		if a, ok := s.accounts[acct.ID]; ok {
			held = a.held
		}
		out = append(out, AccountSummary{Account: acct, Held: held, SpendMonth: spent[acct.ID], Keys: keys[acct.ID]})
	}
	s.acctMu.RUnlock()
	return out, nil
}

// KeyRef names a key, live or deleted, for showing ledger rows.
type KeyRef struct {
	Name    string `json:"name"`
	Deleted bool   `json:"deleted,omitempty"`
	// ReplacedBy is the key that rotated this one.
	ReplacedBy string `json:"replaced_by,omitempty"`
}

// keyNamesChunk bounds the ids of one KeyNames query.
const keyNamesChunk = 500

// KeyNames returns the names of the keys with the given ids, deleted and
// rotated keys included (their rows stay); an id that never was a key is
// absent from the map.
func (s *Store) KeyNames(ctx context.Context, ids []string) (map[string]KeyRef, error) {
	out := make(map[string]KeyRef, len(ids))
	seen := make(map[string]bool, len(ids))
	uniq := make([]any, 0, len(ids))
	for _, id := range ids {
		if id != "" && !seen[id] {
			seen[id] = true
			uniq = append(uniq, id)
		}
	}
	for len(uniq) > 0 {
		n := min(len(uniq), keyNamesChunk)
		chunk := uniq[:n]
		uniq = uniq[n:]
		rows, err := s.r.QueryContext(ctx, `SELECT id, name, deleted_at IS NOT NULL, replaced_by FROM api_keys WHERE id IN (?`+
			strings.Repeat(", ?", len(chunk)-1)+`)`, chunk...)
		if err != nil {
			return nil, fmt.Errorf("reading key names: %w", err)
		}
		for rows.Next() {
			var (
				id       string
				r        KeyRef
				replaced *string
			)
			if err := rows.Scan(&id, &r.Name, &r.Deleted, &replaced); err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading key names: %w", err)
			}
			if replaced != nil {
				r.ReplacedBy = *replaced
			}
			out[id] = r
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("reading key names: %w", err)
		}
	}
	return out, nil
}
