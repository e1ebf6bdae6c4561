package management

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// TestCLIUsage: requests through the gateway show up in `usage` as rows,
// as totals by model and key, as JSON, and top-ups under --adjustments;
// bad filters are refused before anything is printed.
func TestCLIUsage(t *testing.T) {
	g, _ := startCLIGateway(t)
	mustCLI(t, g, "accounts", "create", "acme")
	mustCLI(t, g, "accounts", "create", "beta")
	mustCLI(t, g, "accounts", "topup", "acme", "5", "--note", "invoice 7")
	mustCLI(t, g, "accounts", "topup", "beta", "1")
	secret := secretFrom(t, mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "app"))
	betaSecret := secretFrom(t, mustCLI(t, g, "keys", "create", "--account", "beta", "--name", "b"))
	for i := 0; i < 3; i++ {
		chatOK(t, g, secret)
	}
	chatOK(t, g, betaSecret)

	// The mock reports 12 prompt and 5 completion tokens; gatewaySite prices
	// mock-* at 0.15 / 0.60 per 1M: (12*0.15 + 5*0.60) / 1M = 0.0000048.
	out := mustCLI(t, g, "usage", "--account", "acme")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if h := strings.Join(strings.Fields(lines[0]), " "); h != "TIME ACCOUNT KEY NAME MODEL PROMPT CACHED COMPLETION STATUS MS COST" {
		t.Fatalf("usage header %q:\n%s", h, out)
	}
	rows := 0
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) >= 11 && f[1] == "acme" {
			rows++
			if f[3] != "app" || f[4] != "mock-model" || f[5] != "12" || f[7] != "5" || f[8] != "200" || f[10] != "0.0000048" {
				t.Fatalf("usage row %q", l)
			}
		}
		if len(f) > 1 && f[1] == "beta" {
			t.Fatalf("--account acme lists a row of beta: %q", l)
		}
	}
	if rows != 3 || !strings.Contains(out, "3 requests, 36 prompt (0 cached) and 15 completion tokens, 0.0000144 USD") {
		t.Fatalf("usage output (%d rows):\n%s", rows, out)
	}

	out = mustCLI(t, g, "usage", "--by", "account")
	if r := tableRow(t, out, "acme"); r[1] != "3" || r[len(r)-2] != "0.0000144" {
		t.Fatalf("by account, acme: %q\n%s", r, out)
	}
	if r := tableRow(t, out, "beta"); r[1] != "1" || r[len(r)-2] != "0.0000048" {
		t.Fatalf("by account, beta: %q\n%s", r, out)
	}
	out = mustCLI(t, g, "usage", "--account", "acme", "--by", "model", "--since", "1h")
	if r := tableRow(t, out, "mock-model"); r[1] != "3" {
		t.Fatalf("by model: %q\n%s", r, out)
	}
	// nothing in a range that ended before the requests
	out = mustCLI(t, g, "usage", "--account", "acme", "--until", "2000-01-01")
	if !strings.Contains(out, "No requests in this range.") {
		t.Fatalf("empty range:\n%s", out)
	}

	out = mustCLI(t, g, "usage", "--account", "acme", "--adjustments")
	if r := tableRow(t, out, strings.Fields(strings.Split(out, "\n")[1])[0]); r[1] != "acme" || r[2] != "+5.00" || !strings.Contains(out, "invoice 7") {
		t.Fatalf("adjustments:\n%s", out)
	}

	out = mustCLI(t, g, "--json", "usage", "--account", "acme")
	var ans struct {
		Currency string `json:"currency"`
		Totals   []struct {
			Requests int64  `json:"requests"`
			CostNano int64  `json:"cost_nano"`
			Cost     string `json:"cost"`
		} `json:"totals"`
		Rows []struct {
			AmountNano int64  `json:"amount_nano"`
			Kind       string `json:"kind"`
			KeyID      string `json:"key_id"`
		} `json:"rows"`
	}
	if err := json.Unmarshal([]byte(out), &ans); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if ans.Currency != "USD" || len(ans.Totals) != 1 || ans.Totals[0].CostNano != 14400 || len(ans.Rows) != 3 {
		t.Fatalf("--json answer: %+v", ans)
	}
	for _, r := range ans.Rows {
		if r.Kind != "usage" || r.AmountNano != -4800 || r.KeyID == "" {
			t.Fatalf("--json row: %+v", r)
		}
	}
	// the balance moved by exactly the usage
	acct := mustCLI(t, g, "accounts", "show", "acme")
	if !strings.Contains(acct, "4.9999856 USD") {
		t.Fatalf("balance after 3 requests:\n%s", acct)
	}

	failCLI(t, g, []string{"usage", "--by", "week"}, "by must be model, day, key or account")
	failCLI(t, g, []string{"usage", "--since", "yesterday"}, "since", "is not a time")
	failCLI(t, g, []string{"usage", "--account", "nope"}, `account "nope": not found`, "HTTP 404")
	failCLI(t, g, []string{"usage", "--adjustments", "--by", "model"}, "do not go together")
}

// TestCLIAccountsDisableEnable: a disabled account's keys get 403
// account_disabled from the next request on, and work again once enabled.
func TestCLIAccountsDisableEnable(t *testing.T) {
	g, mock := startCLIGateway(t)
	mustCLI(t, g, "accounts", "create", "acme")
	mustCLI(t, g, "accounts", "topup", "acme", "1")
	secret := secretFrom(t, mustCLI(t, g, "keys", "create", "--account", "acme", "--name", "app"))
	chatOK(t, g, secret)

	out := mustCLI(t, g, "accounts", "disable", "acme")
	if !strings.Contains(out, "Account acme is disabled") {
		t.Fatalf("disable output:\n%s", out)
	}
	if r := tableRow(t, mustCLI(t, g, "accounts", "list"), "acme"); r[len(r)-1] != "disabled" {
		t.Fatalf("list after disable: %q", r)
	}
	before := mock.Count()
	resp, body := gwtest.RawPost(t, g, []string{"Bearer " + secret})
	gwtest.CheckOpenAIError(t, resp, body, http.StatusForbidden, "invalid_request_error", "account_disabled", "disabled")
	if mock.Count() != before {
		t.Fatal("a request of a disabled account reached the provider")
	}

	if out := mustCLI(t, g, "accounts", "enable", "acme"); !strings.Contains(out, "Account acme is enabled") {
		t.Fatalf("enable output:\n%s", out)
	}
	chatOK(t, g, secret)
	failCLI(t, g, []string{"accounts", "disable", "nope"}, `account "nope": not found`)
}
