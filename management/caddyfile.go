package management

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/metask/caddy-ai-gateway/keystore"
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
//			lease <amount>
//			lease_ttl <duration>
//			revocation_staleness <duration>
//			instance_id <name>
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
//		lease <amount>
//		lease_ttl <duration>
//		revocation_staleness <duration>
//		instance_id <name>
//	}
//
// lease, lease_ttl, revocation_staleness and instance_id apply to a
// PostgreSQL database shared by several instances (see App).
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
		case "lease":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if n, err := keystore.ParseAmount(d.Val()); err != nil || n < 0 {
				return d.Errf("lease must be an amount such as 1.00 (0: exact mode), got %q", d.Val())
			}
			a.Lease = d.Val()
		case "lease_ttl", "revocation_staleness":
			name := d.Val()
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("%s must be a positive duration such as 30s, got %q", name, d.Val())
			}
			if name == "lease_ttl" {
				a.LeaseTTL = caddy.Duration(dur)
			} else {
				a.RevocationStaleness = caddy.Duration(dur)
			}
		case "instance_id":
			if !d.NextArg() {
				return d.ArgErr()
			}
			a.InstanceID = d.Val()
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
