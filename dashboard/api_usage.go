package dashboard

import (
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/keystore"
	"github.com/metask/caddy-ai-gateway/management"
)

// usageDays is the default period of the usage page; maxUsageDays bounds it.
const (
	usageDays    = 30
	maxUsageDays = 366
	recentRows   = 25
)

func (d *Dashboard) usage(w http.ResponseWriter, r *http.Request, c *call) error {
	days := usageDays
	if s := r.URL.Query().Get("days"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxUsageDays {
			return writeError(w, badRequest("days must be a whole number from 1 to %d.", maxUsageDays))
		}
		days = n
	}
	ctx := r.Context()
	a, err := d.st().Account(ctx, c.account)
	if err != nil {
		return writeError(w, storeError(err))
	}
	now := time.Now().UTC()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	since := today.AddDate(0, 0, -(days - 1))
	f := keystore.LedgerFilter{AccountID: c.account, Since: since}

	byDay, err := d.st().UsageTotals(ctx, f, "day")
	if err != nil {
		return writeError(w, storeError(err))
	}
	byModel, err := d.st().UsageTotals(ctx, f, "model")
	if err != nil {
		return writeError(w, storeError(err))
	}
	byKey, err := d.st().UsageTotals(ctx, f, "key")
	if err != nil {
		return writeError(w, storeError(err))
	}
	total, err := d.st().UsageTotals(ctx, f, "")
	if err != nil {
		return writeError(w, storeError(err))
	}
	rows, err := d.st().Ledger(ctx, keystore.LedgerFilter{AccountID: c.account, Limit: recentRows})
	if err != nil {
		return writeError(w, storeError(err))
	}
	// Keys by name, deleted and rotated ones included (their rows stay).
	ids := make([]string, 0, len(byKey)+len(rows))
	for _, t := range byKey {
		ids = append(ids, t.Group)
	}
	for _, e := range rows {
		ids = append(ids, e.KeyID)
	}
	names, err := d.st().KeyNames(ctx, ids)
	if err != nil {
		return writeError(w, storeError(err))
	}

	// every day of the period, zeros included, oldest first
	dayTotals := make(map[string]keystore.UsageTotal, len(byDay))
	for _, t := range byDay {
		dayTotals[t.Group] = t
	}
	dayViews := make([]management.UsageTotalView, 0, days)
	for i := 0; i < days; i++ {
		day := since.AddDate(0, 0, i).Format("2006-01-02")
		t := dayTotals[day]
		t.Group = day
		dayViews = append(dayViews, management.NewAccountUsageTotalView(t))
	}
	modelViews := make([]management.UsageTotalView, 0, len(byModel))
	for _, t := range byModel {
		modelViews = append(modelViews, management.NewAccountUsageTotalView(t))
	}
	keyViews := make([]management.UsageTotalView, 0, len(byKey))
	for _, t := range byKey {
		v := management.NewAccountUsageTotalView(t)
		ref, ok := names[t.Group]
		v.Name, v.Deleted = ref.Name, !ok || ref.Deleted
		keyViews = append(keyViews, v)
	}
	rowViews := make([]management.LedgerRowView, 0, len(rows))
	for _, e := range rows {
		rowViews = append(rowViews, management.NewAccountLedgerRowView(e, names[e.KeyID].Name))
	}
	var tv management.UsageTotalView
	if len(total) > 0 {
		tv = management.NewAccountUsageTotalView(total[0])
	}
	return writeJSON(w, http.StatusOK, management.AccountUsageView{Account: d.view(a), Days: days,
		Since: since.Format("2006-01-02"), Total: tv, ByDay: dayViews, ByModel: modelViews, ByKey: keyViews, Recent: rowViews})
}

// Paging of the usage log.
const (
	defaultLogRows = 50
	maxLogRows     = 500
)

