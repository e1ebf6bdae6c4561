package e2e

import (
	"net/http"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// TestPricedAndFreeEndpoints: an endpoint the operator priced is held and
// charged exactly its price, once, when the provider answers 2xx, nothing
// on an upstream error, and refused when the balance cannot cover it; a
// free one is forwarded and costs nothing.
func TestPricedAndFreeEndpoints(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(epSite(mock.URL, `
			endpoint POST /v1/images/generations price 0.042000001
			endpoint POST /free/v1/images/generations free`))
	g.NewAccount("acme", "0.1")
	_, secret := g.NewKey("acme", "k")
	const price = 42_000_001
	body := `{"model":"mock-model","prompt":"a cat"}`

	status, _, b, _ := gwtest.Post(g, "/v1/images/generations", secret, body, map[string]string{gwtest.HeaderRequestID: "img-ok"})
	if status != http.StatusOK || mock.Count() != 1 {
		t.Fatalf("priced: %d %s", status, b)
	}
	status, _, b, _ = gwtest.Post(g, "/v1/images/generations", secret, body,
		map[string]string{gwtest.HeaderRequestID: "img-500", gwtest.HeaderStatus: "500"})
	if status != http.StatusInternalServerError || mock.Count() != 2 {
		t.Fatalf("priced, upstream error: %d %s", status, b)
	}
	rows := gwtest.UsageRows(t, g)
	if r := rows["img-ok"]; -r.Amount != price || r.Model != "/v1/images/generations" || r.Status != 200 || r.Prompt != 0 || r.Estimated {
		t.Fatalf("priced row %+v, want %d", r, price)
	}
	if r, ok := rows["img-500"]; !ok || r.Amount != 0 || r.Status != 500 {
		t.Fatalf("upstream error row %+v", r)
	}
	if bal := gwtest.Balance(t, g, "acme"); bal != 100_000_000-price {
		t.Fatalf("balance %d, want %d", bal, 100_000_000-price)
	}

	// 0.057999999 left covers one more, then not: refused, not forwarded
	if status, _, b, _ := gwtest.Post(g, "/v1/images/generations", secret, body, nil); status != http.StatusOK {
		t.Fatalf("second priced: %d %s", status, b)
	}
	status, h, b, _ := gwtest.Post(g, "/v1/images/generations", secret, body, nil)
	gwtest.CheckError(t, status, h, b, http.StatusForbidden, "insufficient_quota", "insufficient_balance")
	if mock.Count() != 3 {
		t.Fatalf("provider saw %d requests, want 3", mock.Count())
	}
	if bal := gwtest.Balance(t, g, "acme"); bal != 100_000_000-2*price {
		t.Fatalf("balance %d, want %d", bal, 100_000_000-2*price)
	}

	// free: forwarded, no row, no charge
	rowsBefore := len(gwtest.UsageRows(t, g))
	status, _, b, _ = gwtest.Post(g, "/free/v1/images/generations", secret, body, nil)
	if status != http.StatusOK || mock.Count() != 4 {
		t.Fatalf("free: %d %s", status, b)
	}
	if len(gwtest.UsageRows(t, g)) != rowsBefore || gwtest.Balance(t, g, "acme") != 100_000_000-2*price {
		t.Fatal("a free endpoint was charged")
	}
	// endpoint lines match exactly: another path under the prefix is not allowed
	for _, path := range []string{"/free/v1/images/generations/x", "/free/v1/fine_tuning/jobs"} {
		status, h, b, _ := gwtest.Post(g, path, secret, body, nil)
		gwtest.CheckError(t, status, h, b, http.StatusForbidden, "invalid_request_error", "endpoint_not_allowed")
	}
	if mock.Count() != 4 {
		t.Fatalf("provider saw %d requests, want 4", mock.Count())
	}
	gwtest.AssertNoHolds(t, g)
}
