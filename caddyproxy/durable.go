package caddyproxy

import (
	"bytes"
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// Durable billing: with the ai_gateway app's durable_billing on, the meter
// holds back the final bytes of a metered response until its ledger row is
// committed, so a client never has a complete answer that a crash could
// leave unbilled. What is held:
//
//   - a JSON body: its last byte (no client can parse the JSON without it);
//   - an event stream: its terminator and everything after it, the
//     `data: [DONE]` event of chat and completions streams, or the
//     response.completed / response.incomplete / response.failed event of
//     Responses API streams. Every event before it (all the content) passes
//     at once, so streaming is not slowed; a stream that ends without a
//     terminator has nothing held.
//
// The commit is shared with other requests (group commit); the writer does
// not wait out its pacing interval for a request that waits. When the row is
// not committed within durableWait (the database is failing), the held bytes
// are never sent: the client sees a cut response, and the row stays queued
// and is committed when the database recovers.
//
// The same bytes are held, durable billing or not, of a POST /v1/responses
// whose response the provider stores, until its id is recorded for the
// account (objects.go), so a client never continues a response the gateway
// does not know yet.

// durableWait bounds how long a response waits for its ledger row.
const durableWait = 10 * time.Second

// streamTerminators mark the last event of a stream.
var streamTerminators = [][]byte{
	[]byte("data: [DONE]"), []byte("data:[DONE]"),
	[]byte("event: response.completed"), []byte("event: response.incomplete"), []byte("event: response.failed"),
	[]byte(`"type":"response.completed"`), []byte(`"type":"response.incomplete"`), []byte(`"type":"response.failed"`),
}

// terminatorStart returns where the event holding a stream terminator
// starts in out (which the stream filter releases in whole events), or -1.
func terminatorStart(out []byte) int {
	first := -1
	for _, t := range streamTerminators {
		if i := bytes.Index(out, t); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first < 0 {
		return -1
	}
	start := 0
	for _, sep := range []string{"\n\n", "\r\n\r\n", "\r\r"} {
		if i := bytes.LastIndex(out[:first], []byte(sep)); i >= 0 && i+len(sep) > start {
			start = i + len(sep)
		}
	}
	return start
}

// holdBack decides what of out, bound for the client, waits for the commit:
// it returns what may be written now and keeps the rest.
func (m *meter) holdBack(out []byte) []byte {
	if !m.durable && !m.record {
		return out
	}
	if m.holding {
		m.held = append(m.held, out...)
		return nil
	}
	if m.stream {
		i := terminatorStart(out)
		if i < 0 {
			return out
		}
		m.holding = true
		m.held = append(m.held, out[i:]...)
		return out[:i]
	}
	// JSON: keep the last byte of what has been written so far.
	if len(out) == 0 {
		return out
	}
	if len(m.held) == 1 {
		// The byte held from the previous write goes first.
		if _, err := m.ResponseWriter.Write(m.held); err != nil && m.clientErr == nil {
			m.clientErr = err
		}
	}
	m.held = append(m.held[:0], out[len(out)-1])
	return out[:len(out)-1]
}

// release sends what was held back, once the ledger row is committed.
func (m *meter) release() {
	if len(m.held) == 0 || m.clientErr != nil {
		return
	}
	if _, err := m.ResponseWriter.Write(m.held); err != nil {
		m.clientErr = err
		return
	}
	m.held = nil
	_ = http.NewResponseController(m.ResponseWriter).Flush()
}

// awaitCommit waits for the ledger row of a settled request and then
// releases the held bytes; it logs and keeps them when the row does not
// commit in time.
func (b *billing) awaitCommit(commit func(context.Context) error) {
	m := b.meter
	if !m.durable || len(m.held) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), durableWait)
	defer cancel()
	if err := commit(ctx); err != nil {
		b.g.logger.Error("ledger row not committed in time; the end of the response was withheld",
			zap.String("account", b.id.AccountID), zap.String("request_id", b.requestID()), zap.Error(err))
		return
	}
	m.release()
}
