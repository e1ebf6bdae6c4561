package management

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// parseUsageFilter reads the query of GET /ai-gateway/usage:
//
//	account, key, model, kind (usage|adjustment)
//	status: ok (2xx) | error | 4xx | 5xx | an HTTP status (429)
//	since, until: RFC 3339 time, a date (2026-11-25, UTC) or a duration
//	              back from now (24h, 30m)
//	limit (rows, default 100, max 10000), before (row id, for paging)
//	by: model | day | key | account (totals grouped; default one total)
func parseUsageFilter(q url.Values, now time.Time) (keystore.LedgerFilter, string, error) {
	for name := range q {
		switch name {
		case "account", "key", "model", "kind", "status", "since", "until", "limit", "before", "by":
		default:
			return keystore.LedgerFilter{}, "", fmt.Errorf("unknown query parameter %q", name)
		}
	}
	f := keystore.LedgerFilter{
		AccountID: q.Get("account"), KeyID: q.Get("key"), Model: q.Get("model"), Kind: q.Get("kind"),
		Status: q.Get("status"),
	}
	var err error
	if f.Since, err = parseWhen(q.Get("since"), now); err != nil {
		return f, "", fmt.Errorf("since: %w", err)
	}
	if f.Until, err = parseWhen(q.Get("until"), now); err != nil {
		return f, "", fmt.Errorf("until: %w", err)
	}
	if s := q.Get("limit"); s != "" {
		if f.Limit, err = strconv.Atoi(s); err != nil || f.Limit < 1 || f.Limit > 10000 {
			return f, "", fmt.Errorf("limit must be an integer from 1 to 10000, got %q", s)
		}
	}
	if s := q.Get("before"); s != "" {
		if f.BeforeID, err = strconv.ParseInt(s, 10, 64); err != nil || f.BeforeID < 1 {
			return f, "", fmt.Errorf("before must be a positive row id, got %q", s)
		}
	}
	by := q.Get("by")
	switch by {
	case "", "model", "day", "key", "account":
	default:
		return f, "", fmt.Errorf("by must be model, day, key or account, got %q", by)
	}
	return f, by, nil
}

// parseWhen accepts an RFC 3339 time, a date (UTC midnight) or a duration
// back from now. Empty means unbounded.
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time (2026-11-25T10:00:00Z), a date (2026-11-25) or a duration (24h)", s)
}

func (h adminHandler) usage(w http.ResponseWriter, r *http.Request) error {
	f, by, err := parseUsageFilter(r.URL.Query(), time.Now())
	if err != nil {
		return apiErr(http.StatusBadRequest, err)
	}
	if f.AccountID != "" {
		if _, err := h.store.Account(r.Context(), f.AccountID); err != nil {
			return storeErr(err)
		}
	}
	rows, err := h.store.Ledger(r.Context(), f)
	if err != nil {
		return storeErr(err)
	}
	var totals []keystore.UsageTotal
	if f.Kind != keystore.KindAdjustment { // totals are of usage rows only
		if totals, err = h.store.UsageTotals(r.Context(), f, by); err != nil {
			return storeErr(err)
		}
	}
	ans := UsageView{Currency: h.app.Currency, By: by, Totals: []UsageTotalView{}, Rows: make([]LedgerRowView, 0, len(rows))}
	for _, t := range totals {
		ans.Totals = append(ans.Totals, NewUsageTotalView(t))
	}
	names, err := h.store.KeyNames(r.Context(), rowKeyIDs(rows))
	if err != nil {
		return storeErr(err)
	}
	for _, e := range rows {
		v := NewLedgerRowView(e)
		v.KeyName = names[e.KeyID].Name
		ans.Rows = append(ans.Rows, v)
	}
	if len(rows) == f.RowLimit() {
		ans.NextBefore = rows[len(rows)-1].ID
	}
	return writeJSON(w, http.StatusOK, ans)
}

// rowKeyIDs returns the key ids of ledger rows (repeated ids included).
func rowKeyIDs(rows []keystore.LedgerEntry) []string {
	ids := make([]string, 0, len(rows))
	for _, e := range rows {
		ids = append(ids, e.KeyID)
	}
	return ids
}

// parseAuditFilter reads the query of GET /ai-gateway/audit: account,
// target, action (exact, or a group: account, balance, key), actor (exact,
// or a prefix ending in *), since, until (as in usage), limit (1-1000,
// default 100), before (an entry id, for paging).
func parseAuditFilter(q url.Values, now time.Time) (keystore.AuditFilter, error) {
	for name := range q {
		switch name {
		case "account", "target", "action", "actor", "since", "until", "limit", "before":
		default:
			return keystore.AuditFilter{}, fmt.Errorf("unknown query parameter %q", name)
		}
	}
	f := keystore.AuditFilter{AccountID: q.Get("account"), Target: q.Get("target"), Action: q.Get("action"), Actor: q.Get("actor")}
	var err error
	if f.Since, err = parseWhen(q.Get("since"), now); err != nil {
		return f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = parseWhen(q.Get("until"), now); err != nil {
		return f, fmt.Errorf("until: %w", err)
	}
	if s := q.Get("limit"); s != "" {
		if f.Limit, err = strconv.Atoi(s); err != nil || f.Limit < 1 || f.Limit > 1000 {
			return f, fmt.Errorf("limit must be an integer from 1 to 1000, got %q", s)
		}
	}
	if s := q.Get("before"); s != "" {
		if f.BeforeID, err = strconv.ParseInt(s, 10, 64); err != nil || f.BeforeID < 1 {
			return f, fmt.Errorf("before must be a positive entry id, got %q", s)
		}
	}
	return f, nil
}

func (h adminHandler) audit(w http.ResponseWriter, r *http.Request) error {
	f, err := parseAuditFilter(r.URL.Query(), time.Now())
	if err != nil {
		return apiErr(http.StatusBadRequest, err)
	}
	entries, err := h.store.Audit(r.Context(), f)
	if err != nil {
		return storeErr(err)
	}
	ans := AuditView{Entries: entries}
	if len(entries) == f.RowLimit() {
		ans.NextBefore = entries[len(entries)-1].ID
	}
	return writeJSON(w, http.StatusOK, ans)
}
