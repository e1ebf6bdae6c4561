package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// What the gateway does with a request, as docs/billing.md's endpoint table
// says it in the first words of its last column.
const (
	epMetered = "metered"
	epFree    = "free"
	epGateway = "answered by the gateway"
	epRefused = "refused"
	epOwner   = "the owner's only"
)

// catalogueEntry is one endpoint of the OpenAI API: its method, its path as
// documented ({id} for an object id) and what the gateway does with it.
type catalogueEntry struct {
	method, path, does string
}

// catalogue is every OpenAI endpoint and method the gateway is tested
// with; docs/billing.md's "Endpoints" table lists exactly these rows.
var catalogue = []catalogueEntry{
	{"POST", "/v1/chat/completions", epMetered},
	{"POST", "/v1/completions", epMetered},
	{"POST", "/v1/embeddings", epMetered},
	{"POST", "/v1/responses", epMetered},
	{"POST", "/v1/moderations", epFree},
	{"POST", "/v1/images/generations", epMetered},
	{"POST", "/v1/images/edits", epMetered},
	{"POST", "/v1/images/variations", epMetered},
	{"POST", "/v1/audio/speech", epMetered},
	{"POST", "/v1/audio/transcriptions", epMetered},
	{"POST", "/v1/audio/translations", epMetered},
	{"GET", "/v1/models", epGateway},
	{"GET", "/v1/models/{id}", epGateway},

	{"GET", "/v1/chat/completions", epRefused},
	{"GET", "/v1/chat/completions/{id}", epRefused},
	{"POST", "/v1/chat/completions/{id}", epRefused},
	{"DELETE", "/v1/chat/completions/{id}", epRefused},
	{"GET", "/v1/chat/completions/{id}/messages", epRefused},
	{"GET", "/v1/responses/{id}", epOwner},
	{"DELETE", "/v1/responses/{id}", epOwner},
	{"POST", "/v1/responses/{id}/cancel", epRefused},
	{"GET", "/v1/responses/{id}/input_items", epOwner},
	{"POST", "/v1/responses/input_tokens", epRefused},
	{"DELETE", "/v1/models/{id}", epRefused},
	{"GET", "/v1/files", epRefused},
	{"POST", "/v1/files", epRefused},
	{"GET", "/v1/files/{id}", epRefused},
	{"DELETE", "/v1/files/{id}", epRefused},
	{"GET", "/v1/files/{id}/content", epRefused},
	{"POST", "/v1/uploads", epRefused},
	{"POST", "/v1/uploads/{id}/parts", epRefused},
	{"POST", "/v1/uploads/{id}/complete", epRefused},
	{"POST", "/v1/uploads/{id}/cancel", epRefused},
	{"GET", "/v1/batches", epRefused},
	{"POST", "/v1/batches", epRefused},
	{"GET", "/v1/batches/{id}", epRefused},
	{"POST", "/v1/batches/{id}/cancel", epRefused},
	{"GET", "/v1/vector_stores", epRefused},
	{"POST", "/v1/vector_stores", epRefused},
	{"GET", "/v1/vector_stores/{id}", epRefused},
	{"POST", "/v1/vector_stores/{id}", epRefused},
	{"DELETE", "/v1/vector_stores/{id}", epRefused},
	{"POST", "/v1/vector_stores/{id}/search", epRefused},
	{"GET", "/v1/vector_stores/{id}/files", epRefused},
	{"POST", "/v1/vector_stores/{id}/files", epRefused},
	{"POST", "/v1/vector_stores/{id}/file_batches", epRefused},
	{"GET", "/v1/assistants", epRefused},
	{"POST", "/v1/assistants", epRefused},
	{"POST", "/v1/threads", epRefused},
	{"POST", "/v1/threads/runs", epRefused},
	{"POST", "/v1/threads/{id}/messages", epRefused},
	{"POST", "/v1/threads/{id}/runs", epRefused},
	{"GET", "/v1/fine_tuning/jobs", epRefused},
	{"POST", "/v1/fine_tuning/jobs", epRefused},
	{"GET", "/v1/realtime", epRefused},
	{"POST", "/v1/realtime/sessions", epRefused},
	{"POST", "/v1/realtime/client_secrets", epRefused},
	{"GET", "/v1/conversations/{id}", epRefused},
	{"POST", "/v1/conversations", epRefused},
	{"GET", "/v1/evals", epRefused},
	{"POST", "/v1/evals", epRefused},
	{"GET", "/v1/containers", epRefused},
	{"POST", "/v1/containers", epRefused},
}

