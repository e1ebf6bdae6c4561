package dashboard

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("ai_dashboard", parseCaddyfile)
	// After every authenticator (basic_auth, forward_auth) and the routing
	// blocks (handle, route), with the handlers that respond.
	httpcaddyfile.RegisterDirectiveOrder("ai_dashboard", httpcaddyfile.Before, "respond")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	d := new(Dashboard)
	err := d.UnmarshalCaddyfile(h.Dispenser)
	return d, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	ai_dashboard [<matcher>] {
//		admins <user> [<user>...]
//		account <user> <account-id>
//		user_id <placeholder>
//		gateway_url <url>
//	}
//
// admins (repeatable) names the users who may switch between accounts,
// create accounts and adjust balances. account (repeatable) maps a user to
// an account; users without a mapping use the account whose id is their
// user id. user_id is where the user id comes from (default
// {http.auth.user.id}). gateway_url is the gateway's OpenAI base URL, shown
// with new keys. The block is optional.
func (d *Dashboard) UnmarshalCaddyfile(disp *caddyfile.Dispenser) error {
	disp.Next() // consume directive name
	if disp.NextArg() {
		return disp.ArgErr()
	}
	for disp.NextBlock(0) {
		switch disp.Val() {
		case "admins":
			args := disp.RemainingArgs()
			if len(args) == 0 {
				return disp.ArgErr()
			}
			d.Admins = append(d.Admins, args...)
		case "account":
			args := disp.RemainingArgs()
			if len(args) != 2 {
				return disp.Errf("account needs a user id and an account id, got %d arguments", len(args))
			}
			if d.Accounts == nil {
				d.Accounts = map[string]string{}
			}
			if _, dup := d.Accounts[args[0]]; dup {
				return disp.Errf("user %q is mapped to an account twice", args[0])
			}
			d.Accounts[args[0]] = args[1]
		case "user_id":
			if !disp.NextArg() {
				return disp.ArgErr()
			}
			d.UserID = disp.Val()
			if disp.NextArg() {
				return disp.ArgErr()
			}
		case "gateway_url":
			if !disp.NextArg() {
				return disp.ArgErr()
			}
			d.GatewayURL = disp.Val()
			if disp.NextArg() {
				return disp.ArgErr()
			}
		default:
			return disp.Errf("unrecognized ai_dashboard option %q", disp.Val())
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Dashboard)(nil)