// parseLogFilter reads the filters of GET api/usage/log and its CSV
// export for the call's account: from (inclusive) and to, each an RFC 3339
// time or a date (UTC; to=2026-12-03 includes that whole day, a time in
// to is exclusive), key (a key id), model (exact), status (ok, error, 4xx,
// 5xx or a status such as 429), kind (usage or adjustment); with paging,
// also cursor (the next_cursor of the previous page) and limit.
func parseLogFilter(q url.Values, account string, paging bool) (keystore.LedgerFilter, *apiError) {
	allowed := map[string]bool{"from": true, "to": true, "key": true, "model": true, "status": true, "kind": true, "account": true}
	if paging {
		allowed["cursor"], allowed["limit"] = true, true
	}
	for name := range q {
		if !allowed[name] {
			return keystore.LedgerFilter{}, badRequest("Unknown filter %q.", name)
		}
	}
	f := keystore.LedgerFilter{AccountID: account, KeyID: q.Get("key"), Model: strings.TrimSpace(q.Get("model")),
		Status: q.Get("status"), Kind: q.Get("kind")}
	switch f.Status {
	case "", "ok", "error", "4xx", "5xx":
	default:
		if n, err := strconv.Atoi(f.Status); err != nil || n < 100 || n > 599 {
			return f, badRequest("Status must be ok, error, 4xx, 5xx or an HTTP status such as 429.")
		}
	}
	switch f.Kind {
	case "", keystore.KindUsage, keystore.KindAdjustment:
	default:
		return f, badRequest("Kind must be usage or adjustment.")
	}
	var e *apiError
	if f.Since, e = parseWhen("from", q.Get("from"), false); e != nil {
		return f, e
	}
	if f.Until, e = parseWhen("to", q.Get("to"), true); e != nil {
		return f, e
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return f, badRequest("The end of the time range is before its start.")
	}
	if !paging {
		return f, nil
	}
	f.Limit = defaultLogRows
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLogRows {
			return f, badRequest("limit must be a whole number from 1 to %d.", maxLogRows)
		}
		f.Limit = n
	}
	if s := q.Get("cursor"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return f, badRequest("The cursor is not valid; start again from the first page.")
		}
		f.BeforeID = n
	}
	return f, nil
}

// parseWhen reads a time of the usage log's range: RFC 3339, or a date in
// UTC (its start; with endOfDay the start of the next day).
func parseWhen(what, s string, endOfDay bool) (time.Time, *apiError) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		if endOfDay {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	return time.Time{}, badRequest("%q in %s is not a date like 2026-12-03 or a time like 2026-12-03T10:00:00Z.", s, what)
}

// usageLog answers a page of the usage log, newest first, with the totals
// of everything the filters select. The cursor is the id of the last row
// of the page, so rows committed meanwhile never shift the pages.
func (d *Dashboard) usageLog(w http.ResponseWriter, r *http.Request, c *call) error {
	f, e := parseLogFilter(r.URL.Query(), c.account, true)
	if e != nil {
		return writeError(w, e)
	}
	ctx := r.Context()
	rows, err := d.st().Ledger(ctx, f)
	if err != nil {
		return writeError(w, storeError(err))
	}
	ids := make([]string, 0, len(rows))
	for _, e := range rows {
		ids = append(ids, e.KeyID)
	}
	names, err := d.st().KeyNames(ctx, ids)
	if err != nil {
		return writeError(w, storeError(err))
	}
	out := management.UsageLogView{Rows: make([]management.UsageLogRowView, 0, len(rows)), Currency: d.currency}
	for _, e := range rows {
		out.Rows = append(out.Rows, management.NewUsageLogRowView(e, names[e.KeyID]))
	}
	if len(rows) == f.RowLimit() {
		next := strconv.FormatInt(rows[len(rows)-1].ID, 10)
		out.NextCursor = &next
	}
	totals, e := d.logTotals(ctx, f)
	if e != nil {
		return writeError(w, e)
	}
	out.Totals = totals
	return writeJSON(w, http.StatusOK, out)
}

