package management

// GET /ai-gateway/usage/export streams raw ledger rows as CSV or JSON Lines,
// for archiving them before retention prunes them.
//
// The rows are LedgerRowView, the admin API's view of a ledger row: in JSON
// Lines one compact object per line, exactly as in GET /ai-gateway/usage;
// in CSV one record per row under a header naming the same fields
// (ExportColumns), a cell empty where the JSON leaves the field out.
//
// Integrity: the answer is chunked and ends with HTTP trailers, declared in
// the Trailer header and sent only after the last row:
//
//	X-Export-Rows:   the number of rows sent
//	X-Export-Sha256: the SHA-256 (hex) of the whole body
//
// An export that fails on the way ends with X-Export-Error instead, and a
// gateway that dies or a connection that drops ends it with neither. The
// body is nothing but rows, so a complete file stays plain CSV or JSONL;
// the CLI checks the trailers and exits non-zero on anything else.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// Trailers of an export.
const (
	TrailerExportRows   = "X-Export-Rows"
	TrailerExportSHA256 = "X-Export-Sha256"
	TrailerExportError  = "X-Export-Error"
)

// Export formats.
const (
	ExportCSV   = "csv"
	ExportJSONL = "jsonl"
)

// ExportColumns is the CSV header of an export: the JSON fields of
// LedgerRowView as the admin API sends them.
var ExportColumns = []string{
	"id", "created_at", "account_id", "key_id", "key_name", "kind", "amount_nano", "balance_after_nano", "note",
	"model", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "status",
	"duration_ms", "request_id", "estimated", "amount", "balance_after", "cost",
}

// csvRecord is v as a CSV record under ExportColumns: what its JSON shows,
// an empty cell for a field the JSON leaves out.
func csvRecord(v LedgerRowView) []string {
	num := func(n int64) string {
		if n == 0 {
			return ""
		}
		return strconv.FormatInt(n, 10)
	}
	ptr := func(n *int64) string {
		if n == nil {
			return ""
		}
		return strconv.FormatInt(*n, 10)
	}
	estimated := ""
	if v.Estimated {
		estimated = "true"
	}
	return []string{
		strconv.FormatInt(v.ID, 10), v.CreatedAt.Format(time.RFC3339Nano), v.AccountID, v.KeyID, v.KeyName, v.Kind,
		strconv.FormatInt(v.AmountNano, 10), ptr(v.BalanceAfterNano), v.Note, v.Model,
		ptr(v.PromptTokens), ptr(v.CompletionTokens), num(v.CachedTokens), num(v.ReasoningTokens),
		num(int64(v.Status)), ptr(v.DurationMS), v.RequestID, estimated, v.Amount, v.BalanceAfter, v.Cost,
	}
}

// parseExportQuery reads the query of GET /ai-gateway/usage/export: format
// (csv, the default, or jsonl) and the filters of GET /ai-gateway/usage
// except paging and grouping.
func parseExportQuery(q url.Values, now time.Time) (keystore.LedgerFilter, string, error) {
	for name := range q {
		switch name {
		case "account", "key", "model", "kind", "status", "since", "until", "format":
		default:
			return keystore.LedgerFilter{}, "", fmt.Errorf("unknown query parameter %q of an export", name)
		}
	}
	format := q.Get("format")
	switch format {
	case "":
		format = ExportCSV
	case ExportCSV, ExportJSONL:
	default:
		return keystore.LedgerFilter{}, "", fmt.Errorf("format must be %s or %s, got %q", ExportCSV, ExportJSONL, format)
	}
	rest := url.Values{}
	for name, v := range q {
		if name != "format" {
			rest[name] = v
		}
	}
	f, _, err := parseUsageFilter(rest, now)
	return f, format, err
}

// exportFlushRows is how many rows go out between two flushes.
const exportFlushRows = 1000

// exportWriter writes rows in one format to the body, hashing what it
// writes and flushing every exportFlushRows rows.
type exportWriter struct {
	rc     *http.ResponseController
	buf    *bufio.Writer
	sum    hash.Hash
	csv    *csv.Writer // nil for JSON Lines
	rows   int64
	onPage func() // tests: called after each flush
	names  *KeyNameCache
}

// KeyNameCache names the keys of ledger rows as an export meets them: one
// lookup per key, deleted and rotated keys included.
type KeyNameCache struct {
	Store *keystore.Store
	names map[string]keystore.KeyRef
}

