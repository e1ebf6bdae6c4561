// Package caddyproxy is what goes to the provider and what comes back: the
// ai_model request matcher, and the parsing and shaping of requests and
// responses of OpenAI-compatible APIs for the gateway's billing handler. It
// never starts a server or touches the network; only the matcher and the
// request body cache (matcher.go, body.go) use Caddy, the parsers use the
// standard library alone.
//
// What it offers:
//
//   - [MatchModel], the http.matchers.ai_model module, and [ReadBody] /
//     [SetBody], which read a request's JSON body once per request and share
//     it between the matcher and balance_guard.
//
//   - [ErrorJSON], the OpenAI error shape every gateway error is written in.
//
//   - [ParseRequest] reads the fields a request is priced and admitted on
//     (model, stream, the max-token limit) and estimates its prompt size with
//     the documented rule of [EstimateTokens].
//
//   - [InjectIncludeUsage] and [RewriteModel] edit one member of a request
//     body and keep every other value byte-for-byte.
//
//   - [ParseResponseUsage] and [ParseChunkUsage] read token usage from a
//     complete response body or one server-sent-events data payload of
//     /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/responses.
//
//   - [UsageScanner] reads the same usage from a JSON response too large to
//     keep, piece by piece as it passes, holding only the usage value.
//
//   - [StreamFilter] meters a streamed response as it passes through, and can
//     remove the usage-only chunk, and the "usage" members of the other
//     chunks, that the gateway asked for on the client's behalf.
//
//   - [DecodeBody] undoes a gzip or deflate Content-Encoding with a size cap.
//
// Nothing here panics on any input, and every value is safe to use from one
// goroutine at a time; there is no package-level mutable state.
package caddyproxy
