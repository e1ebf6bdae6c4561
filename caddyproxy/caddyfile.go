package caddyproxy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/metask/caddy-ai-gateway/keystore"
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
//		price <model-glob> image <size> [<quality>] <amount>
//		price <model-glob> characters <amount>
//		price <model-glob> request <amount>
//		unknown_model reject | price <input> <output>
//		default_max_tokens <n>
//		max_request_body <size>
//		alias <public-name> <provider-model>
//		models_endpoint gateway | upstream
//		endpoint <METHOD> <path> price <amount> | free
//		rate_limit key | account <kind> <n> [<kind> <n> ...]
//		model_rate_limit <model-glob> <kind> <n> [<kind> <n> ...]
//	}
//
// Amounts are decimals of the currency per 1M tokens, except an image price
// (per image of that size and quality; a quality of * or none is any),
// characters (per 1M input characters of audio/speech), request and an
// endpoint's price (per request). price lines of the same model add up to
// one price (image lines, and token prices beside media prices); a field
// given twice for a model is an error. endpoint, repeatable, allows a request
// method and path the guard does not know (everything it does not know is
// refused with 403 endpoint_not_allowed): the path is the whole canonical
// request path as the guard sees it (/v1/images/generations), matched
// exactly; a priced request is held and charged its price when the
// provider answers 2xx, a free one is passed on without a charge. Sizes take units like
// request_body's max_size (10MB, 64MiB). alias may be repeated; the body
// going upstream names the provider's model, everything the gateway records
// names the public one. rate_limit sets the default rate limits of every key
// lineage (key) or account (account) for the kinds their own limits leave
// unset; model_rate_limit a limit shared by all requests for the provider
// models the glob matches (repeatable, first match wins). A kind is rpm,
// tpm, concurrency, rpd or tpd, and n a positive integer. The block is
// optional.
func (g *BalanceGuard) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "price":
			if err := g.parsePriceLine(d); err != nil {
				return err
			}
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
		case "rate_limit":
			if !d.NextArg() {
				return d.ArgErr()
			}
			var dst **keystore.RateLimits
			switch d.Val() {
			case "key":
				dst = &g.KeyRateLimits
			case "account":
				dst = &g.AccountRateLimits
			default:
				return d.Errf("rate_limit takes key or account, then limits such as rpm 60; got %q", d.Val())
			}
			if *dst != nil {
				return d.Errf("rate_limit %s is given twice", d.Val())
			}
			l, err := parseRateFields(d, "rate_limit "+d.Val())
			if err != nil {
				return err
			}
			*dst = &l
		case "model_rate_limit":
			if !d.NextArg() {
				return d.ArgErr()
			}
			m := ModelRateLimit{Model: d.Val()}
			l, err := parseRateFields(d, "model_rate_limit "+m.Model)
			if err != nil {
				return err
			}
			m.RateLimits = l
			g.ModelRateLimits = append(g.ModelRateLimits, m)
		default:
			return d.Errf("unrecognized balance_guard option %q", d.Val())
		}
	}
	return nil
}

// parsePriceLine reads one price line and adds it to the price of its
// model, which it creates at its first line.
func (g *BalanceGuard) parsePriceLine(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	line := Price{Model: d.Val()}
	for d.NextArg() {
		field := d.Val()
		if !d.NextArg() {
			return d.Errf("price %s: %s needs an amount", line.Model, field)
		}
		switch field {
		case "input":
			line.Input = d.Val()
		case "output":
			line.Output = d.Val()
		case "cached":
			line.Cached = d.Val()
		case "characters":
			line.Characters = d.Val()
		case "request":
			line.Request = d.Val()
		case "image":
			ip := ImagePrice{Size: d.Val()}
			if !d.NextArg() {
				return d.Errf("price %s: image %s needs an amount", line.Model, ip.Size)
			}
			ip.Price = d.Val()
			if _, err := keystore.ParseAmount(ip.Price); err != nil {
				// not an amount: a quality, then the amount
				ip.Quality = ip.Price
				if !d.NextArg() {
					return d.Errf("price %s: image %s %s needs an amount", line.Model, ip.Size, ip.Quality)
				}
				ip.Price = d.Val()
			}
			line.Images = append(line.Images, ip)
		default:
			return d.Errf("price %s: unknown field %q (want input, output, cached, image, characters or request)", line.Model, field)
		}
	}
	if (line.Input == "" || line.Output == "") && (line.Input != "" || line.Output != "" || line.Cached != "" || !line.hasMedia()) {
		return d.Errf("price %s: both input and output prices are required", line.Model)
	}
	if err := line.provision(); err != nil {
		return d.Err(err.Error())
	}
	for i := range g.Prices {
		if p := &g.Prices[i]; p.Model == line.Model {
			if err := p.merge(line); err != nil {
				return d.Err(err.Error())
			}
			return nil
		}
	}
	g.Prices = append(g.Prices, line)
	return nil
}

// merge adds the fields of another price line of the same model to p.
func (p *Price) merge(line Price) error {
	twice := func(field string) error {
		return fmt.Errorf("price %s: %s is priced twice", p.Model, field)
	}
	if line.Input != "" {
		if p.Input != "" {
			return twice("input")
		}
		p.Input, p.Output, p.Cached = line.Input, line.Output, line.Cached
	}
	if line.Characters != "" {
		if p.Characters != "" {
			return twice("characters")
		}
		p.Characters = line.Characters
	}
	if line.Request != "" {
		if p.Request != "" {
			return twice("request")
		}
		p.Request = line.Request
	}
	p.Images = append(p.Images, line.Images...)
	return p.provision()
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

// parseRateFields reads the "<kind> <n>" pairs of a rate limit line; at
// least one, each kind once.
func parseRateFields(d *caddyfile.Dispenser, line string) (keystore.RateLimits, error) {
	var l keystore.RateLimits
	args := d.RemainingArgs()
	if len(args) == 0 || len(args)%2 != 0 {
		return l, d.Errf("%s takes pairs of a kind (rpm, tpm, concurrency, rpd, tpd) and a limit, got %q", line, strings.Join(args, " "))
	}
	for i := 0; i < len(args); i += 2 {
		var dst *int64
		switch args[i] {
		case keystore.RateRPM:
			dst = &l.RPM
		case keystore.RateTPM:
			dst = &l.TPM
		case keystore.RateConcurrency:
			dst = &l.Concurrency
		case keystore.RateRPD:
			dst = &l.RPD
		case keystore.RateTPD:
			dst = &l.TPD
		default:
			return l, d.Errf("%s: unknown kind %q (want rpm, tpm, concurrency, rpd or tpd)", line, args[i])
		}
		if *dst != 0 {
			return l, d.Errf("%s: %s is given twice", line, args[i])
		}
		n, err := strconv.ParseInt(args[i+1], 10, 64)
		if err != nil || n <= 0 {
			return l, d.Errf("%s: %s must be a positive integer, got %q", line, args[i], args[i+1])
		}
		*dst = n
	}
	if err := l.Validate(); err != nil {
		return l, d.Errf("%s: %v", line, err)
	}
	return l, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*BalanceGuard)(nil)