// Name returns the name of key id ("" for no key).
func (c *KeyNameCache) Name(ctx context.Context, id string) (keystore.KeyRef, error) {
	if id == "" {
		return keystore.KeyRef{}, nil
	}
	if r, ok := c.names[id]; ok {
		return r, nil
	}
	got, err := c.Store.KeyNames(ctx, []string{id})
	if err != nil {
		return keystore.KeyRef{}, err
	}
	if c.names == nil {
		c.names = map[string]keystore.KeyRef{}
	}
	c.names[id] = got[id]
	return got[id], nil
}

func newExportWriter(w http.ResponseWriter, format string) *exportWriter {
	ew := &exportWriter{rc: http.NewResponseController(w), sum: sha256.New()}
	ew.buf = bufio.NewWriterSize(io.MultiWriter(w, ew.sum), 64<<10)
	if format == ExportCSV {
		ew.csv = csv.NewWriter(ew.buf)
	}
	return ew
}

func (ew *exportWriter) header() error {
	if ew.csv == nil {
		return nil
	}
	return ew.csv.Write(ExportColumns)
}

func (ew *exportWriter) row(ctx context.Context, e keystore.LedgerEntry) error {
	v := NewLedgerRowView(e)
	ref, err := ew.names.Name(ctx, e.KeyID)
	if err != nil {
		return err
	}
	v.KeyName = ref.Name
	if ew.csv != nil {
		if err := ew.csv.Write(csvRecord(v)); err != nil {
			return err
		}
	} else {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		ew.buf.Write(b)
		if err := ew.buf.WriteByte('\n'); err != nil {
			return err
		}
	}
	ew.rows++
	if ew.rows%exportFlushRows == 0 {
		return ew.flush()
	}
	return nil
}

// flush sends what is buffered on to the client.
func (ew *exportWriter) flush() error {
	if ew.csv != nil {
		ew.csv.Flush()
		if err := ew.csv.Error(); err != nil {
			return err
		}
	}
	if err := ew.buf.Flush(); err != nil {
		return err
	}
	if err := ew.rc.Flush(); err != nil {
		return err
	}
	if ew.onPage != nil {
		ew.onPage()
	}
	return nil
}

// exportPageHook, if set (tests), is called after each flush of an export.
var exportPageHook func()

func (h adminHandler) export(w http.ResponseWriter, r *http.Request) error {
	f, format, err := parseExportQuery(r.URL.Query(), time.Now())
	if err != nil {
		return apiErr(http.StatusBadRequest, err)
	}
	if f.AccountID != "" {
		if _, err := h.store.Account(r.Context(), f.AccountID); err != nil {
			return storeErr(err)
		}
	}
	// The filter is checked by the store before the 200 goes out, so a bad
	// one is a 400 and never an empty "successful" export.
	probe := f
	probe.Limit = 1
	if _, err := h.store.Ledger(r.Context(), probe); err != nil {
		return storeErr(err)
	}
	hd := w.Header()
	hd.Set("Content-Type", map[string]string{ExportCSV: "text/csv; charset=utf-8", ExportJSONL: "application/jsonl"}[format])
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Trailer", TrailerExportRows+", "+TrailerExportSHA256+", "+TrailerExportError)
	w.WriteHeader(http.StatusOK)

	// From here on the status is sent: a failure can only be told by the
	// trailers, never by an error answer, which would land in the rows.
	ew := newExportWriter(w, format)
	ew.onPage = exportPageHook
	ew.names = &KeyNameCache{Store: h.store}
	err = ew.header()
	if err == nil {
		err = h.store.ExportLedger(r.Context(), f, func(e keystore.LedgerEntry) error { return ew.row(r.Context(), e) })
	}
	if err == nil {
		err = ew.flush()
	}
	if err != nil {
		caddy.Log().Named("ai_gateway.export").Error("ledger export failed",
			zap.Int64("rows_sent", ew.rows), zap.Error(err))
		hd.Set(TrailerExportError, fmt.Sprintf("export failed after %d rows: %v", ew.rows, err))
		return nil
	}
	hd.Set(TrailerExportRows, strconv.FormatInt(ew.rows, 10))
	hd.Set(TrailerExportSHA256, hex.EncodeToString(ew.sum.Sum(nil)))
	return nil
}
