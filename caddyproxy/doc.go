// Package caddyproxy parses the requests and responses of OpenAI-compatible
// APIs for the gateway's billing handler. It depends on the standard library
// only and never starts a server or touches the network.
//
// What it offers:
//
//   - [ParseRequest] reads the fields a request is priced and admitted on
//     (model, stream, the max-token limit) and estimates its prompt size with
//     the documented rule of [EstimateTokens].
//   - [InjectIncludeUsage] and [RewriteModel] edit one member of a request
//     body and keep every other value byte-for-byte.
//   - [ParseResponseUsage] and [ParseChunkUsage] read token usage from a
//     complete response body or one server-sent-events data payload of
//     /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/responses.
//   - [StreamFilter] meters a streamed response as it passes through, and can
//     remove the usage-only chunk the gateway asked for on the client's behalf.
//   - [DecodeBody] undoes a gzip or deflate Content-Encoding with a size cap.
//
// Nothing here panics on any input, and every value is safe to use from one
// goroutine at a time; there is no package-level mutable state.
package caddyproxy
