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

// ledgerView is a ledger row as the admin API shows it: the stored fields
// plus amounts as decimals. For usage rows cost is what the request was
// charged (-amount).
type ledgerView struct {
	keystore.LedgerEntry
	Amount       string `json:"amount"`
	BalanceAfter string `json:"balance_after"`
	Cost         string `json:"cost,omitempty"`
}

func newLedgerView(e keystore.LedgerEntry) ledgerView {
	v := ledgerView{LedgerEntry: e, Amount: keystore.FormatAmount(e.Amount), BalanceAfter: keystore.FormatAmount(e.BalanceAfter)}
	if e.Kind == keystore.KindUsage {
		v.Cost = keystore.FormatAmount(-e.Amount)
	}
	return v
}

// totalView is one group of usage totals.
type totalView struct {
	Group            string `json:"group"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	CachedTokens     int64  `json:"cached_tokens"`
	ReasoningTokens  int64  `json:"reasoning_tokens"`
	Estimated        int64  `json:"estimated"`
	CostNano         int64  `json:"cost_nano"`
	Cost             string `json:"cost"`
}

// usageAnswer is the body of GET /ai-gateway/usage.
type usageAnswer struct {
	Currency string       `json:"currency"`
	By       string       `json:"by"`
	Totals   []totalView  `json:"totals"`
	Rows     []ledgerView `json:"rows"`
	// NextBefore, when set, fetches the next (older) page with ?before=.
	NextBefore int64 `json:"next_before,omitempty"`
}

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
		if f.Limit, err = strconv.Atoi(s); err != nil || f.Limit < 1 {
			return f, "", fmt.Errorf("limit must be a positive integer, got %q", s)
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
	ans := usageAnswer{Currency: h.app.Currency, By: by, Totals: []totalView{}, Rows: make([]ledgerView, 0, len(rows))}
	for _, t := range totals {
		ans.Totals = append(ans.Totals, totalView{
			Group: t.Group, Requests: t.Requests, PromptTokens: t.PromptTokens, CompletionTokens: t.CompletionTokens,
			CachedTokens: t.CachedTokens, ReasoningTokens: t.ReasoningTokens, Estimated: t.Estimated,
			CostNano: t.Cost, Cost: keystore.FormatAmount(t.Cost),
		})
	}
	for _, e := range rows {
		ans.Rows = append(ans.Rows, newLedgerView(e))
	}
	if len(rows) == f.RowLimit() {
		ans.NextBefore = rows[len(rows)-1].ID
	}
	return writeJSON(w, http.StatusOK, ans)
}
