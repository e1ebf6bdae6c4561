// Package e2e holds the end-to-end tests of caddy-ai-gateway: Caddy
// in-process (or the built binary), real SQLite files, the official OpenAI Go
// SDK as the client and a mock provider on loopback. Their helpers live in
// internal/gwtest.
package e2e

import _ "github.com/metask/caddy-ai-gateway" // every module of the gateway
