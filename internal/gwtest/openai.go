package gwtest

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
)

// Site is the site block most tests use: auth, balance guard, and a
// reverse proxy to the mock that sets the provider's own key.
func Site(upstream string) string {
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

// Client is an OpenAI SDK client of the gateway with key, without retries.
func Client(g *Gateway, key string) openai.Client {
	return openai.NewClient(
		option.WithBaseURL(g.BaseURL+"/v1/"),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
	)
}

// Chat sends one small chat completion to the mock model.
func Chat(ctx context.Context, c openai.Client, opts ...option.RequestOption) (*openai.ChatCompletion, error) {
	return c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "mock-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
	}, opts...)
}

// APIErrorOf unwraps the SDK's error type.
func APIErrorOf(t *testing.T, err error) *openai.Error {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("want an API error, got %v", err)
	}
	return apiErr
}

// RawPost sends a chat request with the given Authorization header values
// (nil: none) and returns the response with its body read.
func RawPost(t *testing.T, g *Gateway, auth []string) (*http.Response, []byte) {
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

// ErrorEnvelope is the OpenAI error shape as a test reads it.
type ErrorEnvelope struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

// CheckOpenAIError asserts status, headers (a 401 must carry
// WWW-Authenticate: Bearer) and the exact error shape, with typ, code and a
// message that contains msgPart.
func CheckOpenAIError(t testing.TB, resp *http.Response, body []byte, status int, typ, code, msgPart string) ErrorEnvelope {
	t.Helper()
	checkJSONStatus(t, resp.StatusCode, resp.Header, body, status)
	if status == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("401 without WWW-Authenticate: Bearer (got %q)", resp.Header.Get("WWW-Authenticate"))
	}
	e := CheckErrorShape(t, body)
	checkTypeCode(t, e, body, typ, code)
	if !strings.Contains(e.Error.Message, msgPart) {
		t.Fatalf("message %q does not contain %q", e.Error.Message, msgPart)
	}
	return e
}

// CheckError asserts an error of the gateway in the OpenAI shape from what
// Post returns: status wantStatus, Content-Type application/json, the exact
// shape, typ and code.
func CheckError(t testing.TB, status int, h http.Header, body []byte, wantStatus int, typ, code string) ErrorEnvelope {
	t.Helper()
	checkJSONStatus(t, status, h, body, wantStatus)
	e := CheckErrorShape(t, body)
	checkTypeCode(t, e, body, typ, code)
	return e
}

// CheckErrorShape asserts that body is exactly the OpenAI error shape,
// {"error":{"message","type","param","code"}} with param null and a
// message, and returns it decoded.
func CheckErrorShape(t testing.TB, body []byte) ErrorEnvelope {
	t.Helper()
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
	var e ErrorEnvelope
	_ = json.Unmarshal(body, &e)
	if e.Error.Message == "" {
		t.Fatalf("empty message: %s", body)
	}
	return e
}

// checkJSONStatus asserts the status and Content-Type: application/json.
func checkJSONStatus(t testing.TB, status int, h http.Header, body []byte, want int) {
	t.Helper()
	if status != want {
		t.Fatalf("status %d, want %d: %s", status, want, body)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
}

// checkTypeCode asserts the error's type and code.
func checkTypeCode(t testing.TB, e ErrorEnvelope, body []byte, typ, code string) {
	t.Helper()
	if e.Error.Type != typ || e.Error.Code != code {
		t.Fatalf("type/code %q/%q, want %q/%q: %s", e.Error.Type, e.Error.Code, typ, code, body)
	}
}
