package caddyproxy

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("balance_guard", parseBalanceGuard)
	httpcaddyfile.RegisterDirectiveOrder("balance_guard", httpcaddyfile.After, "forward_auth")
}

func parseBalanceGuard(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(BalanceGuard)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	balance_guard [<matcher>] {
//		price <model-glob> input <amount> output <amount> [cached <amount>]
//		unknown_model reject | price <input> <output>
//		default_max_tokens <n>
//		max_request_body <size>
//		alias <public-name> <provider-model>
//		models_endpoint gateway | upstream
//		endpoint <METHOD> <path> price <amount> | free
//	}
//
// Amounts are decimals of the currency per 1M tokens, except an endpoint's
// price, which is per request. endpoint, repeatable, allows a request
// method and path the guard does not know (everything it does not know is
// refused with 403 endpoint_not_allowed): the path is the whole canonical
// request path as the guard sees it (/v1/images/generations), matched
// exactly; a priced request is held and charged its price when the
// provider answers 2xx, a free one is passed on without a charge. Sizes take units like
// request_body's max_size (10MB, 64MiB). alias may be repeated; the body
// going upstream names the provider's model, everything the gateway records
// names the public one. The block is optional.
func (g *BalanceGuard) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "price":
			p := Price{}
			if !d.NextArg() {
				return d.ArgErr()
			}
			p.Model = d.Val()
			for d.NextArg() {
				field := d.Val()
				if !d.NextArg() {
					return d.Errf("price %s: %s needs an amount", p.Model, field)
				}
				switch field {
				case "input":
					p.Input = d.Val()
				case "output":
					p.Output = d.Val()
				case "cached":
					p.Cached = d.Val()
				default:
					return d.Errf("price %s: unknown field %q (want input, output or cached)", p.Model, field)
				}
			}
			if p.Input == "" || p.Output == "" {
				return d.Errf("price %s: both input and output prices are required", p.Model)
			}
			if err := p.provision(); err != nil {
				return d.Err(err.Error())
			}
			g.Prices = append(g.Prices, p)
		case "unknown_model":
			if !d.NextArg() {
				return d.ArgErr()
			}
			u := &UnknownModel{Action: d.Val()}
			if u.Action == "price" {
				if !d.NextArg() {
					return d.ArgErr()
				}
				u.Input = d.Val()
				if !d.NextArg() {
					return d.ArgErr()
				}
				u.Output = d.Val()
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			if err := u.provision(); err != nil {
				return d.Err(err.Error())
			}
			g.UnknownModel = u
		case "default_max_tokens":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 0 {
				return d.Errf("default_max_tokens must be a non-negative integer, got %q", d.Val())
			}
			g.DefaultMaxTokens = n
			if d.NextArg() {
				return d.ArgErr()
			}
		case "max_request_body":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(d.Val())
			if err != nil || n == 0 || n > 1<<40 {
				return d.Errf("max_request_body must be a size such as 10MB, got %q", d.Val())
			}
			g.MaxRequestBody = int64(n)
			if d.NextArg() {
				return d.ArgErr()
			}
		case "alias":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("alias takes a public model name and the provider's model name, got %d arguments", len(args))
			}
			if err := checkAlias(args[0], args[1]); err != nil {
				return d.Err(err.Error())
			}
			if g.Aliases == nil {
				g.Aliases = map[string]string{}
			}
			if _, dup := g.Aliases[args[0]]; dup {
				return d.Errf("alias %s is defined twice", args[0])
			}
			g.Aliases[args[0]] = args[1]
		case "models_endpoint":
			if !d.NextArg() {
				return d.ArgErr()
			}
			g.ModelsEndpoint = d.Val()
			if g.ModelsEndpoint != modelsFromGateway && g.ModelsEndpoint != modelsFromUpstream {
				return d.Errf("models_endpoint must be gateway or upstream, got %q", d.Val())
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "endpoint":
			e, err := parseEndpoint(d)
			if err != nil {
				return err
			}
			g.Endpoints = append(g.Endpoints, e)
		default:
			return d.Errf("unrecognized balance_guard option %q", d.Val())
		}
	}
	return nil
}

// parseEndpoint reads "endpoint <METHOD> <path> price <amount>" or
// "endpoint <METHOD> <path> free".
func parseEndpoint(d *caddyfile.Dispenser) (Endpoint, error) {
	args := d.RemainingArgs()
	var e Endpoint
	switch {
	case len(args) == 3 && args[2] == "free":
		e = Endpoint{Method: args[0], Path: args[1], Free: true}
	case len(args) == 4 && args[2] == "price":
		e = Endpoint{Method: args[0], Path: args[1], Price: args[3]}
	default:
		return e, d.Errf("endpoint takes a method, a path, then price <amount> or free, got %q", strings.Join(args, " "))
	}
	if err := e.provision(); err != nil {
		return e, d.Err(err.Error())
	}
	return e, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*BalanceGuard)(nil)
