package caddyproxy

import (
	"errors"
	"fmt"
	"net/http"
	"path"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(MatchModel{})
}

// MatchModel matches requests by the "model" member of their JSON body,
// against glob patterns in path.Match syntax ("gpt-4o*", "o[13]*").
//
// It matches the model the provider will see: when balance_guard mapped an
// alias to a provider's model, the provider's name. The body is read once
// per request (bounded by 64 MiB and by request_body max_size), put back for
// the handlers after it and for reverse_proxy (use request_buffers in
// reverse_proxy to replay it on retries), and shared with balance_guard and
// other ai_model matchers. Requests without a JSON body (GET, multipart
// uploads) and bodies without a model do not match. A body that is not JSON
// is an error, not a non-match: 400 with code invalid_json (413
// request_too_large when over the limit), answered in the OpenAI error shape
// when api_key_auth is in front of the matcher. It sets
// {ai_gateway.model} when no handler did before.
type MatchModel []string

// CaddyModule returns the Caddy module information.
func (MatchModel) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.matchers.ai_model",
		New: func() caddy.Module { return new(MatchModel) },
	}
}

// UnmarshalCaddyfile sets up the matcher from Caddyfile tokens. Syntax:
//
//	ai_model <patterns...>
//
// Several ai_model lines in one named matcher add up.
func (m *MatchModel) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	for d.Next() {
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.ArgErr()
		}
		*m = append(*m, args...)
		if d.NextBlock(0) {
			return d.Err("ai_model takes no block")
		}
	}
	return nil
}

// Provision validates the patterns. Its errors do not name the module:
// Caddy prefixes them with "provision http.matchers.ai_model: ".
func (m MatchModel) Provision(caddy.Context) error {
	if len(m) == 0 {
		return errors.New("at least one model pattern is required")
	}
	for _, p := range m {
		if p == "" {
			return errors.New("empty model pattern")
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("pattern %q: %w", p, err)
		}
	}
	return nil
}

// MatchWithError reports whether the request's model matches a pattern. Its
// error is a caddyhttp.HandlerError wrapping a *RequestError.
func (m MatchModel) MatchWithError(r *http.Request) (bool, error) {
	b, ok, rerr := ReadBody(r, 0, false)
	if rerr != nil {
		return false, caddyhttp.Error(rerr.Status, rerr)
	}
	if !ok || b.Model == "" {
		return false, nil
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		if _, set := repl.Get("ai_gateway.model"); !set {
			repl.Set("ai_gateway.model", b.Info.Model)
		}
	}
	for _, p := range m {
		if ok, _ := path.Match(p, b.Model); ok {
			return true, nil
		}
	}
	return false, nil
}

// Match is MatchWithError without the error, for callers of the old
// interface; a body that cannot be read does not match.
func (m MatchModel) Match(r *http.Request) bool {
	ok, _ := m.MatchWithError(r)
	return ok
}

// Interface guards
var (
	_ caddy.Provisioner                 = MatchModel{}
	_ caddyhttp.RequestMatcherWithError = MatchModel{}
	_ caddyfile.Unmarshaler             = (*MatchModel)(nil)
)
