// Package caddyproxy is everything on the way to the provider and back:
//
//   - the balance_guard handler (http.handlers.balance_guard): model
//     allowlists, prices and aliases, admission against the balance and the
//     key's spend limit, the hold, the shaping of the request body, the
//     metering of the response as it passes, and the settlement that writes
//     the ledger row (guard.go, prices.go, cost.go, meter.go, billing.go);
//   - the model catalog it answers GET /v1/models with (models.go);
//   - the ai_model request matcher (http.matchers.ai_model, matcher.go) and
//     the per-request cache of the JSON body they share (body.go).
//
// The OpenAI wire format itself (parsing requests, usage and event streams)
// is in the subpackage openaiwire, which uses the standard library alone.
// Who is calling comes from caddyauth ([caddyauth.IdentityFrom]); the key
// store from the management package's ai_gateway app.
package caddyproxy
