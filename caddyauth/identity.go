package caddyauth

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// IdentityVar is the name of the Caddy request variable (see
// caddyhttp.GetVar) under which api_key_auth and the api_key provider leave
// the caller's keystore.Identity for the handlers after them.
const IdentityVar = "ai_gateway.identity"

// IdentityFrom returns the identity api_key_auth or the api_key provider
// left on the request; ok is false when no authenticator ran before.
func IdentityFrom(r *http.Request) (keystore.Identity, bool) {
	id, ok := caddyhttp.GetVar(r.Context(), IdentityVar).(keystore.Identity)
	return id, ok
}

// admit records a successful authentication on the request: the identity for
// later handlers, the identity placeholders, extra access-log fields, and
// the removal of the client's Authorization header so the gateway key can
// never travel upstream, even if the operator forgets header_up.
func admit(r *http.Request, id keystore.Identity) {
	caddyhttp.SetVar(r.Context(), IdentityVar, id)
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		// One lazy provider rather than five map entries under the
		// replacer's lock: most configs read none of them.
		repl.Map(func(key string) (any, bool) {
			switch key {
			case "http.auth.user.id", "ai_gateway.key.id":
				return id.KeyID, true
			case "http.auth.user.account", "ai_gateway.account":
				return id.AccountID, true
			case "ai_gateway.key.name":
				return id.KeyName, true
			}
			return nil, false
		})
	}
	if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Set(zap.String("ai_gateway_account", id.AccountID))
		extra.Set(zap.String("ai_gateway_key_id", id.KeyID))
	}
	r.Header.Del("Authorization")
}
