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
//	since, until: RFC 3339 time, a date (2026-11-25, UTC) or a duration
//	              back from now (24h, 30m)
//	limit (rows, default 100, max 10000), before (row id, for paging)
//	by: model | day | key | account (totals grouped; default one total)
func parseUsageFilter(q url.Values, now time.Time) (keystore.LedgerFilter, string, error) {
	for name := range q {
		switch name {
		case "account", "key", "model", "kind", "since", "until", "limit", "before", "by":
		default:
			return keystore.LedgerFilter{}, "", fmt.Errorf("unknown query parameter %q", name)
		}
	}
	f := keystore.LedgerFilter{
		AccountID: q.Get("account"), KeyID: q.Get("key"), Model: q.Get("model"), Kind: q.Get("kind"),
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
	for _, e := range rows {
		ans.Rows = append(ans.Rows, NewLedgerRowView(e))
	}
	if len(rows) == f.RowLimit() {
		ans.NextBefore = rows[len(rows)-1].ID
	}
	return writeJSON(w, http.StatusOK, ans)
}
