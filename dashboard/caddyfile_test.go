package dashboard

// Every error branch of ai_dashboard's UnmarshalCaddyfile, with the line
// Caddy reports, and the JSON configs Provision refuses before it looks
// for the store. What a correct Caddyfile adapts to is in
// e2e/testdata/caddyfile_adapt; api_test.go loads whole configs.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// argErr is the start of Caddy's message for a missing or extra argument;
// the token it names follows in quotes.
const argErr = "wrong argument count or unexpected line ending after "

// dashBlock is an ai_dashboard block holding lines; lines[i] is on line
// i+2 of the Testfile.
func dashBlock(lines ...string) string {
	return "ai_dashboard {\n\t" + strings.Join(lines, "\n\t") + "\n}"
}

func TestDashboardCaddyfileErrors(t *testing.T) {
	for _, c := range []struct {
		name, input, want string
		line              int
	}{
		{"argument after the directive", "ai_dashboard extra", argErr + "'extra'", 1},
		{"unknown option", dashBlock("admins alice", "theme dark"), `unrecognized ai_dashboard option "theme"`, 3},
		{"admins without a user", dashBlock("admins"), argErr + "'admins'", 2},
		{"account without ids", dashBlock("account"), "account needs a user id and an account id, got 0 arguments", 2},
		{"account without an account id", dashBlock("account bob"), "account needs a user id and an account id, got 1 arguments", 2},
		{"account with three ids", dashBlock("account bob team-b team-c"), "got 3 arguments", 2},
		{"user mapped twice", dashBlock("account bob team-b", "account carol carol-co", "account bob team-c"), `user "bob" is mapped to an account twice`, 4},
		{"user_id without a value", dashBlock("user_id"), argErr + "'user_id'", 2},
		{"user_id with two values", dashBlock("user_id {http.auth.user.id} bob"), argErr + "'bob'", 2},
		{"gateway_url without a value", dashBlock("gateway_url"), argErr + "'gateway_url'", 2},
		{"gateway_url with two values", dashBlock("gateway_url https://a.example/v1 https://b.example/v1"), argErr + "'https://b.example/v1'", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			var d Dashboard
			err := d.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input))
			if err == nil {
				t.Fatalf("parsed without error:\n%s", c.input)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q\ndoes not contain %q", err, c.want)
			}
			if at := fmt.Sprintf(", at Testfile:%d", c.line); !strings.HasSuffix(err.Error(), at) {
				t.Errorf("error %q\ndoes not end with %q", err, at)
			}
		})
	}
}

// TestDashboardProvisionErrors: what JSON can hold but Provision refuses,
// before the store is looked up (so an empty caddy.Context is enough).
func TestDashboardProvisionErrors(t *testing.T) {
	for _, c := range []struct{ name, json, want string }{
		{"empty admin", `{"admins":["alice",""]}`, "an admin user id must not be empty"},
		{"empty user in accounts", `{"accounts":{"":"team-b"}}`, "an account mapping has an empty user id"},
		{"invalid account id", `{"accounts":{"bob":"Team B"}}`, `account of user "bob": invalid argument: account id "Team B"`},
		{"relative gateway_url", `{"gateway_url":"/v1"}`, `gateway_url "/v1" must be an absolute http or https URL`},
		{"gateway_url without host", `{"gateway_url":"https:///v1"}`, `gateway_url "https:///v1" must be an absolute`},
		{"gateway_url not http", `{"gateway_url":"ftp://api.example.com/v1"}`, `gateway_url "ftp://api.example.com/v1" must be an absolute`},
		{"gateway_url unparsable", `{"gateway_url":"http://[::1"}`, `gateway_url "http://[::1" must be an absolute`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var d Dashboard
			if err := caddy.StrictUnmarshalJSON([]byte(c.json), &d); err != nil {
				t.Fatal(err)
			}
			err := d.Provision(caddy.Context{})
			// Caddy cleans up a module whose Provision failed
			_ = d.Cleanup()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%s: Provision error %v, want one containing %q", c.json, err, c.want)
			}
		})
	}
}
