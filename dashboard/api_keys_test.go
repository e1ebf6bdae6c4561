package dashboard_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// dashKey is a key as GET api/keys shows it.
type dashKey struct {
	ID            string   `json:"id"`
	Name          string   `json:"name"`
	Status        string   `json:"status"`
	Disabled      bool     `json:"disabled"`
	AllowedModels []string `json:"allowed_models"`
	SpendLimit    *struct {
		Amount        string  `json:"amount"`
		AmountNano    int64   `json:"amount_nano"`
		Period        string  `json:"period"`
		Spent         string  `json:"spent"`
		SpentNano     *int64  `json:"spent_nano"`
		Remaining     string  `json:"remaining"`
		RemainingNano *int64  `json:"remaining_nano"`
		ResetsAt      *string `json:"resets_at"`
	} `json:"spend_limit"`
	AdminPolicy *keystore.AdminPolicy `json:"admin_policy"`
}

func (c *client) keys(account string) map[string]dashKey {
	c.e.t.Helper()
	path := "api/keys"
	if account != "" {
		path += "?account=" + account
	}
	var list struct {
		Keys []dashKey `json:"keys"`
	}
	c.must("GET", path, nil, 200, &list)
	out := map[string]dashKey{}
	for _, k := range list.Keys {
		out[k.ID] = k
	}
	return out
}

