package caddyauth

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	caddyhttpauth "github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/management"
)

func init() {
	caddy.RegisterModule(APIKeyProvider{})
}

// APIKeyProvider is the same Bearer key check as api_key_auth, offered as a
// provider of Caddy's own authentication handler
// (http.authentication.providers.api_key), so it composes with other
// providers. The authentication handler answers failures itself (401 with
// WWW-Authenticate: Bearer and Caddy's error handling, which handle_errors
// can shape); use api_key_auth for OpenAI-shaped error bodies.
//
// On success the user id is the key id, user metadata carries
// "account" and "key_name" ({http.auth.user.account},
// {http.auth.user.key_name}), the ai_gateway placeholders are set, and the
// client's Authorization header is removed.
type APIKeyProvider struct {
	checker keyChecker
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (APIKeyProvider) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.authentication.providers.api_key",
		New: func() caddy.Module { return new(APIKeyProvider) },
	}
}

// Provision finds the key store.
func (p *APIKeyProvider) Provision(ctx caddy.Context) error {
	p.logger = ctx.Logger()
	app, err := management.LoadApp(ctx)
	if err != nil {
		return err
	}
	p.checker = keyChecker{app: app}
	return nil
}

// Authenticate implements caddyhttpauth.Authenticator. A store failure is
// returned as an error, which the authentication handler treats as "not
// authenticated": the request is refused, never let through.
func (p *APIKeyProvider) Authenticate(w http.ResponseWriter, r *http.Request) (caddyhttpauth.User, bool, error) {
	id, fail := p.checker.check(r)
	if fail != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ai-gateway"`)
		if fail.Reason == reasonStore {
			return caddyhttpauth.User{}, false, fmt.Errorf("%s", fail.Message)
		}
		p.logger.Debug("api key rejected", zap.String("reason", fail.Reason))
		return caddyhttpauth.User{}, false, nil
	}
	admit(r, id)
	return caddyhttpauth.User{
		ID:       id.KeyID,
		Metadata: map[string]string{"account": id.AccountID, "key_name": id.KeyName},
	}, true, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*APIKeyProvider)(nil)
	_ caddyhttpauth.Authenticator = (*APIKeyProvider)(nil)
)
