package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// clientOnly are request headers a client may send that must never reach
// the provider.
var clientOnly = map[string]string{
	"X-Api-Key":           "client-x-api-key",
	"Api-Key":             "client-api-key",
	"OpenAI-Organization": "org-client",
	"OpenAI-Project":      "proj_client",
	"Cookie":              "session=client-cookie",
	"Proxy-Authorization": "Basic Y2xpZW50OnNlY3JldA==",
}

// headerRequests are one request of each kind the gateway forwards:
// metered JSON, metered stream, free, priced.
var headerRequests = []struct{ path, body string }{
	{"/v1/chat/completions", `{"model":"mock-model","messages":[]}`},
	{"/v1/chat/completions", `{"model":"mock-model","stream":true,"messages":[]}`},
	{"/v1/embeddings", `{"model":"mock-model","input":"x"}`},
	{"/v1/moderations", `{"input":"x"}`},
	{"/v1/images/generations", `{"model":"mock-model","prompt":"x"}`},
}

// TestClientHeadersNeverReachProvider: the client's credentials, cookies,
// and choice of the provider's organization and project are removed from
// every forwarded request.
func TestClientHeadersNeverReachProvider(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(epSite(mock.URL, "endpoint POST /v1/images/generations price 0.01"))
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")
	for _, r := range headerRequests {
		status, _, b, _ := gwtest.Post(g, r.path, secret, r.body, clientOnly)
		if status != http.StatusOK {
			t.Fatalf("%s %s: %d %s", r.path, r.body, status, b)
		}
	}
	reqs := mock.Requests()
	if len(reqs) != len(headerRequests) {
		t.Fatalf("provider saw %d requests", len(reqs))
	}
	for _, rec := range reqs {
		for name, v := range clientOnly {
			if got := rec.Header.Values(name); len(got) != 0 {
				t.Errorf("%s reached the provider with %s %q", rec.Path, name, got)
			}
			if gwtest.HasHeaderValue([]gwtest.Recorded{rec}, v) {
				t.Errorf("%s: the value of %s reached the provider", rec.Path, name)
			}
		}
		if a := rec.Header.Get("Authorization"); a != "Bearer provider-secret" {
			t.Errorf("%s: provider saw Authorization %q", rec.Path, a)
		}
	}
}

// TestOperatorSetsOrganization: header_up runs after the guard, so the
// operator's organization and project reach the provider, not the
// client's.
func TestOperatorSetsOrganization(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(strings.Replace(epSite(mock.URL, ""), `header_up Authorization "Bearer provider-secret"`,
		`header_up Authorization "Bearer provider-secret"
			header_up OpenAI-Organization org-operator
			header_up OpenAI-Project proj_operator`, 1))
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")
	status, _, b, _ := gwtest.Post(g, "/v1/chat/completions", secret, `{"model":"mock-model","messages":[]}`, clientOnly)
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, b)
	}
	rec := mock.Requests()[0]
	if o, p := rec.Header.Values("OpenAI-Organization"), rec.Header.Values("OpenAI-Project"); len(o) != 1 || o[0] != "org-operator" || len(p) != 1 || p[0] != "proj_operator" {
		t.Fatalf("provider saw organization %q, project %q", o, p)
	}
}

// TestProviderHeadersNeverReachClient: the provider's organization,
// project and cookies are removed from every forwarded response (the mock
// sends them with every answer, as OpenAI does).
func TestProviderHeadersNeverReachClient(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	resp, err := http.Get(mock.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("OpenAI-Organization") != gwtest.MockOrganization || resp.Header.Get("Set-Cookie") == "" {
		t.Fatalf("the mock does not send the headers: %v", resp.Header)
	}
	g := gwtest.New(t)
	g.LoadSite(epSite(mock.URL, "endpoint POST /v1/images/generations price 0.01\n\t\t\tmodels_endpoint upstream"))
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")
	check := func(what string, h http.Header) {
		t.Helper()
		for _, name := range []string{"OpenAI-Organization", "OpenAI-Project", "Set-Cookie"} {
			if v := h.Values(name); len(v) != 0 {
				t.Errorf("%s: the client got %s %q", what, name, v)
			}
		}
	}
	for _, r := range headerRequests {
		for _, st := range []string{"", "429"} {
			status, h, b, _ := gwtest.Post(g, r.path, secret, r.body, map[string]string{gwtest.HeaderStatus: st})
			if (st == "" && status != http.StatusOK) || (st != "" && status != http.StatusTooManyRequests) {
				t.Fatalf("%s %s status %q: %d %s", r.path, r.body, st, status, b)
			}
			check(r.path+" "+r.body+" "+st, h)
		}
	}
	// a free GET forwarded upstream
	req, _ := http.NewRequest("GET", g.BaseURL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err = gwtest.RawHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || mock.Count() != 2*len(headerRequests)+2 { // with the direct GET above
		t.Fatalf("GET /v1/models upstream: %d", resp.StatusCode)
	}
	check("GET /v1/models", resp.Header)
}
