package management

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// adminRows returns the rows of GET /ai-gateway/usage with query, oldest
// first, each as the JSON object the admin API sent (numbers kept exact).
func adminRows(t *testing.T, g *gwtest.Gateway, query url.Values) []map[string]any {
	t.Helper()
	gwtest.WaitNoHolds(t, g, 10e9)
	query.Set("limit", "10000")
	status, body := g.Admin("GET", "/ai-gateway/usage?"+query.Encode(), nil)
	if status != http.StatusOK {
		t.Fatalf("GET usage?%s: %d %s", query.Encode(), status, body)
	}
	var ans struct {
		Rows []map[string]any `json:"rows"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&ans); err != nil {
		t.Fatal(err)
	}
	slices.Reverse(ans.Rows)
	return ans.Rows
}

// parseJSONL parses an export in JSON Lines.
func parseJSONL(t *testing.T, data string) []map[string]any {
	t.Helper()
	out := []map[string]any{}
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("JSONL line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// parseCSV parses an export in CSV into one map per record, column name to
// cell, checking the header.
func parseCSV(t *testing.T, data string) []map[string]string {
	t.Helper()
	recs, err := csv.NewReader(strings.NewReader(data)).ReadAll()
	if err != nil {
		t.Fatalf("CSV: %v\n%s", err, data)
	}
	if len(recs) == 0 || !reflect.DeepEqual(recs[0], ExportColumns) {
		t.Fatalf("CSV header %q, want %q", recs[0], ExportColumns)
	}
	out := []map[string]string{}
	for _, r := range recs[1:] {
		m := map[string]string{}
		for i, c := range ExportColumns {
			m[c] = r[i]
		}
		out = append(out, m)
	}
	return out
}

// cell is how a CSV export shows a field of the admin API's JSON row.
func cell(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		return fmt.Sprint(v)
	}
	return fmt.Sprintf("unexpected %T", v)
}

// checkExportRows compares the CSV and JSONL exports of the same filter
// with the admin API's rows.
func checkExportRows(t *testing.T, want []map[string]any, csvData, jsonl string) {
	t.Helper()
	if got := parseJSONL(t, jsonl); !reflect.DeepEqual(got, want) {
		t.Fatalf("JSONL export:\n got %v\nwant %v", got, want)
	}
	recs := parseCSV(t, csvData)
	if len(recs) != len(want) {
		t.Fatalf("CSV export has %d rows, want %d", len(recs), len(want))
	}
	for i, w := range want {
		for name := range w {
			if !slices.Contains(ExportColumns, name) {
				t.Fatalf("the admin API's field %q is not a CSV column", name)
			}
		}
		for _, c := range ExportColumns {
			v := w[c]
			if got := recs[i][c]; got != cell(v) {
				t.Fatalf("CSV row %d column %s = %q, the admin API says %v", i, c, got, v)
			}
		}
	}
}

// exportCLI runs `usage export` with args to stdout and returns it.
func exportCLI(t *testing.T, g *gwtest.Gateway, args ...string) string {
	t.Helper()
	return mustCLI(t, g, append([]string{"usage", "export"}, args...)...)
}

// TestCLIUsageExport: an export of requests and adjustments in CSV and in
// JSON Lines has exactly the admin API's rows, whatever the filter; to a
// file it is the same bytes, and an existing file is kept unless --force.
func TestCLIUsageExport(t *testing.T) {
	g, _ := startCLIGateway(t)
	mustCLI(t, g, "accounts", "create", "acme")
	mustCLI(t, g, "accounts", "create", "beta")
	mustCLI(t, g, "accounts", "topup", "acme", "5", "--note", "invoice 7, \"paid\"\nsecond line")
	mustCLI(t, g, "accounts", "topup", "beta", "1.000000001")
	secret := secretFrom(t, mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "app"))
	betaSecret := secretFrom(t, mustCLI(t, g, "keys", "create", "--account", "beta", "--name", "b"))
	for i := 0; i < 3; i++ {
		chatOK(t, g, secret)
	}
	chatOK(t, g, betaSecret)
	mustCLI(t, g, "accounts", "topup", "acme", "-0.25", "--note", "correction")
	all := adminRows(t, g, url.Values{})
	keyID := all[len(all)-2]["key_id"].(string) // beta's request
	if len(all) != 7 {
		t.Fatalf("%d ledger rows, want 7", len(all))
	}

	for _, tc := range []struct {
		args  []string
		query url.Values
	}{
		{nil, url.Values{}},
		{[]string{"--account", "acme"}, url.Values{"account": {"acme"}}},
		{[]string{"--key", keyID}, url.Values{"key": {keyID}}},
		{[]string{"--model", "mock-model"}, url.Values{"model": {"mock-model"}}},
		{[]string{"--since", "1h"}, url.Values{"since": {"1h"}}},
		{[]string{"--until", "2000-01-01"}, url.Values{"until": {"2000-01-01"}}},
	} {
		want := adminRows(t, g, tc.query)
		csvOut := exportCLI(t, g, tc.args...)
		jsonl := exportCLI(t, g, append(tc.args, "--format", "jsonl")...)
		checkExportRows(t, want, csvOut, jsonl)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "ledger.csv")
	out := mustCLI(t, g, "usage", "export", "--output", file)
	if !strings.Contains(out, "Exported 7 rows to "+file) {
		t.Fatalf("export to a file said:\n%s", out)
	}
	data, err := os.ReadFile(file)
	if err != nil || string(data) != exportCLI(t, g) {
		t.Fatalf("the file (%v) differs from the export to stdout:\n%s", err, data)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("export file mode %v: readable by others", fi.Mode())
	}
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	failCLI(t, g, []string{"usage", "export", "--output", file}, "exists", "--force")
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Fatalf("an existing file was overwritten without --force: %q", b)
	}
	mustCLI(t, g, "usage", "export", "--output", file, "--force", "--format", "jsonl")
	if b, _ := os.ReadFile(file); len(parseJSONL(t, string(b))) != 7 {
		t.Fatalf("--force did not write the export:\n%s", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("files left beside the export: %v", ents)
	}

	failCLI(t, g, []string{"usage", "export", "--format", "xml"}, "--format must be csv or jsonl")
	failCLI(t, g, []string{"usage", "export", "--force"}, "--force goes with --output")
	failCLI(t, g, []string{"--json", "usage", "export"}, "--format jsonl")
	failCLI(t, g, []string{"usage", "export", "--account", "nope"}, `account "nope": not found`, "HTTP 404")
	failCLI(t, g, []string{"usage", "export", "--since", "yesterday"}, "is not a time")
	if status, body := g.Admin("GET", "/ai-gateway/usage/export?limit=5", nil); status != http.StatusBadRequest ||
		!strings.Contains(string(body), `unknown query parameter \"limit\"`) {
		t.Fatalf("export with limit: %d %s", status, body)
	}
}

