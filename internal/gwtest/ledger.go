package gwtest

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// LedgerRow is a row of GET /ai-gateway/usage.
type LedgerRow struct {
	ID           int64     `json:"id"`
	CreatedAt    time.Time `json:"created_at"`
	AccountID    string    `json:"account_id"`
	KeyID        string    `json:"key_id"`
	Kind         string    `json:"kind"`
	Amount       int64     `json:"amount_nano"`
	BalanceAfter int64     `json:"balance_after_nano"`
	Note         string    `json:"note"`
	Model        string    `json:"model"`
	Prompt       int64     `json:"prompt_tokens"`
	Completion   int64     `json:"completion_tokens"`
	Cached       int64     `json:"cached_tokens"`
	Reasoning    int64     `json:"reasoning_tokens"`
	Status       int       `json:"status"`
	RequestID    string    `json:"request_id"`
	Estimated    bool      `json:"estimated"`
	Cost         string    `json:"cost"`
}

// LedgerTotal is one group of the totals of GET /ai-gateway/usage.
type LedgerTotal struct {
	Group      string `json:"group"`
	Requests   int64  `json:"requests"`
	Prompt     int64  `json:"prompt_tokens"`
	Completion int64  `json:"completion_tokens"`
	Cached     int64  `json:"cached_tokens"`
	Reasoning  int64  `json:"reasoning_tokens"`
	Estimated  int64  `json:"estimated"`
	CostNano   int64  `json:"cost_nano"`
	Cost       string `json:"cost"`
}

// UsageReport is the answer of GET /ai-gateway/usage.
type UsageReport struct {
	By     string        `json:"by"`
	Totals []LedgerTotal `json:"totals"`
	Rows   []LedgerRow   `json:"rows"`
}

// Ledger reads GET /ai-gateway/usage with the given query (limit 10000
// unless the query sets one), once nothing is in flight: a client can read
// the end of a stream a moment before the gateway settles it.
func Ledger(t testing.TB, g *Gateway, query url.Values) UsageReport {
	t.Helper()
	WaitNoHolds(t, g, 10*time.Second)
	if query.Get("limit") == "" {
		query.Set("limit", "10000")
	}
	var u UsageReport
	g.MustAdmin("GET", "/ai-gateway/usage?"+query.Encode(), nil, http.StatusOK, &u)
	return u
}

// UsageRows returns the usage rows of all accounts by request id, failing
// the test if two rows share a request id.
func UsageRows(t testing.TB, g *Gateway) map[string]LedgerRow {
	t.Helper()
	u := Ledger(t, g, url.Values{"kind": {"usage"}})
	out := make(map[string]LedgerRow, len(u.Rows))
	for _, r := range u.Rows {
		if _, dup := out[r.RequestID]; dup {
			t.Fatalf("two usage rows for request id %q", r.RequestID)
		}
		out[r.RequestID] = r
	}
	return out
}

// Balance returns an account's balance in nano-units once nothing is in
// flight.
func Balance(t testing.TB, g *Gateway, account string) int64 {
	t.Helper()
	WaitNoHolds(t, g, 10*time.Second)
	var a struct {
		Balance int64 `json:"balance_nano"`
	}
	g.MustAdmin("GET", "/ai-gateway/accounts/"+account, nil, http.StatusOK, &a)
	return a.Balance
}
