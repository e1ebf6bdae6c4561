package dashboard_test

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type accountRow struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Balance     string `json:"balance"`
	BalanceNano int64  `json:"balance_nano"`
	Held        string `json:"held"`
	SpendMonth  string `json:"spend_month"`
	Keys        *int   `json:"keys"`
	Status      string `json:"status"`
	Disabled    bool   `json:"disabled"`
}

func (c *client) accounts(query string) map[string]accountRow {
	c.e.t.Helper()
	var list struct {
		Accounts []accountRow `json:"accounts"`
	}
	c.must("GET", "api/accounts"+query, nil, 200, &list)
	out := map[string]accountRow{}
	for _, a := range list.Accounts {
		out[a.ID] = a
	}
	return out
}

// TestAccountsTable: admins see every account with balance, holds, spend
// this month, live keys and status; search and filter it; disable and
// enable an account; top up and correct (a correction needs a note);
// amounts in error are explained in words.
func TestAccountsTable(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.login("alice"), e.login("bob")
	_, secret := e.g.NewKey("carol", "app")
	e.g.NewKey("carol", "second")
	if got := e.chatStatus(secret); got != 200 {
		t.Fatal(got)
	}
	all := alice.accounts("")
	c := all["carol"]
	if len(all) != 2 || c.Balance != "9.9999952" || c.SpendMonth != "0.0000048" || c.Keys == nil || *c.Keys != 2 ||
		c.Status != "active" || c.Held != "0.00" {
		t.Fatalf("accounts %+v", all)
	}
	if got := alice.accounts("?q=CAR"); len(got) != 1 || got["carol"].ID == "" {
		t.Fatalf("search CAR: %+v", got)
	}
	if got := alice.accounts("?q=" + url.QueryEscape("team")); len(got) != 1 || got["team-b"].ID == "" {
		t.Fatalf("search team: %+v", got)
	}
	alice.must("PATCH", "api/accounts/carol", map[string]any{"disabled": true}, 200, nil)
	if got := e.chatStatus(secret); got != 403 {
		t.Fatalf("a disabled account's key: %d, want 403", got)
	}
	if got := alice.accounts("?status=disabled"); len(got) != 1 || got["carol"].Status != "disabled" {
		t.Fatalf("disabled accounts: %+v", got)
	}
	alice.must("PATCH", "api/accounts/carol", map[string]any{"disabled": false, "name": "Carol & Co"}, 200, nil)
	if got := e.chatStatus(secret); got != 200 {
		t.Fatalf("after enabling: %d", got)
	}
	if got := alice.accounts("?status=active")["carol"]; got.Name != "Carol & Co" {
		t.Fatalf("renamed: %+v", got)
	}
	resp, body := alice.do("PATCH", "api/accounts/nope", map[string]any{"disabled": true})
	wantAPIError(t, resp, body, 404, "account_not_found")
	resp, body = alice.do("GET", "api/accounts?status=odd", nil)
	wantAPIError(t, resp, body, 400, "invalid_request")

	// balance: a correction needs a note; bad amounts are explained
	resp, body = alice.do("POST", "api/balance?account=carol", map[string]string{"amount": "-1.00"})
	wantMessage(t, resp, body, 400, "note_required", "needs a note")
	alice.must("POST", "api/balance?account=carol", map[string]string{"amount": "-1.00", "note": "refund"}, 200, nil)
	for amount, msg := range map[string]string{
		"10,00":        "Amount must be a number like 10.00, with a point and not a comma.",
		"abc":          "Amount must be a number like 10.00.",
		"0.0000000001": "at most nine digits after the point",
		"0":            "must not be zero",
	} {
		resp, body = alice.do("POST", "api/balance?account=carol", map[string]string{"amount": amount})
		wantMessage(t, resp, body, 400, "invalid_request", msg)
	}
	if got := alice.accounts("")["carol"]; got.Balance != "8.9999904" {
		t.Fatalf("balance after the correction: %s", got.Balance)
	}

	// not for account holders
	before := e.dbState()
	resp, body = bob.do("GET", "api/accounts", nil)
	wantAPIError(t, resp, body, 403, "admin_only")
	resp, body = bob.do("PATCH", "api/accounts/team-b", map[string]any{"disabled": false})
	wantAPIError(t, resp, body, 403, "admin_only")
	resp, body = bob.do("PATCH", "api/accounts/carol", map[string]any{"disabled": true})
	wantAPIError(t, resp, body, 403, "admin_only")
	if e.dbState() != before {
		t.Fatal("refused account changes changed the database")
	}
}

type auditEntry struct {
	ID      int64           `json:"id"`
	Time    string          `json:"time"`
	Actor   string          `json:"actor"`
	Account string          `json:"account"`
	Target  string          `json:"target"`
	Action  string          `json:"action"`
	Detail  json.RawMessage `json:"detail"`
}

func (c *client) audit(query string) ([]auditEntry, *string) {
	c.e.t.Helper()
	var page struct {
		Entries    []auditEntry `json:"entries"`
		NextCursor *string      `json:"next_cursor"`
	}
	c.must("GET", "api/audit"+query, nil, 200, &page)
	return page.Entries, page.NextCursor
}

