// Package openaiwire is the OpenAI wire format as the gateway reads and
// writes it: request fields, token usage in JSON bodies and server-sent
// event streams, the error shape, and the small JSON scanners they rest on.
// It uses the standard library alone: no Caddy, no network, no store.
//
// What it offers:
//
//   - [ErrorJSON] and [RequestError], the OpenAI error shape every gateway
//     error is written in, and the refusal of a body that is not JSON.
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
//   - [DecodeBody] and [StreamDecoder] undo a gzip or deflate
//     Content-Encoding with a size cap.
//
// Nothing here panics on any input, and every value is safe to use from one
// goroutine at a time; there is no package-level mutable state.
package openaiwire
