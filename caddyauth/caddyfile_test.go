package caddyauth

// Every error branch of api_key_auth's UnmarshalCaddyfile, with the line
// Caddy reports. What a correct Caddyfile adapts to is in
// e2e/testdata/caddyfile_adapt; the api_key provider has no Caddyfile
// syntax (it is tested from JSON in e2e/adapt_test.go).

import (
	"fmt"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// argErr is the start of Caddy's message for a missing or extra argument;
// the token it names follows in quotes.
const argErr = "wrong argument count or unexpected line ending after "

func TestAPIKeyAuthCaddyfile(t *testing.T) {
	for _, c := range []struct {
		input, keysURL string
	}{
		{"api_key_auth", ""},
		{"api_key_auth {\n}", ""},
		{"api_key_auth {\n\tkeys_url https://dashboard.example.com/keys\n}", "https://dashboard.example.com/keys"},
		{"api_key_auth {\n\tkeys_url https://a.example/keys\n\tkeys_url https://b.example/keys\n}", "https://b.example/keys"},
	} {
		var h APIKeyAuth
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input)); err != nil {
			t.Errorf("%q: %v", c.input, err)
		} else if h.KeysURL != c.keysURL {
			t.Errorf("%q: keys_url %q, want %q", c.input, h.KeysURL, c.keysURL)
		}
	}
}

func TestAPIKeyAuthCaddyfileErrors(t *testing.T) {
	for _, c := range []struct {
		name, input, want string
		line              int
	}{
		{"argument after the directive", "api_key_auth extra", argErr + "'extra'", 1},
		{"argument before the block", "api_key_auth extra {\n\tkeys_url https://x.example\n}", argErr + "'extra'", 1},
		{"keys_url without a value", "api_key_auth {\n\tkeys_url\n}", argErr + "'keys_url'", 2},
		{"keys_url with two values", "api_key_auth {\n\tkeys_url https://a.example https://b.example\n}", argErr + "'https://b.example'", 2},
		{"unknown option", "api_key_auth {\n\tkeys_url https://a.example\n\trealm gateway\n}", `unrecognized api_key_auth option "realm"`, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			var h APIKeyAuth
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input))
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
