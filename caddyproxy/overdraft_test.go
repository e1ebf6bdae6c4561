package caddyproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// overdraftPrices: 1000 nano-units a token either way, default_max_tokens
// 1000, so a request's hold without a limit is (prompt + 1000) tokens.
const overdraftPrices = testPrices + `, "default_max_tokens": 1000`

// serveOverdraft runs one request through the guard; next, when the
// request reaches it, records the body it got and answers with usage of
// completion tokens equal to the output limit sent (or 1000 without one).
func serveOverdraft(t *testing.T, f *guardFixture, path, body string) (*httptest.ResponseRecorder, []byte) {
	t.Helper()
	var upstream []byte
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		upstream, _ = io.ReadAll(r.Body)
		info, err := openaiwire.ParseRequest(upstream)
		if err != nil {
			t.Errorf("upstream body %s: %v", upstream, err)
		}
		out := info.MaxTokens
		if out == 0 {
			out = 1000
		}
		w.Header().Set("Content-Type", "application/json")
		_, err = fmt.Fprintf(w, `{"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, info.EstimatedPromptTokens, out*info.Completions)
		return err
	})
	rec := httptest.NewRecorder()
	if err := f.g.ServeHTTP(rec, authedRequest("POST", path, body, &f.id), next); err != nil {
		t.Fatal(err)
	}
	return rec, upstream
}

// The row, in this test's prices: a limit whose worst case the
// balance does not cover is refused, says what it asked for and what the
// balance covers, and leaves nothing held or charged.
func TestServeHTTPRefusesUncoveredLimit(t *testing.T) {
	const balance = 100_000 // 100 tokens' worth
	f := newGuardFixture(t, overdraftPrices, balance)
	body := `{"model": "m", "n": 128, "max_tokens": 16384, "messages": [{"role": "user", "content": "hi"}]}`
	rec, upstream := serveOverdraft(t, f, "/v1/chat/completions", body)
	if upstream != nil {
		t.Fatalf("refused request reached the provider with %s", upstream)
	}
	var e struct {
		Error struct{ Message, Type, Code string }
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	// prompt estimate: "user" + "hi" = 6 characters = 2 tokens, + 4 per message
	want := "requested up to 2,097,152 output tokens (n=128 × max_tokens=16384), the balance covers 94."
	if rec.Code != http.StatusForbidden || e.Error.Type != "insufficient_quota" || e.Error.Code != "insufficient_balance" ||
		!strings.Contains(e.Error.Message, want) {
		t.Fatalf("answer %d %s, want 403 insufficient_balance saying %q", rec.Code, rec.Body, want)
	}
	if rec.Header().Get(HeaderMaxTokensCapped) != "" {
		t.Error("a refusal carries the cap header")
	}
	if h, b := f.held(t), f.balance(t); h != 0 || b != balance {
		t.Fatalf("held %d, balance %d after a refusal", h, b)
	}
}

// A request that sets no limit on a balance below its default hold is sent
// with the limit the balance covers, in its endpoint's member, announced in
// a header and the ledger note, and charged exactly its usage.
func TestServeHTTPCapsUnlimitedRequest(t *testing.T) {
	const balance = 100_000
	cases := []struct {
		path, body, member string
		cap                int64
	}{
		// prompt 6 tokens: 94 left, 47 for each of two completions
		{"/v1/chat/completions", `{"model": "m", "n": 2, "messages": [{"role": "user", "content": "hi"}]}`, "max_completion_tokens", 47},
		// prompt "hi": 1 token
		{"/v1/completions", `{"model": "m", "prompt": "hi"}`, "max_tokens", 99},
		// input "hi": 1 token + 4 for the item
		{"/v1/responses", `{"model": "m", "input": "hi", "max_output_tokens": null}`, "max_output_tokens", 95},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			f := newGuardFixture(t, overdraftPrices, balance)
			rec, upstream := serveOverdraft(t, f, tc.path, tc.body)
			if rec.Code != http.StatusOK {
				t.Fatalf("answer %d %s", rec.Code, rec.Body)
			}
			want := strings.TrimSuffix(tc.body, "}")
			if strings.Contains(tc.body, "null") {
				want = strings.Replace(tc.body, "null", fmt.Sprint(tc.cap), 1)
			} else {
				want += fmt.Sprintf(`,"%s":%d}`, tc.member, tc.cap)
			}
			if string(upstream) != want {
				t.Fatalf("upstream body\n %s\nwant\n %s", upstream, want)
			}
			if got := rec.Header().Get(HeaderMaxTokensCapped); got != fmt.Sprint(tc.cap) {
				t.Fatalf("%s: %q, want %d", HeaderMaxTokensCapped, got, tc.cap)
			}
			if err := f.store.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			rows, err := f.store.Ledger(context.Background(), keystore.LedgerFilter{AccountID: "acme", Kind: "usage"})
			if err != nil || len(rows) != 1 {
				t.Fatalf("ledger: %v, %d rows", err, len(rows))
			}
			note := fmt.Sprintf("output capped by the balance: %s=%d sent upstream", tc.member, tc.cap)
			if rows[0].Note != note {
				t.Fatalf("note %q, want %q", rows[0].Note, note)
			}
			if b := f.balance(t); b < 0 || b > 1000 {
				t.Fatalf("balance %d after a capped request: the cap should use all but under one token's worth", b)
			}
			if h := f.held(t); h != 0 {
				t.Fatalf("%d still held", h)
			}
		})
	}
}

// A request without a limit whose default hold is covered goes upstream
// untouched, without the header.
func TestServeHTTPCoveredUnlimitedUntouched(t *testing.T) {
	f := newGuardFixture(t, overdraftPrices, 10_000_000)
	body := `{"model": "m", "messages": [{"role": "user", "content": "hi"}]}`
	rec, upstream := serveOverdraft(t, f, "/v1/chat/completions", body)
	if rec.Code != http.StatusOK || string(upstream) != body || rec.Header().Get(HeaderMaxTokensCapped) != "" {
		t.Fatalf("answer %d, header %q, upstream %s", rec.Code, rec.Header().Get(HeaderMaxTokensCapped), upstream)
	}
}

// Below the least output a capped request gets (1 token per completion, 16
// for the Responses API), or below an embeddings prompt, the request is
// refused.
func TestServeHTTPRefusesBelowMinimum(t *testing.T) {
	cases := []struct {
		name, path, body, says string
		balance                int64
	}{
		{"chat: prompt only", "/v1/chat/completions", `{"model": "m", "n": 3, "messages": [{"role": "user", "content": "hi"}]}`,
			"the balance covers 2, less than the 1 per completion", 8_000},
		{"chat: not even the prompt", "/v1/chat/completions", `{"model": "m", "messages": [{"role": "user", "content": "hi"}]}`,
			"the balance does not cover even the prompt (about 6 tokens)", 5_000},
		{"responses under 16", "/v1/responses", `{"model": "m", "input": "hi"}`,
			"the balance covers 15, less than the 16 per completion", 20_000},
		{"embeddings", "/v1/embeddings", `{"model": "m", "input": "hello there, all"}`,
			"an input of about 8 tokens, the balance does not cover it", 7_999},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newGuardFixture(t, overdraftPrices, tc.balance)
			rec, upstream := serveOverdraft(t, f, tc.path, tc.body)
			if upstream != nil || rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), tc.says) {
				t.Fatalf("answer %d %s (upstream %s), want 403 saying %q", rec.Code, rec.Body, upstream, tc.says)
			}
			if f.balance(t) != tc.balance || f.held(t) != 0 {
				t.Fatal("a refusal held or charged something")
			}
		})
	}
}

func TestAffordableOutput(t *testing.T) {
	rt := rate{input: 150_000_000, output: 600_000_000} // 0.15 and 0.60 per 1M tokens: 150 and 600 nano a token
	cases := []struct{ prompt, amount, want int64 }{
		{6, 100_000, 165}, // 900 + 165 × 600 = 99,900
		{6, 99_900, 165},  // exactly
		{6, 99_899, 164},  // one nano short
		{6, 900, 0},       // the prompt only
		{6, 899, -1},      // not even the prompt
		{0, keystore.MaxAmount, keystore.MaxAmount / 600}, // the largest hold
	}
	for _, tc := range cases {
		if got := affordableOutput(rt, tc.prompt, tc.amount); got != tc.want {
			t.Errorf("affordableOutput(%d, %d) = %d, want %d", tc.prompt, tc.amount, got, tc.want)
		}
	}
	// an amount the cost saturates at is not taken for affordable
	if got := affordableOutput(rt, 0, math.MaxInt64); got != math.MaxInt64/600 {
		t.Errorf("affordableOutput(0, MaxInt64) = %d", got)
	}
	if got := affordableOutput(rate{input: 1000}, 1, 1000); got != math.MaxInt64 {
		t.Errorf("free output: %d", got)
	}
}

func TestGroupDigits(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 166: "166", 1000: "1,000", 2097152: "2,097,152", -1234567: "-1,234,567",
		math.MaxInt64: "9,223,372,036,854,775,807"} {
		if got := groupDigits(n); got != want {
			t.Errorf("groupDigits(%d) = %q, want %q", n, got, want)
		}
	}
}
