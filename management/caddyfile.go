package management

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("ai_gateway", parseGlobalOption)
}

// parseGlobalOption sets up the ai_gateway app from the global options block:
//
//	{
//		ai_gateway {
//			database <path>|<postgres-url>
//			currency <code>
//			key_cache_size <n>
//			durable_billing on|off
//			ledger_retention <duration>
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{
		Name:  "ai_gateway",
		Value: caddyconfig.JSON(app, nil),
	}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens. Syntax:
//
//	ai_gateway {
//		database <path>|<postgres-url>
//		currency <code>
//		key_cache_size <n>
//		durable_billing on|off
//		ledger_retention <duration>
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "database":
			if !d.NextArg() {
				return d.ArgErr()
			}
			a.Database = d.Val()
		case "currency":
			if !d.NextArg() {
				return d.ArgErr()
			}
			a.Currency = d.Val()
		case "ledger_retention":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur < 0 {
				return d.Errf("ledger_retention must be a duration such as 2160h (0: keep forever), got %q", d.Val())
			}
			a.LedgerRetention = caddy.Duration(dur)
		case "key_cache_size":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n <= 0 {
				return d.Errf("key_cache_size must be a positive integer, got %q", d.Val())
			}
			a.KeyCacheSize = n
		case "durable_billing":
			if !d.NextArg() {
				return d.ArgErr()
			}
			var on bool
			switch d.Val() {
			case "on":
				on = true
			case "off":
			default:
				return d.Errf("durable_billing must be on or off, got %q", d.Val())
			}
			a.DurableBilling = &on
		default:
			return d.Errf("unrecognized ai_gateway option %q", d.Val())
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*App)(nil)