// logTotals sums the usage rows f selects, whatever page f is at.
func (d *Dashboard) logTotals(ctx context.Context, f keystore.LedgerFilter) (management.UsageLogTotalsView, *apiError) {
	f.BeforeID, f.Limit = 0, 0
	var out management.UsageLogTotalsView
	if f.Kind == keystore.KindAdjustment {
		out.Cost = keystore.FormatAmount(0)
		return out, nil
	}
	t, err := d.st().UsageTotals(ctx, f, "")
	if err != nil {
		return out, storeError(err)
	}
	var sum keystore.UsageTotal
	if len(t) > 0 {
		sum = t[0]
	}
	return management.UsageLogTotalsView{Requests: sum.Requests, PromptTokens: sum.PromptTokens,
		CompletionTokens: sum.CompletionTokens, CachedTokens: sum.CachedTokens,
		Cost: keystore.FormatAmount(sum.Cost), CostNano: sum.Cost}, nil
}

// usageLogCSV sends every row the filters select as CSV (UsageLogColumns),
// oldest first, streamed. A failure after the first row can only be told
// by the X-Export-Error trailer; a complete export ends with X-Export-Rows.
// Text a person typed (key names, notes, models) that a spreadsheet would
// take for a formula (starting with = + - @ or a tab) gets a leading '.
func (d *Dashboard) usageLogCSV(w http.ResponseWriter, r *http.Request, c *call) error {
	f, e := parseLogFilter(r.URL.Query(), c.account, false)
	if e != nil {
		return writeError(w, e)
	}
	ctx := r.Context()
	// A filter the store refuses is an error answer, not an empty file.
	probe := f
	probe.Limit = 1
	if _, err := d.st().Ledger(ctx, probe); err != nil {
		return writeError(w, storeError(err))
	}
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="usage-%s-%s.csv"`, c.account, time.Now().UTC().Format("20060102-150405")))
	h.Set("Cache-Control", "no-store")
	h.Set("Trailer", management.TrailerExportRows+", "+management.TrailerExportError)
	w.WriteHeader(http.StatusOK)

	cw := csv.NewWriter(w)
	rc := http.NewResponseController(w)
	names := &management.KeyNameCache{Store: d.st()}
	var rows int64
	err := cw.Write(management.UsageLogColumns)
	if err == nil {
		err = d.st().ExportLedger(ctx, f, func(e keystore.LedgerEntry) error {
			ref, err := names.Name(ctx, e.KeyID)
			if err != nil {
				return err
			}
			if err := cw.Write(usageLogRecord(management.NewUsageLogRowView(e, ref))); err != nil {
				return err
			}
			rows++
			if rows%1000 == 0 {
				cw.Flush()
				if err := cw.Error(); err != nil {
					return err
				}
				return rc.Flush()
			}
			return nil
		})
	}
	if err == nil {
		cw.Flush()
		err = cw.Error()
	}
	if err != nil {
		d.logger.Error("dashboard: usage export failed", zap.String("user", c.s.user), zap.Int64("rows_sent", rows), zap.Error(err))
		h.Set(management.TrailerExportError, fmt.Sprintf("export failed after %d rows", rows))
		return nil
	}
	h.Set(management.TrailerExportRows, strconv.FormatInt(rows, 10))
	return nil
}

// usageLogRecord is a row of the usage log as a CSV record under
// management.UsageLogColumns.
func usageLogRecord(v management.UsageLogRowView) []string {
	num := func(n int64) string { return strconv.FormatInt(n, 10) }
	status := ""
	if v.Status != 0 {
		status = strconv.Itoa(v.Status)
	}
	return []string{num(v.ID), v.Time.Format(time.RFC3339Nano), v.KeyID, safeCell(v.KeyName),
		strconv.FormatBool(v.KeyDeleted), safeCell(v.Model), status, num(v.PromptTokens), num(v.CompletionTokens),
		num(v.CachedTokens), v.Cost, num(v.CostNano), v.Kind, safeCell(v.Note), strconv.FormatBool(v.Estimated),
		v.Amount, num(v.AmountNano), num(v.DurationMS)}
}

// safeCell keeps a spreadsheet from running text as a formula.
func safeCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
