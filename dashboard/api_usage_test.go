package dashboard_test

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3/option"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// logRow is a row of GET api/usage/log.
type logRow struct {
	ID               int64  `json:"id"`
	Time             string `json:"time"`
	KeyID            string `json:"key_id"`
	KeyName          string `json:"key_name"`
	KeyDeleted       bool   `json:"key_deleted"`
	Model            string `json:"model"`
	Status           int    `json:"status"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	CachedTokens     int64  `json:"cached_tokens"`
	Cost             string `json:"cost"`
	CostNano         int64  `json:"cost_nano"`
	Kind             string `json:"kind"`
	Note             string `json:"note"`
	Estimated        bool   `json:"estimated"`
	Amount           string `json:"amount"`
	AmountNano       int64  `json:"amount_nano"`
}

type logPage struct {
	Rows       []logRow `json:"rows"`
	NextCursor *string  `json:"next_cursor"`
	Totals     struct {
		Requests         int64  `json:"requests"`
		PromptTokens     int64  `json:"prompt_tokens"`
		CompletionTokens int64  `json:"completion_tokens"`
		Cost             string `json:"cost"`
		CostNano         int64  `json:"cost_nano"`
	} `json:"totals"`
}

// allLogRows pages through the usage log with the filter and returns
// every row and the totals of the first page.
func allLogRows(c *client, query url.Values, pageSize int) ([]logRow, logPage) {
	c.e.t.Helper()
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("limit", strconv.Itoa(pageSize))
	var rows []logRow
	var first logPage
	for i := 0; ; i++ {
		var p logPage
		c.must("GET", "api/usage/log?"+q.Encode(), nil, 200, &p)
		if i == 0 {
			first = p
		}
		if len(p.Rows) > pageSize {
			c.e.t.Fatalf("page of %d rows, limit %d", len(p.Rows), pageSize)
		}
		rows = append(rows, p.Rows...)
		if p.NextCursor == nil {
			return rows, first
		}
		q.Set("cursor", *p.NextCursor)
		if i > 100 {
			c.e.t.Fatal("paging does not end")
		}
	}
}

// TestUsageLog: the usage log pages through every row the filters select,
// newest first, with the totals of the whole selection; rows keep the
// names of deleted and rotated keys; the CSV export has exactly the
// ledger's rows of the filter; a holder sees only their own account.
func TestUsageLog(t *testing.T) {
	e := newEnv(t)
	bob := e.login("bob")
	var a, b newKey
	bob.must("POST", "api/keys", map[string]string{"name": "=cmd|' /C calc'!A0"}, 201, &a) // a name a spreadsheet would run
	bob.must("POST", "api/keys", map[string]string{"name": "second"}, 201, &b)
	for range 3 {
		if got := e.chatStatus(a.Secret); got != 200 {
			t.Fatal(got)
		}
	}
	for range 2 {
		if got := e.chatStatus(b.Secret); got != 200 {
			t.Fatal(got)
		}
	}
	// an upstream error is logged with its status
	e.mock.Reset()
	_, err := gwtest.Chat(t.Context(), e.openAIClient(b.Secret), option.WithHeader(gwtest.HeaderStatus, "500"))
	if err == nil {
		t.Fatal("the failing call succeeded")
	}
	var rot struct {
		New newKey `json:"new"`
	}
	bob.must("POST", "api/keys/"+a.ID+"/rotate", map[string]string{}, 200, &rot)
	bob.must("DELETE", "api/keys/"+b.ID, nil, 200, nil)
	carolID, carolSecret := e.g.NewKey("carol", "carol-app")
	if got := e.chatStatus(carolSecret); got != 200 {
		t.Fatal(got)
	}

	rows, first := allLogRows(bob, url.Values{}, 2)
	// 5 + 1 requests and the top-up of newEnv
	if len(rows) != 7 || first.Totals.Requests != 6 {
		t.Fatalf("%d rows, totals %+v", len(rows), first.Totals)
	}
	var sum int64
	for i, r := range rows {
		if i > 0 && r.ID >= rows[i-1].ID {
			t.Fatalf("rows not newest first: %d after %d", r.ID, rows[i-1].ID)
		}
		if r.KeyID == carolID {
			t.Fatal("bob's log shows carol's row")
		}
		switch r.KeyID {
		case a.ID:
			if r.KeyName != a.Name || !r.KeyDeleted {
				t.Fatalf("row of the rotated key: %+v", r)
			}
		case b.ID:
			if r.KeyName != "second" || !r.KeyDeleted {
				t.Fatalf("row of the deleted key: %+v", r)
			}
		}
		sum += r.CostNano
	}
	if first.Totals.CostNano != sum || first.Totals.Cost == "" || first.Totals.PromptTokens == 0 {
		t.Fatalf("totals %+v, rows cost %d", first.Totals, sum)
	}
	// filters
	check := func(q url.Values, n int, requests int64) []logRow {
		t.Helper()
		rows, p := allLogRows(bob, q, 3)
		if len(rows) != n || p.Totals.Requests != requests {
			t.Fatalf("%v: %d rows (totals %d requests), want %d (%d)", q, len(rows), p.Totals.Requests, n, requests)
		}
		return rows
	}
	check(url.Values{"key": {a.ID}}, 3, 3)
	check(url.Values{"key": {carolID}}, 0, 0)
	check(url.Values{"model": {"mock-model"}}, 6, 6)
	check(url.Values{"model": {"nope"}}, 0, 0)
	check(url.Values{"status": {"ok"}}, 5, 5)
	errRows := check(url.Values{"status": {"error"}}, 1, 1)
	if errRows[0].Status != 500 {
		t.Fatalf("error row %+v", errRows[0])
	}
	check(url.Values{"status": {"500"}}, 1, 1)
	check(url.Values{"status": {"5xx"}, "key": {b.ID}}, 1, 1)
	adj := check(url.Values{"kind": {"adjustment"}}, 1, 0)
	if adj[0].Amount != "10.00" || adj[0].Cost != "0.00" {
		t.Fatalf("top-up row %+v", adj[0])
	}
	check(url.Values{"from": {"2000-01-01"}, "to": {"2000-01-02"}}, 0, 0)
	check(url.Values{"from": {rows[0].Time[:10]}, "to": {rows[0].Time[:10]}}, 7, 6) // a date in to: the whole day

	for _, bad := range []string{"status=2xx", "kind=x", "from=yesterday", "limit=0", "limit=501", "cursor=-1", "bogus=1"} {
		resp, body := bob.do("GET", "api/usage/log?"+bad, nil)
		wantAPIError(t, resp, body, 400, "invalid_request")
	}
	resp, body := bob.do("GET", "api/usage/log?account=carol", nil)
	wantAPIError(t, resp, body, 403, "admin_only")
	resp, body = bob.do("GET", "api/usage/log.csv?account=carol", nil)
	wantAPIError(t, resp, body, 403, "admin_only")

	// CSV: exactly the ledger's rows of the filter, oldest first
	for _, q := range []url.Values{{}, {"key": {a.ID}}, {"status": {"error"}}, {"kind": {"adjustment"}}} {
		checkCSV(t, e, bob, q)
	}

	// usage by key names deleted and rotated keys apart
	var usage struct {
		ByKey []struct {
			Group   string `json:"group"`
			Name    string `json:"name"`
			Deleted bool   `json:"deleted"`
		} `json:"by_key"`
	}
	bob.must("GET", "api/usage", nil, 200, &usage)
	names := map[string]string{}
	for _, k := range usage.ByKey {
		if !k.Deleted {
			t.Fatalf("by key: %+v of a deleted key not marked", k)
		}
		names[k.Group] = k.Name
	}
	if names[a.ID] != a.Name || names[b.ID] != "second" {
		t.Fatalf("by key names %v", names)
	}
}

// checkCSV compares the usage log's CSV export of q with the admin API's
// ledger rows of the same filter.
func checkCSV(t *testing.T, e *env, c *client, q url.Values) {
	t.Helper()
	resp, body := c.do("GET", "api/usage/log.csv?"+q.Encode(), nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" ||
		!strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment; filename=") {
		t.Fatalf("CSV %v: %d %v %s", q, resp.StatusCode, resp.Header, body)
	}
	if resp.Trailer.Get("X-Export-Rows") == "" {
		t.Fatalf("CSV %v: no X-Export-Rows trailer (%v)", q, resp.Trailer)
	}
	recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	header := strings.Join(recs[0], ",")
	if header != "id,time,key_id,key_name,key_deleted,model,status,prompt_tokens,completion_tokens,cached_tokens,cost,cost_nano,kind,note,estimated,amount,amount_nano,duration_ms" {
		t.Fatalf("CSV header %s", header)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	aq := url.Values{"account": {"team-b"}, "limit": {"10000"}}
	for _, k := range []string{"key", "model", "status", "kind"} {
		if v := q.Get(k); v != "" {
			aq.Set(k, v)
		}
	}
	gwtest.WaitNoHolds(t, e.g, 10*time.Second)
	var ledger struct {
		Rows []struct {
			ID         int64  `json:"id"`
			KeyID      string `json:"key_id"`
			KeyName    string `json:"key_name"`
			Kind       string `json:"kind"`
			AmountNano int64  `json:"amount_nano"`
			Status     int    `json:"status"`
		} `json:"rows"`
	}
	e.g.MustAdmin("GET", "/ai-gateway/usage?"+aq.Encode(), nil, http.StatusOK, &ledger)
	if len(recs)-1 != len(ledger.Rows) || resp.Trailer.Get("X-Export-Rows") != strconv.Itoa(len(ledger.Rows)) {
		t.Fatalf("CSV %v: %d rows (trailer %s), ledger %d", q, len(recs)-1, resp.Trailer.Get("X-Export-Rows"), len(ledger.Rows))
	}
	for i, rec := range recs[1:] {
		want := ledger.Rows[len(ledger.Rows)-1-i] // the admin API is newest first
		cost := int64(0)
		if want.Kind == "usage" {
			cost = -want.AmountNano
		}
		name := want.KeyName
		if strings.HasPrefix(name, "=") {
			name = "'" + name
		}
		got := fmt.Sprintf("%v|%v|%v|%v|%v|%v|%v", rec[col["id"]], rec[col["key_id"]], rec[col["key_name"]], rec[col["kind"]], rec[col["amount_nano"]], rec[col["cost_nano"]], rec[col["status"]])
		exp := fmt.Sprintf("%v|%v|%v|%v|%v|%v|%v", want.ID, want.KeyID, name, want.Kind, want.AmountNano, cost, statusCell(want.Status))
		if got != exp {
			t.Fatalf("CSV %v row %d: %s, ledger %s", q, i, got, exp)
		}
	}
}

func statusCell(s int) string {
	if s == 0 {
		return ""
	}
	return strconv.Itoa(s)
}