// TestCLIUsageExportCut: the CLI fails, and writes no file, whenever the
// stream does not end with the gateway's end-of-export trailers.
func TestCLIUsageExportCut(t *testing.T) {
	rows := "id,created_at\n1,2030-01-01T00:00:00Z\n"
	sum := sha256.Sum256([]byte(rows))
	for name, tc := range map[string]struct {
		serve func(w http.ResponseWriter)
		want  string
	}{
		"no trailers": {func(w http.ResponseWriter) {
			io.WriteString(w, rows)
		}, "without the gateway's end-of-export trailers"},
		"connection dropped": {func(w http.ResponseWriter) {
			io.WriteString(w, rows)
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}, "the stream was cut"},
		"gateway error": {func(w http.ResponseWriter) {
			io.WriteString(w, rows)
			w.Header().Set(TrailerExportError, "export failed after 1 rows: disk I/O error")
		}, "reported: export failed after 1 rows: disk I/O error"},
		"wrong digest": {func(w http.ResponseWriter) {
			io.WriteString(w, rows+"2,2030-01-01T00:00:01Z\n")
			w.Header().Set(TrailerExportRows, "1")
			w.Header().Set(TrailerExportSHA256, hex.EncodeToString(sum[:]))
		}, "do not have the SHA-256"},
		"complete": {func(w http.ResponseWriter) {
			io.WriteString(w, rows)
			w.Header().Set(TrailerExportRows, "1")
			w.Header().Set(TrailerExportSHA256, hex.EncodeToString(sum[:]))
		}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/ai-gateway/usage/export" {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Trailer", TrailerExportRows+", "+TrailerExportSHA256+", "+TrailerExportError)
				tc.serve(w)
			}))
			defer srv.Close()
			addr := strings.TrimPrefix(srv.URL, "http://")
			file := filepath.Join(t.TempDir(), "out.csv")
			out, err := runCLIArgs(t, "--address", addr, "usage", "export", "--output", file)
			if tc.want == "" {
				if err != nil || !strings.Contains(out, "Exported 1 row to") {
					t.Fatalf("complete export: %v\n%s", err, out)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "export incomplete") || !strings.Contains(err.Error(), tc.want) ||
				!strings.Contains(err.Error(), "was not written") {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(filepath.Dir(file)); len(ents) != 0 {
				t.Fatalf("a cut export left files: %v", ents)
			}
			out, err = runCLIArgs(t, "--address", addr, "usage", "export")
			if err == nil || !strings.Contains(err.Error(), "what was printed is incomplete") || !strings.HasPrefix(out, "id,created_at\n1,") {
				t.Fatalf("cut export to stdout: %v\n%q", err, out)
			}
		})
	}
}

