package caddyauth

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("api_key_auth", parseAPIKeyAuth)
	httpcaddyfile.RegisterDirectiveOrder("api_key_auth", httpcaddyfile.After, "basic_auth")
}

func parseAPIKeyAuth(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(APIKeyAuth)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	api_key_auth [<matcher>] {
//		keys_url <url>
//	}
//
// The block is optional. keys_url is the page where users manage their keys;
// it is named in 401 messages.
func (h *APIKeyAuth) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "keys_url":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.KeysURL = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized api_key_auth option %q", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*APIKeyAuth)(nil)
)
