package aigateway

// Importing the root package registers every module of caddy-ai-gateway, so
// `xcaddy build --with github.com/metask/caddy-ai-gateway` is all it takes.
import (
	_ "github.com/metask/caddy-ai-gateway/caddyauth"
	_ "github.com/metask/caddy-ai-gateway/caddyproxy"
	_ "github.com/metask/caddy-ai-gateway/dashboard"
)
