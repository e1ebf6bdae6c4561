package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

func TestValidKeyIsProxiedWithProviderKeyOnly(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(gwtest.Site(mock.URL))
	g.NewAccount("acme", "10.00")
	_, secret := g.NewKey("acme", "production-app")

	resp, err := gwtest.Chat(context.Background(), gwtest.Client(g, secret))
	if err != nil {
		t.Fatalf("chat through gateway: %v", err)
	}
	if got := resp.Choices[0].Message.Content; got != "Hello from the mock provider." {
		t.Fatalf("unexpected answer %q", got)
	}
	reqs := mock.Requests()
	if len(reqs) != 1 {
		t.Fatalf("mock saw %d requests, want 1", len(reqs))
	}
	if got := reqs[0].Header.Get("Authorization"); got != "Bearer provider-secret" {
		t.Fatalf("provider saw Authorization %q, want the provider key", got)
	}
	if gwtest.HasHeaderValue(reqs, secret) || gwtest.HasHeaderValue(reqs, secret[3:20]) {
		t.Fatal("the gateway key reached the provider")
	}
}

func TestGatewayKeyNeverForwardedWithoutHeaderUp(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	// An operator who forgot header_up: the client's key must still not
	// travel upstream.
	g.LoadSite(`
	handle /v1/* {
		api_key_auth
		balance_guard {
			unknown_model price 1 2
		}
		reverse_proxy ` + mock.URL + `
	}`)
	g.NewAccount("acme", "1")
	_, secret := g.NewKey("acme", "k")
	if _, err := gwtest.Chat(context.Background(), gwtest.Client(g, secret)); err != nil {
		t.Fatalf("chat: %v", err)
	}
	reqs := mock.Requests()
	if len(reqs) != 1 {
		t.Fatalf("mock saw %d requests", len(reqs))
	}
	if v := reqs[0].Header.Values("Authorization"); len(v) != 0 {
		t.Fatalf("provider saw Authorization %q; the gateway key must be stripped", v)
	}
}

func TestUnauthorizedCases(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(gwtest.Site(mock.URL))
	g.NewAccount("acme", "10")
	keyID, secret := g.NewKey("acme", "k")

	t.Run("missing header", func(t *testing.T) {
		resp, body := gwtest.RawPost(t, g, nil)
		gwtest.CheckOpenAIError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "didn't provide an API key")
	})
	t.Run("not bearer", func(t *testing.T) {
		for _, h := range []string{secret, "Basic " + secret, "Bearer", "Bearer ", "Token " + secret, "Bearer a b"} {
			resp, body := gwtest.RawPost(t, g, []string{h})
			e := gwtest.CheckOpenAIError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "malformed")
			if strings.Contains(e.Error.Message, secret) {
				t.Fatalf("message echoes the key: %s", e.Error.Message)
			}
		}
	})
	t.Run("two headers", func(t *testing.T) {
		resp, body := gwtest.RawPost(t, g, []string{"Bearer " + secret, "Bearer " + secret})
		gwtest.CheckOpenAIError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "malformed")
	})
	t.Run("unknown key", func(t *testing.T) {
		wrong := "sk-" + strings.Repeat("A", 44) + "wxyz"
		resp, body := gwtest.RawPost(t, g, []string{"Bearer " + wrong})
		e := gwtest.CheckOpenAIError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-AA…wxyz")
		if strings.Contains(e.Error.Message, wrong) {
			t.Fatal("message echoes the full wrong key")
		}
		if !strings.Contains(e.Error.Message, "https://dashboard.example.test/keys") {
			t.Fatalf("message does not point to keys_url: %s", e.Error.Message)
		}
	})
	t.Run("sdk sees 401", func(t *testing.T) {
		_, err := gwtest.Chat(context.Background(), gwtest.Client(g, "sk-nope"))
		if apiErr := gwtest.APIErrorOf(t, err); apiErr.StatusCode != 401 || apiErr.Code != "invalid_api_key" {
			t.Fatalf("SDK error %d %q", apiErr.StatusCode, apiErr.Code)
		}
	})
	t.Run("deleted key", func(t *testing.T) {
		if _, err := gwtest.Chat(context.Background(), gwtest.Client(g, secret)); err != nil {
			t.Fatalf("key should work before delete: %v", err)
		}
		g.MustAdmin("DELETE", "/ai-gateway/keys/"+keyID, nil, 200, nil)
		resp, body := gwtest.RawPost(t, g, []string{"Bearer " + secret})
		gwtest.CheckOpenAIError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "does not exist or was deleted")
	})
	if n := mock.Count(); n != 1 {
		t.Fatalf("mock saw %d requests; only the one valid call may reach it", n)
	}
}

func TestZeroBalanceIs403AndNeverReachesProvider(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(gwtest.Site(mock.URL))
	g.NewAccount("broke", "")
	_, secret := g.NewKey("broke", "k")

	resp, body := gwtest.RawPost(t, g, []string{"Bearer " + secret})
	gwtest.CheckOpenAIError(t, resp, body, 403, "insufficient_quota", "insufficient_balance", "Top up")

	_, err := gwtest.Chat(context.Background(), gwtest.Client(g, secret))
	if apiErr := gwtest.APIErrorOf(t, err); apiErr.StatusCode != 403 || apiErr.Code != "insufficient_balance" {
		t.Fatalf("SDK error %d %q", apiErr.StatusCode, apiErr.Code)
	}
	// negative balance after a correction is refused too
	g.MustAdmin("POST", "/ai-gateway/accounts/broke/balance", map[string]string{"amount": "1"}, 200, nil)
	g.MustAdmin("POST", "/ai-gateway/accounts/broke/balance", map[string]string{"amount": "-1.5", "note": "correction"}, 200, nil)
	resp, body = gwtest.RawPost(t, g, []string{"Bearer " + secret})
	gwtest.CheckOpenAIError(t, resp, body, 403, "insufficient_quota", "insufficient_balance", "-0.50")

	if n := mock.Count(); n != 0 {
		t.Fatalf("mock saw %d requests; a 403 must never reach the provider", n)
	}
	// topping up lets the request through
	g.MustAdmin("POST", "/ai-gateway/accounts/broke/balance", map[string]string{"amount": "5"}, 200, nil)
	if _, err := gwtest.Chat(context.Background(), gwtest.Client(g, secret)); err != nil {
		t.Fatalf("after top-up: %v", err)
	}
}