// oddRequests are requests outside the catalogue, every one refused: other
// methods on the metered paths, other spellings of them, and WebSocket
// upgrades. Each is sent byte for byte as written (no client normalises
// it).
var oddRequests = []struct {
	method, target string
	header         []string // "Name: value"
	body           string
}{
	{"GET", "/v1/chat/completions", nil, `{"model":"mock-model"}`},
	{"PUT", "/v1/chat/completions", nil, `{"model":"mock-model"}`},
	{"PATCH", "/v1/completions", nil, `{"model":"mock-model"}`},
	{"DELETE", "/v1/embeddings", nil, ""},
	{"HEAD", "/v1/responses", nil, ""},
	{"GET", "/v1/responses", nil, ""},
	{"PUT", "/v1/responses", nil, ""},
	{"OPTIONS", "/v1/chat/completions", nil, ""},
	{"post", "/v1/chat/completions", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/models", nil, `{"model":"mock-model"}`},
	{"GET", "/v1/models/", nil, ""},
	{"POST", "/v1/moderations/", nil, `{"input":"x"}`},
	{"POST", "/v1/chat/completionsX", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions/x", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions.json", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions/", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions//", nil, `{"model":"mock-model"}`},
	{"POST", "/v1//chat/completions", nil, `{"model":"mock-model"}`},
	{"POST", "//v1/chat/completions", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/./chat/completions", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions/.", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/x/../completions", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions/..", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/Chat/Completions", nil, `{"model":"mock-model"}`},
	{"POST", "/V1/CHAT/COMPLETIONS", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/Embeddings", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions;x", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions;a=b/", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions%3F", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions%5C", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat%2Fcompletions", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions%2F", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/ch%61t/completions", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/%2e/chat/completions", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions%2e%2e", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions%00", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions%20", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions%E2%80%8B", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions\\", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat\\completions", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions\u200b", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/cömpletions", nil, `{"model":"mock-model"}`},
	{"POST", "/v1/chat/completions\x00", nil, `{"model":"mock-model"}`},
	{"GET", "/v1/realtime?model=gpt-realtime", []string{"Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="}, ""},
	{"POST", "/v1/chat/completions", []string{"Connection: Upgrade", "Upgrade: websocket"}, `{"model":"mock-model"}`},
}

// epSite puts the gateway in front of the mock for every path, so that the
// guard sees every spelling (under handle /v1/* Caddy itself would answer
// some of them with an empty 200 and forward nothing).
func epSite(upstream, guardExtra string) string {
	return `
	handle {
		api_key_auth
		balance_guard {
			price mock-* input 0.15 output 0.60
` + guardExtra + `
		}
		reverse_proxy ` + upstream + ` {
			header_up Authorization "Bearer provider-secret"
		}
	}`
}

// rawRequest sends a request exactly as written over a new connection and
// reads the answer.
func rawRequest(t *testing.T, g *gwtest.Gateway, method, target, key string, header []string, body string) (int, http.Header, []byte) {
	t.Helper()
	addr := strings.TrimPrefix(g.BaseURL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n", method, target, addr, key)
	hasConn, hasType := false, false
	for _, h := range header {
		hasConn = hasConn || strings.HasPrefix(strings.ToLower(h), "connection:")
		hasType = hasType || strings.HasPrefix(strings.ToLower(h), "content-type:")
		b.WriteString(h + "\r\n")
	}
	if !hasConn {
		b.WriteString("Connection: close\r\n")
	}
	if body != "" && !hasType {
		b.WriteString("Content-Type: application/json\r\n")
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %q: %v", method, target, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, rb
}

// concrete fills a documented path's {id} with an id: a model the
// gateway lists for /v1/models/{id}.
func concrete(path string) string {
	if strings.HasPrefix(path, "/v1/models/") {
		return strings.ReplaceAll(path, "{id}", "mock-model")
	}
	return strings.ReplaceAll(path, "{id}", "obj_123")
}

// TestEndpointCatalogue sends every OpenAI endpoint and method of the
// catalogue, and every odd request, through the gateway to a mock that logs
// everything: each is refused with 403 endpoint_not_allowed and never
// reaches the provider, or is metered and billed exactly, or is free and
// leaves no charge, or is answered by the gateway itself.
func TestEndpointCatalogue(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(epSite(mock.URL, "price mock-model input 0.15 output 0.60\n\t\t\tprice mock-model request 0.01"))
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")
	const usage = "1000,100"
	// mock-* at 0.15/0.60 per 1M: 1000 prompt, 100 completion tokens
	wantCost := map[string]int64{"/v1/embeddings": rtCost(150_000_000, 600_000_000, 1000, 0)}
	defaultCost := rtCost(150_000_000, 600_000_000, 1000, 100)

	for i, c := range catalogue {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			before, balance := mock.Count(), gwtest.Balance(t, g, "acme")
			rowsBefore := len(gwtest.UsageRows(t, g))
			id := fmt.Sprintf("cat-%d", i)
			body := ""
			header := []string{gwtest.HeaderUsage + ": " + usage, gwtest.HeaderRequestID + ": " + id}
			if c.method == "POST" {
				body = `{"model":"mock-model","messages":[{"role":"user","content":"hi"}],"input":"hi","prompt":"hi"}`
			}
			media := mediaPaths[c.path]
			if media && needsFile(c.path) {
				ct, form := multipartBody(t, map[string]string{"model": "mock-model", "prompt": "hi"}, "file", "a.wav", []byte("RIFFmock"))
				header, body = append(header, "Content-Type: "+ct), string(form)
			}
			status, h, b := rawRequest(t, g, c.method, concrete(c.path), secret, header, body)
			switch c.does {
			case epRefused:
				gwtest.CheckError(t, status, h, b, http.StatusForbidden, "invalid_request_error", "endpoint_not_allowed")
				if !bytes.Contains(b, []byte("not allowed on this gateway")) || !bytes.Contains(b, []byte(c.method)) {
					t.Errorf("message does not name the request: %s", b)
				}
				if mock.Count() != before {
					t.Fatal("a refused request reached the provider")
				}
			case epMetered:
				if status != http.StatusOK || mock.Count() != before+1 {
					t.Fatalf("%d %s; provider saw %d more", status, b, mock.Count()-before)
				}
				row, ok := gwtest.UsageRows(t, g)[id]
				cost, special := wantCost[c.path]
				if !special {
					cost = defaultCost
				}
				prompt := int64(1000)
				if media { // priced per request (mock-model reports no media usage)
					cost, prompt = 10_000_000, 0
				}
				if !ok || -row.Amount != cost || row.Prompt != prompt || row.Estimated || row.Model != "mock-model" {
					t.Fatalf("ledger row %+v, want cost %d", row, cost)
				}
				if after := gwtest.Balance(t, g, "acme"); balance-after != cost {
					t.Fatalf("balance dropped by %d, want %d", balance-after, cost)
				}
			case epOwner:
				// obj_123 was not created through the gateway by this
				// account (objects_test.go shows the owner's way through)
				gwtest.CheckError(t, status, h, b, http.StatusNotFound, "invalid_request_error", "object_not_found")
				if !bytes.Contains(b, []byte(`"obj_123\" does not exist for this account`)) {
					t.Errorf("message does not name the id: %s", b)
				}
				if mock.Count() != before || gwtest.Balance(t, g, "acme") != balance || len(gwtest.UsageRows(t, g)) != rowsBefore {
					t.Fatal("an unknown object reached the provider or was charged")
				}
			case epFree, epGateway:
				reached := mock.Count() - before
				if status != http.StatusOK || (c.does == epFree) != (reached == 1) || reached > 1 {
					t.Fatalf("%d %s; provider saw %d more", status, b, reached)
				}
				if gwtest.Balance(t, g, "acme") != balance || len(gwtest.UsageRows(t, g)) != rowsBefore {
					t.Fatal("a free request was charged")
				}
			default:
				t.Fatalf("unknown outcome %q", c.does)
			}
		})
	}

	for _, o := range oddRequests {
		t.Run(fmt.Sprintf("odd %s %q", o.method, o.target), func(t *testing.T) {
			before := mock.Count()
			status, h, b := rawRequest(t, g, o.method, o.target, secret, o.header, o.body)
			switch {
			case status == http.StatusBadRequest && bytes.HasPrefix(b, []byte("400 Bad Request")):
				t.Logf("net/http refused the request line itself")
			case o.method == "HEAD":
				if status != http.StatusForbidden || len(b) != 0 {
					t.Fatalf("HEAD: %d %s", status, b)
				}
			default:
				gwtest.CheckError(t, status, h, b, http.StatusForbidden, "invalid_request_error", "endpoint_not_allowed")
			}
			if o.header != nil && !bytes.Contains(b, []byte("Realtime API")) {
				t.Errorf("a WebSocket refusal does not say realtime is not supported: %s", b)
			}
			if mock.Count() != before {
				t.Fatal("reached the provider")
			}
		})
	}
	if n := len(gwtest.UsageRows(t, g)); n != 10 {
		t.Fatalf("%d usage rows, want the 10 metered requests", n)
	}
	gwtest.AssertNoHolds(t, g)
}

// TestEndpointTableMatchesDocs: docs/billing.md's "Endpoints" table has one
// row per catalogue entry, in the same order, saying the same thing.
func TestEndpointTableMatchesDocs(t *testing.T) {
	raw, err := os.ReadFile("../docs/billing.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(raw), "\n## Endpoints\n")
	if !ok {
		t.Fatal(`docs/billing.md has no "## Endpoints" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var rows []catalogueEntry
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 3 {
			t.Fatalf("row %q has %d cells, want 3", line, len(cells))
		}
		rows = append(rows, catalogueEntry{
			method: strings.Trim(strings.TrimSpace(cells[0]), "`"),
			path:   strings.Trim(strings.TrimSpace(cells[1]), "`"),
			does:   strings.TrimSpace(cells[2]),
		})
	}
	if len(rows) != len(catalogue) {
		t.Errorf("docs/billing.md lists %d endpoints, the catalogue %d", len(rows), len(catalogue))
	}
	for i := 0; i < len(rows) && i < len(catalogue); i++ {
		d, c := rows[i], catalogue[i]
		if d.method != c.method || d.path != c.path || !strings.HasPrefix(d.does, c.does) {
			t.Errorf("row %d: docs say %s %s: %q; the catalogue %s %s: %s", i+1, d.method, d.path, d.does, c.method, c.path, c.does)
		}
	}
}
