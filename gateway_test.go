package aigateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// gatewaySite is the site block most tests use: auth, balance guard, and a
// reverse proxy to the mock that sets the provider's own key.
func gatewaySite(upstream string) string {
	return `
	handle /v1/* {
		api_key_auth {
			keys_url https://dashboard.example.test/keys
		}
		balance_guard {
			price mock-* input 0.15 output 0.60
		}
		reverse_proxy ` + upstream + ` {
			header_up Authorization "Bearer provider-secret"
		}
	}`
}

func newClient(g *gwtest.Gateway, key string) openai.Client {
	return openai.NewClient(
		option.WithBaseURL(g.BaseURL+"/v1/"),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
	)
}

func chat(ctx context.Context, c openai.Client, opts ...option.RequestOption) (*openai.ChatCompletion, error) {
	return c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "mock-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
	}, opts...)
}

// apiErrorOf unwraps the SDK's error type.
func apiErrorOf(t *testing.T, err error) *openai.Error {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("want an API error, got %v", err)
	}
	return apiErr
}

func TestValidKeyIsProxiedWithProviderKeyOnly(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(gatewaySite(mock.URL))
	g.NewAccount("acme", "10.00")
	_, secret := g.NewKey("acme", "production-app")

	resp, err := chat(context.Background(), newClient(g, secret))
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
	if _, err := chat(context.Background(), newClient(g, secret)); err != nil {
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

// rawPost sends a chat request with the given Authorization header values
// (nil: none) and returns the response with its body read.
func rawPost(t *testing.T, g *gwtest.Gateway, auth []string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", g.BaseURL+"/v1/chat/completions",
		strings.NewReader(`{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Content-Type", "application/json")
	for _, a := range auth {
		req.Header.Add("Authorization", a)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

type errorEnvelope struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

// checkOpenAIError asserts status, headers and the exact error shape.
func checkOpenAIError(t *testing.T, resp *http.Response, body []byte, status int, typ, code, msgPart string) errorEnvelope {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	if status == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("401 without WWW-Authenticate: Bearer (got %q)", resp.Header.Get("WWW-Authenticate"))
	}
	// exact key set: error{message,type,param,code}
	var raw map[string]map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("body is not JSON: %s", body)
	}
	if len(raw) != 1 || raw["error"] == nil || len(raw["error"]) != 4 {
		t.Fatalf("body not in the OpenAI error shape: %s", body)
	}
	if p, ok := raw["error"]["param"]; !ok || p != nil {
		t.Fatalf("param must be present and null: %s", body)
	}
	var e errorEnvelope
	_ = json.Unmarshal(body, &e)
	if e.Error.Type != typ || e.Error.Code != code {
		t.Fatalf("type/code %q/%q, want %q/%q", e.Error.Type, e.Error.Code, typ, code)
	}
	if !strings.Contains(e.Error.Message, msgPart) {
		t.Fatalf("message %q does not contain %q", e.Error.Message, msgPart)
	}
	return e
}

func TestUnauthorizedCases(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(gatewaySite(mock.URL))
	g.NewAccount("acme", "10")
	keyID, secret := g.NewKey("acme", "k")

	t.Run("missing header", func(t *testing.T) {
		resp, body := rawPost(t, g, nil)
		checkOpenAIError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "didn't provide an API key")
	})
	t.Run("not bearer", func(t *testing.T) {
		for _, h := range []string{secret, "Basic " + secret, "Bearer", "Bearer ", "Token " + secret, "Bearer a b"} {
			resp, body := rawPost(t, g, []string{h})
			e := checkOpenAIError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "malformed")
			if strings.Contains(e.Error.Message, secret) {
				t.Fatalf("message echoes the key: %s", e.Error.Message)
			}
		}
	})
	t.Run("two headers", func(t *testing.T) {
		resp, body := rawPost(t, g, []string{"Bearer " + secret, "Bearer " + secret})
		checkOpenAIError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "malformed")
	})
	t.Run("unknown key", func(t *testing.T) {
		wrong := "sk-" + strings.Repeat("A", 44) + "wxyz"
		resp, body := rawPost(t, g, []string{"Bearer " + wrong})
		e := checkOpenAIError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-AA…wxyz")
		if strings.Contains(e.Error.Message, wrong) {
			t.Fatal("message echoes the full wrong key")
		}
		if !strings.Contains(e.Error.Message, "https://dashboard.example.test/keys") {
			t.Fatalf("message does not point to keys_url: %s", e.Error.Message)
		}
	})
	t.Run("sdk sees 401", func(t *testing.T) {
		_, err := chat(context.Background(), newClient(g, "sk-nope"))
		if apiErr := apiErrorOf(t, err); apiErr.StatusCode != 401 || apiErr.Code != "invalid_api_key" {
			t.Fatalf("SDK error %d %q", apiErr.StatusCode, apiErr.Code)
		}
	})
	t.Run("deleted key", func(t *testing.T) {
		if _, err := chat(context.Background(), newClient(g, secret)); err != nil {
			t.Fatalf("key should work before delete: %v", err)
		}
		g.MustAdmin("DELETE", "/ai-gateway/keys/"+keyID, nil, 200, nil)
		resp, body := rawPost(t, g, []string{"Bearer " + secret})
		checkOpenAIError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "does not exist or was deleted")
	})
	if n := mock.Count(); n != 1 {
		t.Fatalf("mock saw %d requests; only the one valid call may reach it", n)
	}
}

func TestZeroBalanceIs403AndNeverReachesProvider(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(gatewaySite(mock.URL))
	g.NewAccount("broke", "")
	_, secret := g.NewKey("broke", "k")

	resp, body := rawPost(t, g, []string{"Bearer " + secret})
	checkOpenAIError(t, resp, body, 403, "insufficient_quota", "insufficient_balance", "Top up")

	_, err := chat(context.Background(), newClient(g, secret))
	if apiErr := apiErrorOf(t, err); apiErr.StatusCode != 403 || apiErr.Code != "insufficient_balance" {
		t.Fatalf("SDK error %d %q", apiErr.StatusCode, apiErr.Code)
	}
	// negative balance after a correction is refused too
	g.MustAdmin("POST", "/ai-gateway/accounts/broke/balance", map[string]string{"amount": "1"}, 200, nil)
	g.MustAdmin("POST", "/ai-gateway/accounts/broke/balance", map[string]string{"amount": "-1.5", "note": "correction"}, 200, nil)
	resp, body = rawPost(t, g, []string{"Bearer " + secret})
	checkOpenAIError(t, resp, body, 403, "insufficient_quota", "insufficient_balance", "-0.50")

	if n := mock.Count(); n != 0 {
		t.Fatalf("mock saw %d requests; a 403 must never reach the provider", n)
	}
	// topping up lets the request through
	g.MustAdmin("POST", "/ai-gateway/accounts/broke/balance", map[string]string{"amount": "5"}, 200, nil)
	if _, err := chat(context.Background(), newClient(g, secret)); err != nil {
		t.Fatalf("after top-up: %v", err)
	}
}
