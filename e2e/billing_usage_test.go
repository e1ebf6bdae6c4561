package e2e

// Observability: the usage admin endpoint, the access log placeholders and
// the metrics agree with the ledger.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// TestUsageAdminAndPlaceholders checks GET /ai-gateway/usage filters and
// groupings against the rows, and the access log: the gateway's fields and
// the {ai_gateway.*} placeholders (through log_append), never the key.
func TestUsageAdminAndPlaceholders(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	accessLog := filepath.Join(g.Dir, "access.log")
	g.LoadSite(`
	log {
		output file ` + accessLog + `
		format json
	}` + btSite(mock.URL, "", `
		log_append placeholder_cost {ai_gateway.cost}
		log_append placeholder_prompt {ai_gateway.tokens.prompt}
		log_append placeholder_model {ai_gateway.model}`))
	g.NewAccount("alpha", "50")
	g.NewAccount("beta", "50")
	k1, s1 := g.NewKey("alpha", "one")
	k2, s2 := g.NewKey("alpha", "two")
	k3, s3 := g.NewKey("beta", "three")
	secrets := map[string]string{k1: s1, k2: s2, k3: s3}

	type sent struct {
		id, key, account, model string
		p, c, cached            int64
	}
	var all []sent
	do := func(batch int) {
		for i, x := range []struct {
			key, account, model string
			p, c, cached        int64
		}{
			{k1, "alpha", "mock-a", 100, 50, 10},
			{k1, "alpha", "big-b", 200, 20, 0},
			{k2, "alpha", "mock-a", 300, 30, 30},
			{k3, "beta", "big-b", 400, 40, 5},
			{k3, "beta", "mock-a", 500, 0, 0},
		} {
			id := fmt.Sprintf("ua-%d-%d", batch, i)
			body := `{"model":"` + x.model + `","messages":[{"role":"user","content":"hi"}]}`
			status, _, b, err := gwtest.Post(g, "/v1/chat/completions", secrets[x.key], body, map[string]string{
				gwtest.HeaderRequestID: id, gwtest.HeaderUsage: fmt.Sprintf("%d,%d,%d", x.p, x.c, x.cached)})
			if err != nil || status != 200 {
				t.Fatalf("%s: %d %v %s", id, status, err, b)
			}
			all = append(all, sent{id, x.key, x.account, x.model, x.p, x.c, x.cached})
		}
	}
	do(0)
	time.Sleep(20 * time.Millisecond)
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	do(1)

	costOf := func(s sent) int64 { return btCost(btRateOf(t, s.model), s.p, s.c, s.cached) }
	sumWhere := func(keep func(s sent) bool) gwtest.LedgerTotal {
		var tot gwtest.LedgerTotal
		for _, s := range all {
			if keep(s) {
				tot.Requests++
				tot.Prompt += s.p
				tot.Completion += s.c
				tot.Cached += s.cached
				tot.CostNano += costOf(s)
			}
		}
		return tot
	}
	check := func(q url.Values, keep func(s sent) bool) {
		t.Helper()
		u := gwtest.Ledger(t, g, q)
		want := sumWhere(keep)
		if len(u.Totals) != 1 {
			t.Fatalf("%s: totals %+v", q.Encode(), u.Totals)
		}
		got := u.Totals[0]
		got.Group, got.Cost = "", ""
		if got != want {
			t.Fatalf("%s: totals %+v, want %+v", q.Encode(), got, want)
		}
		n := 0
		for _, r := range u.Rows {
			if r.Kind == "usage" {
				n++
			}
		}
		if int64(n) != want.Requests {
			t.Fatalf("%s: %d usage rows, want %d", q.Encode(), n, want.Requests)
		}
	}
	check(url.Values{}, func(sent) bool { return true })
	check(url.Values{"account": {"alpha"}}, func(s sent) bool { return s.account == "alpha" })
	check(url.Values{"key": {k1}}, func(s sent) bool { return s.key == k1 })
	check(url.Values{"model": {"big-b"}}, func(s sent) bool { return s.model == "big-b" })
	check(url.Values{"account": {"beta"}, "model": {"mock-a"}}, func(s sent) bool { return s.account == "beta" && s.model == "mock-a" })
	check(url.Values{"since": {mid.UTC().Format(time.RFC3339Nano)}}, func(s sent) bool { return strings.HasPrefix(s.id, "ua-1") })
	check(url.Values{"until": {mid.UTC().Format(time.RFC3339Nano)}}, func(s sent) bool { return strings.HasPrefix(s.id, "ua-0") })
	check(url.Values{"since": {"1h"}}, func(sent) bool { return true })
	check(url.Values{"until": {"2000-01-01"}}, func(sent) bool { return false })

	rows := gwtest.UsageRows(t, g)
	for by, groupOf := range map[string]func(s sent) string{
		"model":   func(s sent) string { return s.model },
		"key":     func(s sent) string { return s.key },
		"account": func(s sent) string { return s.account },
		"day":     func(s sent) string { return rows[s.id].CreatedAt.UTC().Format("2006-01-02") },
	} {
		u := gwtest.Ledger(t, g, url.Values{"by": {by}})
		want := map[string]gwtest.LedgerTotal{}
		for _, s := range all {
			grp := groupOf(s)
			w := sumWhere(func(x sent) bool { return groupOf(x) == grp })
			w.Group = grp
			want[grp] = w
		}
		if len(u.Totals) != len(want) {
			t.Fatalf("by=%s: %d groups, want %d: %+v", by, len(u.Totals), len(want), u.Totals)
		}
		if !sort.SliceIsSorted(u.Totals, func(i, j int) bool { return u.Totals[i].Group < u.Totals[j].Group }) {
			t.Fatalf("by=%s: groups not in order", by)
		}
		for _, got := range u.Totals {
			got.Cost = ""
			if got != want[got.Group] {
				t.Fatalf("by=%s: group %+v, want %+v", by, got, want[got.Group])
			}
		}
	}
	status, b := g.Admin("GET", "/ai-gateway/usage?by=week", nil)
	if status != http.StatusBadRequest {
		t.Fatalf("by=week: %d %s", status, b)
	}

	// The access log: one entry per request with the gateway's fields and
	// the placeholders, which agree with the ledger.
	var entries []map[string]any
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(accessLog)
		entries = entries[:0]
		for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
			var e map[string]any
			if json.Unmarshal(line, &e) == nil {
				entries = append(entries, e)
			}
		}
		if len(entries) >= len(all) || time.Now().After(deadline) {
			for _, s := range secrets {
				for _, part := range []string{s, s[3:23], s[len(s)-20:]} {
					if bytes.Contains(data, []byte(part)) {
						t.Fatal("a gateway key appears in the access log")
					}
				}
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(entries) != len(all) {
		t.Fatalf("%d access log entries, want %d", len(entries), len(all))
	}
	for _, e := range entries {
		req, _ := e["request"].(map[string]any)
		hdrs, _ := req["headers"].(map[string]any)
		ids, _ := hdrs[gwtest.HeaderRequestID].([]any)
		if len(ids) != 1 {
			t.Fatalf("log entry without request id: %v", e)
		}
		r := rows[ids[0].(string)]
		if e["ai_gateway_model"] != r.Model || e["ai_gateway_cost"] != r.Cost ||
			e["ai_gateway_prompt_tokens"] != float64(r.Prompt) || e["ai_gateway_completion_tokens"] != float64(r.Completion) ||
			e["ai_gateway_cached_tokens"] != float64(r.Cached) {
			t.Fatalf("log entry fields %v disagree with row %+v", e, r)
		}
		if e["placeholder_cost"] != r.Cost || e["placeholder_prompt"] != float64(r.Prompt) || e["placeholder_model"] != r.Model {
			t.Fatalf("placeholders %v/%v/%v disagree with row %+v", e["placeholder_cost"], e["placeholder_prompt"], e["placeholder_model"], r)
		}
		if _, ok := e["ai_gateway_estimated"]; ok {
			t.Fatalf("exact charge logged as estimated: %v", e)
		}
	}
	data, _ := os.ReadFile(filepath.Join(g.Dir, "caddy.log"))
	for _, s := range secrets {
		if bytes.Contains(data, []byte(s)) {
			t.Fatal("a gateway key appears in Caddy's log")
		}
	}
}

// TestMetrics: Caddy's admin /metrics shows the gateway's counters with the
// right values, and no key, account or secret as a label value.
func TestMetrics(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme-metrics", "10")
	g.NewAccount("broke-metrics", "")
	keyID, secret := g.NewKey("acme-metrics", "metrics-key")
	brokeID, brokeSecret := g.NewKey("broke-metrics", "broke-key")

	before, _ := gwtest.Scrape(t, g)
	val := func(series []gwtest.Series, name string, labels map[string]string) float64 {
		v, _ := gwtest.Metric(series, name, labels)
		return v
	}
	post := func(key, body string, h map[string]string) int {
		status, _, b, err := gwtest.Post(g, "/v1/chat/completions", key, body, h)
		if err != nil {
			t.Fatal(err)
		}
		_ = b
		return status
	}
	chatBody := `{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}`
	for i := 0; i < 3; i++ {
		if s := post(secret, chatBody, map[string]string{gwtest.HeaderUsage: "1000,200,100,50"}); s != 200 {
			t.Fatalf("status %d", s)
		}
	}
	if s := post(secret, `{"model":"big-model","messages":[]}`, map[string]string{gwtest.HeaderStatus: "502"}); s != 502 {
		t.Fatalf("status %d", s)
	}
	if s := post(secret, chatBody, map[string]string{gwtest.HeaderNoUsage: "1"}); s != 200 {
		t.Fatalf("status %d", s)
	}
	if s := post("sk-wrong", chatBody, nil); s != 401 {
		t.Fatalf("status %d", s)
	}
	if s := post("", chatBody, nil); s != 401 {
		t.Fatalf("status %d", s)
	}
	if s := post(brokeSecret, chatBody, nil); s != 403 {
		t.Fatalf("status %d", s)
	}
	if s := post(secret, `[]`, nil); s != 400 {
		t.Fatalf("status %d", s)
	}
	var after []gwtest.Series
	var text string
	gwtest.Eventually(t, 5*time.Second, func() string {
		after, text = gwtest.Scrape(t, g)
		got := val(after, "caddy_ai_gateway_requests_total", nil) - val(before, "caddy_ai_gateway_requests_total", nil)
		if got != 5 {
			return fmt.Sprintf("requests_total grew by %v, want 5", got)
		}
		return ""
	})
	delta := func(name string, labels map[string]string) float64 {
		return val(after, name, labels) - val(before, name, labels)
	}
	mockLabel := map[string]string{"model": "mock-*"}
	estTokens := float64(btPromptEstimate(t, []byte(chatBody)))
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"caddy_ai_gateway_requests_total", map[string]string{"model": "mock-*", "code": "2xx"}, 4},
		{"caddy_ai_gateway_requests_total", map[string]string{"model": "big-*", "code": "5xx"}, 1},
		{"caddy_ai_gateway_tokens_total", map[string]string{"model": "mock-*", "kind": "prompt"}, 3000 + estTokens},
		{"caddy_ai_gateway_tokens_total", map[string]string{"model": "mock-*", "kind": "completion"}, 600 + 13}, // ceil(runes of the JSON body / 4) below
		{"caddy_ai_gateway_tokens_total", map[string]string{"model": "mock-*", "kind": "cached"}, 300},
		{"caddy_ai_gateway_tokens_total", map[string]string{"model": "mock-*", "kind": "reasoning"}, 150},
		{"caddy_ai_gateway_estimated_charges_total", mockLabel, 1},
		{"caddy_ai_gateway_auth_failures_total", nil, 2},
		{"caddy_ai_gateway_rejected_total", map[string]string{"reason": "insufficient_balance"}, 1},
		{"caddy_ai_gateway_rejected_total", map[string]string{"reason": "invalid_json"}, 1},
		{"caddy_ai_gateway_holds_in_flight", nil, 0},
	}
	// the estimated completion: ceil(runes of the no-usage JSON body / 4)
	for _, a := range mock.Answers() {
		if a.Usage == nil && a.Status == 200 {
			checks[3].want = 600 + float64(btCeil4(utf8.RuneCount(a.Body)))
		}
	}
	for _, c := range checks {
		got := delta(c.name, c.labels)
		if c.name == "caddy_ai_gateway_holds_in_flight" {
			got = val(after, c.name, nil)
			if _, ok := gwtest.Metric(after, c.name, nil); !ok {
				t.Errorf("%s missing", c.name)
			}
		}
		if got != c.want {
			t.Errorf("%s%v: %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// cost_total is in currency units (a float for metrics only).
	var wantCost int64
	for _, r := range gwtest.UsageRows(t, g) {
		wantCost -= r.Amount
	}
	gotCost := delta("caddy_ai_gateway_cost_total", nil)
	if diff := gotCost - float64(wantCost)/1e9; diff > 1e-12 || diff < -1e-12 {
		t.Errorf("cost_total grew by %v, ledger charged %v", gotCost, float64(wantCost)/1e9)
	}
	reasons := map[string]bool{}
	for _, s := range after {
		if s.Name == "caddy_ai_gateway_auth_failures_total" {
			reasons[s.Labels["reason"]] = true
		}
	}
	if len(reasons) < 2 {
		t.Errorf("auth failures not split by reason: %v", reasons)
	}
	for _, s := range after {
		if !strings.HasPrefix(s.Name, "caddy_ai_gateway_") {
			continue
		}
		for k, v := range s.Labels {
			for _, bad := range []string{keyID, brokeID, secret, brokeSecret, "acme-metrics", "broke-metrics", "sk-wrong", "mock-model", "big-model"} {
				if strings.Contains(v, bad) {
					t.Errorf("%s has label %s=%q: label values must be bounded by the config", s.Name, k, v)
				}
			}
		}
	}
	if strings.Contains(text, secret[3:20]) {
		t.Error("a key appears in /metrics")
	}
}