// wantMessage checks an error answer's status, code and message.
func wantMessage(t *testing.T, resp *http.Response, body []byte, status int, code, message string) {
	t.Helper()
	wantAPIError(t, resp, body, status, code)
	var e struct {
		Error struct{ Message string } `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	if !strings.Contains(e.Error.Message, message) {
		t.Fatalf("message %q, want it to say %q", e.Error.Message, message)
	}
}

// TestKeyPolicyFromTheDashboard: an account holder creates a key with an
// allowlist and a spend limit, sees the limit enforced by a real SDK call
// and shown as spent, and the list shows status, models and the limit's
// use.
func TestKeyPolicyFromTheDashboard(t *testing.T) {
	e := newEnv(t)
	bob := e.login("bob")
	var k newKey
	bob.must("POST", "api/keys", map[string]any{"name": "limited", "allowed_models": []string{"mock-*"},
		"spend_limit": map[string]string{"amount": "0.000001", "period": "day"}}, 201, &k)
	if k.Secret == "" || k.Status != "active" || k.AdminPolicy != nil {
		t.Fatalf("new key %+v", k.Key)
	}
	if got := e.chatStatus(k.Secret); got != 200 {
		t.Fatalf("first call: %d", got)
	}
	// 0.0000048 spent of 0.000001: the next request is refused
	c := e.openAIClient(k.Secret)
	_, err := gwtest.Chat(t.Context(), c)
	if apiErr := gwtest.APIErrorOf(t, err); apiErr.StatusCode != 403 || apiErr.Code != "key_limit_exceeded" {
		t.Fatalf("call past the limit: %d %s", apiErr.StatusCode, apiErr.Code)
	}
	got := bob.keys("")[k.ID]
	l := got.SpendLimit
	if got.Status != "active" || strings.Join(got.AllowedModels, ",") != "mock-*" || l == nil || l.Amount != "0.000001" ||
		l.Period != "day" || l.Spent != "0.0000048" || l.SpentNano == nil || *l.SpentNano != 4800 || l.Remaining != "0.00" ||
		l.RemainingNano == nil || *l.RemainingNano != 0 || l.ResetsAt == nil {
		t.Fatalf("key in the list: %+v limit %+v", got, l)
	}
	// a model outside the allowlist is refused
	var k2 newKey
	bob.must("POST", "api/keys", map[string]any{"name": "other-models", "allowed_models": []string{"gpt-4o"}}, 201, &k2)
	if got := e.chatStatus(k2.Secret); got != 403 {
		t.Fatalf("a model outside the allowlist: %d, want 403", got)
	}
	// the holder's own policy may be widened by the holder
	bob.must("PATCH", "api/keys/"+k2.ID, map[string]any{"allowed_models": nil}, 200, nil)
	if got := e.chatStatus(k2.Secret); got != 200 {
		t.Fatalf("after clearing the allowlist: %d", got)
	}

	// bad input, in words a person can act on
	for _, c := range []struct {
		body    any
		message string
	}{
		{map[string]any{"name": "x", "spend_limit": map[string]string{"amount": "10,00"}}, "Spend limit must be a number like 10.00, with a point and not a comma."},
		{map[string]any{"name": "x", "spend_limit": map[string]string{"amount": "abc"}}, "Spend limit must be a number like 10.00."},
		{map[string]any{"name": "x", "spend_limit": map[string]string{"amount": "0"}}, "more than zero"},
		{map[string]any{"name": "x", "spend_limit": map[string]string{"amount": "1", "period": "week"}}, "total, day or month"},
		{map[string]any{"name": "x", "allowed_models": []string{"a b"}}, "white space"},
	} {
		resp, body := bob.do("POST", "api/keys", c.body)
		wantMessage(t, resp, body, 400, "invalid_request", c.message)
	}
}

// TestHolderStaysWithinOperatorsPolicy: a policy an admin set binds the
// account holder, who may narrow it but not widen it; clearing goes back
// to the admin's; the admin may do anything.
func TestHolderStaysWithinOperatorsPolicy(t *testing.T) {
	e := newEnv(t)
	id, secret := e.g.NewKey("team-b", "app")
	alice, bob := e.login("alice"), e.login("bob")
	alice.must("PATCH", "api/keys/"+id+"?account=team-b", map[string]any{"allowed_models": []string{"mock-*"},
		"spend_limit": map[string]string{"amount": "1.00", "period": "month"}}, 200, nil)
	k := bob.keys("")[id]
	if k.AdminPolicy == nil || k.AdminPolicy.SpendLimit == nil || k.AdminPolicy.SpendLimit.Amount != keystore.NanoPerUnit {
		t.Fatalf("operator's policy as bob sees it: %+v", k.AdminPolicy)
	}
	before := e.dbState()
	for _, body := range []map[string]any{
		{"spend_limit": map[string]string{"amount": "2.00", "period": "month"}},
		{"spend_limit": map[string]string{"amount": "0.10", "period": "day"}},
		{"allowed_models": []string{"*"}},
		{"allowed_models": []string{"mock-model", "gpt-4o"}},
	} {
		resp, b := bob.do("PATCH", "api/keys/"+id, body)
		wantMessage(t, resp, b, 403, "not_allowed", "The operator")
	}
	if e.dbState() != before {
		t.Fatal("refused widenings changed the database")
	}
	bob.must("PATCH", "api/keys/"+id, map[string]any{"spend_limit": map[string]string{"amount": "0.50", "period": "total"},
		"allowed_models": []string{"mock-model"}}, 200, nil)
	k = bob.keys("")[id]
	if k.SpendLimit == nil || k.SpendLimit.Amount != "0.50" || k.SpendLimit.Period != "total" || strings.Join(k.AllowedModels, ",") != "mock-model" {
		t.Fatalf("after narrowing: %+v %v", k.SpendLimit, k.AllowedModels)
	}
	if got := e.chatStatus(secret); got != 200 {
		t.Fatalf("call within the narrowed policy: %d", got)
	}
	bob.must("PATCH", "api/keys/"+id, map[string]any{"spend_limit": nil, "allowed_models": nil}, 200, nil)
	k = bob.keys("")[id]
	if k.SpendLimit == nil || k.SpendLimit.Amount != "1.00" || k.SpendLimit.Period != "month" || strings.Join(k.AllowedModels, ",") != "mock-*" {
		t.Fatalf("after clearing, the operator's policy: %+v %v", k.SpendLimit, k.AllowedModels)
	}
	// the admin widens at will
	alice.must("PATCH", "api/keys/"+id+"?account=team-b", map[string]any{"spend_limit": map[string]string{"amount": "50", "period": "day"},
		"allowed_models": nil}, 200, nil)
	if k := bob.keys("")[id]; k.SpendLimit.Amount != "50.00" || len(k.AllowedModels) != 0 {
		t.Fatalf("after the admin's change: %+v %v", k.SpendLimit, k.AllowedModels)
	}
	// a key of another account stays out of reach
	carolID, _ := e.g.NewKey("carol", "c")
	resp, b := bob.do("PATCH", "api/keys/"+carolID, map[string]any{"disabled": true})
	wantAPIError(t, resp, b, 404, "key_not_found")
}

// TestDisableKeyFromTheDashboard: a disabled key gets 401 key_disabled
// through the SDK and 200 again once enabled; a key an admin disabled
// stays disabled for its holder.
func TestDisableKeyFromTheDashboard(t *testing.T) {
	e := newEnv(t)
	bob, alice := e.login("bob"), e.login("alice")
	var k newKey
	bob.must("POST", "api/keys", map[string]string{"name": "app"}, 201, &k)
	if got := e.chatStatus(k.Secret); got != 200 {
		t.Fatalf("before: %d", got)
	}
	bob.must("PATCH", "api/keys/"+k.ID, map[string]any{"disabled": true}, 200, nil)
	_, err := gwtest.Chat(t.Context(), e.openAIClient(k.Secret))
	if apiErr := gwtest.APIErrorOf(t, err); apiErr.StatusCode != 401 || apiErr.Code != "key_disabled" || !strings.Contains(apiErr.Message, "disabled") {
		t.Fatalf("disabled key: %d %s %s", apiErr.StatusCode, apiErr.Code, apiErr.Message)
	}
	if got := bob.keys("")[k.ID]; got.Status != "disabled" || !got.Disabled {
		t.Fatalf("disabled key in the list: %+v", got)
	}
	resp, body := bob.do("POST", "api/keys/"+k.ID+"/rotate", map[string]string{})
	wantMessage(t, resp, body, 400, "invalid_request", "enable it before rotating it")
	bob.must("PATCH", "api/keys/"+k.ID, map[string]any{"disabled": false}, 200, nil)
	if got := e.chatStatus(k.Secret); got != 200 {
		t.Fatalf("after enabling: %d", got)
	}
	alice.must("PATCH", "api/keys/"+k.ID+"?account=team-b", map[string]any{"disabled": true}, 200, nil)
	resp, body = bob.do("PATCH", "api/keys/"+k.ID, map[string]any{"disabled": false})
	wantMessage(t, resp, body, 403, "not_allowed", "only an operator can enable it")
	if got := e.chatStatus(k.Secret); got != 401 {
		t.Fatalf("after the holder's refused enabling: %d", got)
	}
	alice.must("PATCH", "api/keys/"+k.ID+"?account=team-b", map[string]any{"disabled": false}, 200, nil)
	if got := e.chatStatus(k.Secret); got != 200 {
		t.Fatalf("after the admin enabled it: %d", got)
	}
	resp, body = bob.do("PATCH", "api/keys/"+k.ID, map[string]any{})
	wantAPIError(t, resp, body, 400, "invalid_request")
	// A body over the dashboard's 64 KB is "too large", not "not valid".
	resp, body = bob.do("POST", "api/keys", map[string]any{"name": strings.Repeat("A", 70000)})
	wantAPIError(t, resp, body, 413, "body_too_large")
}
