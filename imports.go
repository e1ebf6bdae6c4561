// Package aigateway registers every module of caddy-ai-gateway, so that
// `xcaddy build --with github.com/metask/caddy-ai-gateway` is all it takes.
// It holds no code of its own; see docs/development.md for where things are:
//
//   - caddyauth: who is calling (api_key_auth, the api_key provider);
//   - caddyproxy: the way to the provider and back (balance_guard, ai_model),
//     with the OpenAI wire format in caddyproxy/openaiwire;
//   - keystore: accounts, keys, balances and the ledger;
//   - management: the ai_gateway app, the admin API and the CLI;
//   - dashboard: the ai_dashboard handler.
package aigateway

import (
	_ "github.com/metask/caddy-ai-gateway/caddyauth"
	_ "github.com/metask/caddy-ai-gateway/caddyproxy"
	_ "github.com/metask/caddy-ai-gateway/dashboard"
	_ "github.com/metask/caddy-ai-gateway/management"
)
