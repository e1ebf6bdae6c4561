package dashboard_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// rateLimit is one rate limit as the dashboard shows it.
type rateLimit struct {
	Kind    string `json:"kind"`
	Scope   string `json:"scope"`
	Limit   int64  `json:"limit"`
	Used    int64  `json:"used"`
	Default bool   `json:"default"`
}

// ownLimits lists the limits of a scope as "kind=limit", in the order shown.
func ownLimits(ls []rateLimit, scope string) string {
	var out []string
	for _, l := range ls {
		if l.Scope == scope && !l.Default {
			out = append(out, l.Kind+"="+strconv.FormatInt(l.Limit, 10))
		}
	}
	return strings.Join(out, " ")
}

type keyWithRates struct {
	ID         string      `json:"id"`
	RateLimits []rateLimit `json:"rate_limits"`
}

type accountWithRates struct {
	ID         string      `json:"id"`
	RateLimits []rateLimit `json:"rate_limits"`
}

// TestRateLimitsFromTheDashboard: an admin sets, changes and removes a
// key's and an account's rate limits through PATCH (kinds not given stay,
// 0 and null remove one, null removes all); the gateway enforces them; an
// account holder is refused with a sentence and changes nothing; bad
// values are explained; every change is in the audit log as
// dashboard:alice.
func TestRateLimitsFromTheDashboard(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.login("alice"), e.login("bob")
	var k newKey
	bob.must("POST", "api/keys", map[string]string{"name": "app"}, 201, &k)
	path := "api/keys/" + k.ID + "?account=team-b"

	var kv keyWithRates
	alice.must("PATCH", path, map[string]any{"rate_limits": map[string]any{"rpm": 1, "tpm": 100000, "concurrency": 4}}, 200, &kv)
	if got := ownLimits(kv.RateLimits, "key"); got != "rpm=1 tpm=100000 concurrency=4" {
		t.Fatalf("key limits after set: %q (%+v)", got, kv.RateLimits)
	}
	if got := e.chatStatus(k.Secret); got != 200 {
		t.Fatalf("first call under rpm 1: %d", got)
	}
	if got := e.chatStatus(k.Secret); got != 429 {
		t.Fatalf("second call under rpm 1: %d, want 429", got)
	}
	// kinds not given stay; 0 and null remove one
	kv = keyWithRates{}
	alice.must("PATCH", path, map[string]any{"rate_limits": map[string]any{"rpd": 500, "tpm": 0, "concurrency": nil}}, 200, &kv)
	if got := ownLimits(kv.RateLimits, "key"); got != "rpm=1 rpd=500" {
		t.Fatalf("key limits after change: %q", got)
	}
	// the holder sees them in his list
	var list0 struct {
		Keys []keyWithRates `json:"keys"`
	}
	bob.must("GET", "api/keys", nil, 200, &list0)
	if len(list0.Keys) != 1 || ownLimits(list0.Keys[0].RateLimits, "key") != "rpm=1 rpd=500" {
		t.Fatalf("bob's keys %+v", list0.Keys)
	}

	// an account holder: refused, nothing changed, not even with other fields
	before := e.dbState()
	for _, body := range []map[string]any{
		{"rate_limits": map[string]any{"rpm": 1000}},
		{"rate_limits": nil},
		{"name": "renamed", "rate_limits": map[string]any{"rpm": 0}},
	} {
		resp, b := bob.do("PATCH", "api/keys/"+k.ID, body)
		wantMessage(t, resp, b, 403, "admin_only", "Only an operator can set rate limits.")
	}
	if e.dbState() != before {
		t.Fatal("refused rate limits changed the database")
	}

	// bad values, each explained
	for _, c := range []struct {
		limits any
		say    string
	}{
		{map[string]any{"rpm": -1}, "The rpm limit must not be negative"},
		{map[string]any{"tpm": 1.5}, "The tpm limit must be a whole number"},
		{map[string]any{"rpd": "60"}, "The rpd limit must be a whole number"},
		{map[string]any{"tpd": 1_000_000_000_001}, "The tpd limit is too large: at most 1000000000000."},
		{map[string]any{"tpd": 1e30}, "The tpd limit must be a whole number"},
		{map[string]any{"concurrency": 99999999999999999999.0}, "The concurrency limit is too large"},
		{map[string]any{"rps": 5}, `"rps" is not a kind of rate limit`},
		{[]int{60}, "rate_limits must be an object"},
		{"60", "rate_limits must be an object"},
	} {
		resp, b := alice.do("PATCH", path, map[string]any{"rate_limits": c.limits})
		wantMessage(t, resp, b, 400, "invalid_request", c.say)
	}
	resp, b := alice.do("PATCH", path, map[string]any{"rate_limits": map[string]any{"rpm": json.RawMessage("99999999999999999999")}})
	wantMessage(t, resp, b, 400, "invalid_request", "The rpm limit is too large")
	if e.dbState() != before {
		t.Fatal("refused rate limits changed the database")
	}

	// null removes all
	kv = keyWithRates{}
	alice.must("PATCH", path, map[string]any{"rate_limits": nil}, 200, &kv)
	if got := ownLimits(kv.RateLimits, "key"); got != "" {
		t.Fatalf("key limits after null: %q", got)
	}
	if got := e.chatStatus(k.Secret); got != 200 {
		t.Fatalf("call after the limits were removed: %d", got)
	}

	// the account: set, shown in the accounts table, changed, removed
	var av accountWithRates
	alice.must("PATCH", "api/accounts/carol", map[string]any{"rate_limits": map[string]any{"rpm": 30, "tpd": 2000000}}, 200, &av)
	if got := ownLimits(av.RateLimits, "account"); got != "rpm=30 tpd=2000000" {
		t.Fatalf("account limits after set: %q (%+v)", got, av.RateLimits)
	}
	var list struct {
		Accounts []accountWithRates `json:"accounts"`
	}
	alice.must("GET", "api/accounts", nil, 200, &list)
	shown := map[string]string{}
	for _, a := range list.Accounts {
		shown[a.ID] = ownLimits(a.RateLimits, "account")
	}
	if shown["carol"] != "rpm=30 tpd=2000000" || shown["team-b"] != "" {
		t.Fatalf("accounts table shows %q", shown)
	}
	av = accountWithRates{}
	alice.must("PATCH", "api/accounts/carol", map[string]any{"name": "Carol", "rate_limits": map[string]any{"rpm": nil}}, 200, &av)
	if got := ownLimits(av.RateLimits, "account"); got != "tpd=2000000" {
		t.Fatalf("account limits after change: %q", got)
	}
	resp, b = alice.do("PATCH", "api/accounts/carol", map[string]any{"rate_limits": map[string]any{"rpm": -5}})
	wantMessage(t, resp, b, 400, "invalid_request", "The rpm limit must not be negative")
	resp, b = alice.do("PATCH", "api/accounts/nobody", map[string]any{"rate_limits": map[string]any{"rpm": 5}})
	wantAPIError(t, resp, b, 404, "account_not_found")
	resp, b = bob.do("PATCH", "api/accounts/team-b", map[string]any{"rate_limits": map[string]any{"rpm": 5}})
	wantAPIError(t, resp, b, 403, "admin_only")
	av = accountWithRates{}
	alice.must("PATCH", "api/accounts/carol", map[string]any{"rate_limits": nil}, 200, &av)
	if got := ownLimits(av.RateLimits, "account"); got != "" {
		t.Fatalf("account limits after null: %q", got)
	}

	// the audit log: every change by dashboard:alice, with what changed
	keyEntries, _ := alice.audit("?account=team-b&action=key.update")
	if len(keyEntries) != 3 {
		t.Fatalf("key.update entries %+v", keyEntries)
	}
	for _, en := range keyEntries {
		if en.Actor != "dashboard:alice" || en.Target != k.ID || !strings.Contains(string(en.Detail), `"rate_limits"`) {
			t.Fatalf("key.update entry %+v %s", en, en.Detail)
		}
	}
	if !strings.Contains(string(keyEntries[2].Detail), `"rpm":1`) {
		t.Fatalf("first key.update entry %s", keyEntries[2].Detail)
	}
	acctEntries, _ := alice.audit("?account=carol&action=account.rate_limits")
	if len(acctEntries) != 3 {
		t.Fatalf("account.rate_limits entries %+v", acctEntries)
	}
	for _, en := range acctEntries {
		if en.Actor != "dashboard:alice" || en.Target != "carol" {
			t.Fatalf("account.rate_limits entry %+v", en)
		}
	}
	if !strings.Contains(string(acctEntries[2].Detail), `"tpd":2000000`) {
		t.Fatalf("first account.rate_limits entry %s", acctEntries[2].Detail)
	}
}