// TestCLIUsageExportLarge: a large export goes out in flushes of a
// thousand rows, and the heap of the process (gateway and CLI together)
// grows by far less than the export's size while it streams.
func TestCLIUsageExportLarge(t *testing.T) {
	n := 50_000
	if raceEnabled {
		n = 5_000
	}
	g, _ := startCLIGateway(t)
	mustCLI(t, g, "accounts", "create", "acme")
	mustCLI(t, g, "accounts", "topup", "acme", "1000")
	app, err := currentApp()
	if err != nil {
		t.Fatal(err)
	}
	s := app.Store()
	for i := 0; i < n; i++ {
		h, err := s.ReserveFor(keystore.Identity{AccountID: "acme"}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Settle(keystore.Charge{Model: "gpt-some-model", Cost: int64(i), PromptTokens: int64(i),
			CompletionTokens: 7, Status: 200, RequestID: fmt.Sprintf("req-%060d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := heap()
	var peak uint64
	flushes := 0
	exportPageHook = func() {
		if flushes++; flushes%5 == 0 {
			peak = max(peak, heap())
		}
	}
	defer func() { exportPageHook = nil }()
	file := filepath.Join(t.TempDir(), "big.jsonl")
	out := mustCLI(t, g, "usage", "export", "--format", "jsonl", "--output", file)
	if want := fmt.Sprintf("Exported %d rows", n+1); !strings.Contains(out, want) {
		t.Fatalf("large export said %q, want %q", out, want)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if flushes < n/exportFlushRows {
		t.Fatalf("%d rows went out in %d flushes, want at least %d", n, flushes, n/exportFlushRows)
	}
	// One flush is some 300 kB of JSON and the rows of one store page.
	const bound = 8 << 20
	if peak > base && peak-base > bound {
		t.Fatalf("heap grew by %d bytes while exporting %d bytes, bound %d", peak-base, fi.Size(), bound)
	}
	t.Logf("%d rows, %d bytes, %d flushes; heap growth %d bytes", n+1, fi.Size(), flushes, int64(peak)-int64(base))
}