// TestAuditTrail: changes through the dashboard are recorded as
// dashboard:<user>, beside those of the admin API; admins see and filter
// every entry, an account holder only their account's, with operators'
// changes shown as "operator"; no entry and no database file holds a key.
func TestAuditTrail(t *testing.T) {
	e := newEnv(t)
	alice, bob, carol := e.login("alice"), e.login("bob"), e.login("carol")
	var k newKey
	bob.must("POST", "api/keys", map[string]string{"name": "app"}, 201, &k)
	bob.must("PATCH", "api/keys/"+k.ID, map[string]string{"name": "renamed"}, 200, nil)
	bob.must("PATCH", "api/keys/"+k.ID, map[string]any{"disabled": true}, 200, nil)
	bob.must("PATCH", "api/keys/"+k.ID, map[string]any{"disabled": false}, 200, nil)
	alice.must("PATCH", "api/keys/"+k.ID+"?account=team-b", map[string]any{"spend_limit": map[string]string{"amount": "3", "period": "month"}}, 200, nil)
	var rot struct {
		New newKey `json:"new"`
	}
	bob.must("POST", "api/keys/"+k.ID+"/rotate", map[string]string{"grace": "1h"}, 200, &rot)
	bob.must("DELETE", "api/keys/"+rot.New.ID, nil, 200, nil)
	alice.must("POST", "api/balance?account=team-b", map[string]string{"amount": "5", "note": "invoice 12"}, 200, nil)
	var ck newKey
	carol.must("POST", "api/keys", map[string]string{"name": "carol-app"}, 201, &ck)

	all, _ := alice.audit("?limit=500")
	var teamB []string
	for _, en := range all {
		if en.Account == "team-b" {
			teamB = append(teamB, en.Action+" "+en.Actor)
		}
	}
	want := []string{"balance.topup dashboard:alice", "key.delete dashboard:bob", "key.rotate dashboard:bob",
		"key.update dashboard:alice", "key.enable dashboard:bob", "key.disable dashboard:bob", "key.rename dashboard:bob",
		"key.create dashboard:bob", "balance.topup admin API 127.0.0.1", "account.create admin API 127.0.0.1"}
	if len(teamB) != len(want) {
		t.Fatalf("team-b entries %q", teamB)
	}
	for i := range want {
		if !strings.HasPrefix(teamB[i], want[i]) {
			t.Fatalf("team-b entries\n got %q\nwant %q", teamB, want)
		}
	}
	if en, _ := alice.audit("?account=team-b&action=key.update"); len(en) != 1 ||
		!strings.Contains(string(en[0].Detail), `"set_by":"operator"`) || en[0].Target != k.ID {
		t.Fatalf("key.update entry %+v", en)
	}
	if en, _ := alice.audit("?actor=" + url.QueryEscape("dashboard:carol")); len(en) != 1 || en[0].Target != ck.ID {
		t.Fatalf("carol's entries %+v", en)
	}
	if en, _ := alice.audit("?action=balance&account=team-b"); len(en) != 2 {
		t.Fatalf("balance entries of team-b %+v", en)
	}
	// paging by cursor
	page, next := alice.audit("?limit=3")
	if len(page) != 3 || next == nil {
		t.Fatalf("first page %d entries, next %v", len(page), next)
	}
	rest, _ := alice.audit("?limit=500&cursor=" + *next)
	if len(rest) != len(all)-3 || rest[0].ID >= page[2].ID {
		t.Fatalf("second page %d entries, want %d", len(rest), len(all)-3)
	}

	// bob: his account's entries only, operators as "operator"
	mine, _ := bob.audit("")
	if len(mine) != len(want) {
		t.Fatalf("bob sees %d entries, want %d", len(mine), len(want))
	}
	for _, en := range mine {
		if en.Account != "team-b" {
			t.Fatalf("bob sees an entry of %s", en.Account)
		}
		if en.Actor != "dashboard:bob" && en.Actor != "operator" {
			t.Fatalf("bob sees the actor %q", en.Actor)
		}
	}
	if en, _ := bob.audit("?account=team-b&action=key.rotate"); len(en) != 1 {
		t.Fatalf("bob's rotations %+v", en)
	}
	resp, body := bob.do("GET", "api/audit?account=carol", nil)
	wantAPIError(t, resp, body, 403, "admin_only")
	// An admin's changes are "operator" to bob, and filtering by the
	// admin's name selects nothing, as an unknown name does; prefixes,
	// which would spell out an admin's name letter by letter, are refused.
	operatorEntries := 0
	for _, en := range mine {
		if en.Actor == "operator" {
			operatorEntries++
		}
	}
	if operatorEntries == 0 {
		t.Fatal("no operator change on team-b: the admin-name filter below would prove nothing")
	}
	for _, who := range []string{"dashboard:alice", "dashboard:nobody"} {
		if en, _ := bob.audit("?actor=" + url.QueryEscape(who)); len(en) != 0 {
			t.Fatalf("bob filtering by %s sees %+v", who, en)
		}
	}
	// A NUL byte in an id or filter is a 400 on every store (PostgreSQL
	// could not even look it up: it was a 500 there).
	resp, body = bob.do("GET", "api/audit?actor=dashboard:alice%00", nil)
	wantAPIError(t, resp, body, 400, "invalid_request")
	for _, q := range []string{"dashboard:a*", "dashboard:*", "operator", "dashboard:", "cli*"} {
		resp, body = bob.do("GET", "api/audit?actor="+url.QueryEscape(q), nil)
		wantAPIError(t, resp, body, 400, "invalid_request")
	}
	resp, body = bob.do("GET", "api/audit?cursor=x", nil)
	wantAPIError(t, resp, body, 400, "invalid_request")

	// no key in the audit log, nor anywhere in the database files
	secrets := []string{k.Secret, rot.New.Secret, ck.Secret}
	for _, en := range all {
		for _, s := range secrets {
			if strings.Contains(string(en.Detail), s) || strings.Contains(string(en.Detail), s[len(s)-8:]) {
				t.Fatalf("audit entry %s holds a key", en.Detail)
			}
		}
	}
	files, _ := filepath.Glob(e.g.DBPath + "*")
	if len(files) == 0 {
		t.Fatal("no database files")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Fatalf("%s holds a plaintext key", filepath.Base(f))
			}
		}
	}
}
