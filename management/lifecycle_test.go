package management

// Lifecycle tests: key rotation, secrets at rest and in logs, config reloads
// under traffic, concurrency with key churn, admin API errors and a store
// that stops answering. Caddy is process-global: none of these run in
// parallel.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/internal/pgtest"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// lcHTTP is a client for test goroutines: plenty of idle connections so 200
// concurrent requests do not churn sockets.
var lcHTTP = &http.Client{
	Timeout: 30 * time.Second,
	Transport: &http.Transport{
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     30 * time.Second,
	},
}

const lcChatBody = `{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}`

var lcRequestSeq atomic.Int64

// lcIdempotencyKey returns a unique Idempotency-Key. With it Go's transport
// may resend a POST that met a keep-alive connection the server closed while
// it was idle (which a config reload does to idle connections: the usual
// HTTP/1.1 keep-alive race, which real SDK clients cover with retries). It
// resends only when the server answered nothing on a reused connection, so a
// request the gateway failed still fails the test.
func lcIdempotencyKey() string {
	return fmt.Sprintf("lc-%d-%d", time.Now().UnixNano(), lcRequestSeq.Add(1))
}

// lcPost sends one chat request with a Bearer key. It is safe to call from
// any goroutine (it never touches testing.T).
func lcPost(baseURL, key string) (int, []byte, error) {
	req, err := http.NewRequest("POST", baseURL+"/v1/chat/completions", strings.NewReader(lcChatBody))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", lcIdempotencyKey())
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := lcHTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// lcAdmin calls the admin API from any goroutine.
func lcAdmin(g *gwtest.Gateway, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+g.AdminAddr+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// A config load restarts Caddy's admin server, closing idle
	// connections; see lcIdempotencyKey.
	req.Header.Set("Idempotency-Key", lcIdempotencyKey())
	resp, err := lcHTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// lcNewKey creates a key from any goroutine.
func lcNewKey(g *gwtest.Gateway, account, name string) (id, secret string, err error) {
	status, b, err := lcAdmin(g, "POST", "/ai-gateway/keys", map[string]string{"account": account, "name": name})
	if err != nil {
		return "", "", err
	}
	if status != http.StatusCreated {
		return "", "", fmt.Errorf("create key: status %d: %s", status, b)
	}
	var k struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	if err := json.Unmarshal(b, &k); err != nil {
		return "", "", err
	}
	return k.ID, k.Key, nil
}

// lcCode returns the OpenAI error code of a gateway error body.
func lcCode(body []byte) string {
	var e gwtest.ErrorEnvelope
	_ = json.Unmarshal(body, &e)
	return e.Error.Code
}

// lcKeyView is a key as the admin API shows it (never with a plaintext).
type lcKeyView struct {
	ID         string     `json:"id"`
	AccountID  string     `json:"account_id"`
	Name       string     `json:"name"`
	Hint       string     `json:"hint"`
	ExpiresAt  *time.Time `json:"expires_at"`
	ReplacedBy string     `json:"replaced_by"`
	Status     string     `json:"status"`
	Key        *string    `json:"key"` // must never be present
}

type lcRotation struct {
	New struct {
		lcKeyView
		Secret  string `json:"key"`
		Warning string `json:"warning"`
	} `json:"new"`
	Old lcKeyView `json:"old"`
}

// lcRotate rotates a key through the admin API and returns the decoded
// answer and its raw body.
func lcRotate(t *testing.T, g *gwtest.Gateway, id, body string) (lcRotation, []byte) {
	t.Helper()
	status, raw := g.Admin("POST", "/ai-gateway/keys/"+id+"/rotate", body)
	if status != http.StatusOK {
		t.Fatalf("rotate %s: status %d: %s", id, status, raw)
	}
	var r lcRotation
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("rotate answer %s: %v", raw, err)
	}
	if r.New.ID == "" || r.New.ID == id || !keystore.LooksLikeKey(r.New.Secret) || r.New.Warning == "" {
		t.Fatalf("rotate answer %s", raw)
	}
	if r.Old.ID != id || r.Old.ReplacedBy != r.New.ID || r.Old.Key != nil {
		t.Fatalf("rotate answer's old key %s", raw)
	}
	if bytes.Count(raw, []byte(r.New.Secret)) != 1 {
		t.Fatalf("the new plaintext must appear exactly once in the rotate answer: %s", raw)
	}
	return r, raw
}

// lcAssertNoSecretInKeyViews checks every admin surface that shows keys.
func lcAssertNoSecretInKeyViews(t *testing.T, g *gwtest.Gateway, ids []string, secrets ...string) {
	t.Helper()
	var bodies [][]byte
	for _, p := range []string{"/ai-gateway/keys", "/ai-gateway/keys?account=acme"} {
		status, b := g.Admin("GET", p, nil)
		if status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, status, b)
		}
		bodies = append(bodies, b)
	}
	for _, id := range ids {
		status, b := g.Admin("GET", "/ai-gateway/keys/"+id, nil)
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s[len(keystore.KeyPrefix):])) {
				t.Fatalf("GET key %s (status %d) shows a plaintext key: %s", id, status, b)
			}
		}
		if status == http.StatusOK {
			bodies = append(bodies, b)
		}
	}
	for _, b := range bodies {
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s[len(keystore.KeyPrefix):])) {
				t.Fatalf("an admin GET shows a plaintext key: %s", b)
			}
		}
		if bytes.Contains(b, []byte(`"key"`)) {
			t.Fatalf("an admin GET has a \"key\" field: %s", b)
		}
	}
}

// TestRotateWithoutGrace: the old key is refused on the very next request,
// the new one works at once with the same name and account, and the new
// plaintext is only ever in the rotate answer.
func TestRotateWithoutGrace(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(gwtest.Site(mock.URL))
	g.NewAccount("acme", "10")
	oldID, oldSecret := g.NewKey("acme", "production-app")
	if _, err := gwtest.Chat(context.Background(), gwtest.Client(g, oldSecret)); err != nil {
		t.Fatalf("old key before rotation: %v", err)
	}

	r, raw := lcRotate(t, g, oldID, "{}")
	if bytes.Contains(raw, []byte(oldSecret)) {
		t.Fatal("the rotate answer contains the old plaintext")
	}
	if r.New.Name != "production-app" || r.New.AccountID != "acme" || r.New.Status != "active" ||
		r.New.Hint != "sk-…"+r.New.Secret[len(r.New.Secret)-4:] {
		t.Fatalf("new key %+v", r.New)
	}
	if r.Old.Status != "deleted" {
		t.Fatalf("old key status %q, want deleted", r.Old.Status)
	}

	// the very next request with the old key: 401
	resp, body := gwtest.RawPost(t, g, []string{"Bearer " + oldSecret})
	gwtest.CheckOpenAIError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "does not exist or was deleted")
	// the new key: 200, same identity
	c, err := gwtest.Chat(context.Background(), gwtest.Client(g, r.New.Secret))
	if err != nil || c.Choices[0].Message.Content != "Hello from the mock provider." {
		t.Fatalf("new key: %v", err)
	}

	var nk lcKeyView
	g.MustAdmin("GET", "/ai-gateway/keys/"+r.New.ID, nil, 200, &nk)
	if nk.Name != "production-app" || nk.AccountID != "acme" || nk.Key != nil {
		t.Fatalf("GET new key %+v", nk)
	}
	if status, b := g.Admin("GET", "/ai-gateway/keys/"+oldID, nil); status != http.StatusNotFound {
		t.Fatalf("GET revoked key: %d %s", status, b)
	}
	lcAssertNoSecretInKeyViews(t, g, []string{oldID, r.New.ID}, oldSecret, r.New.Secret)

	// The revoked key cannot be rotated again (it no longer exists).
	status, b := g.Admin("POST", "/ai-gateway/keys/"+oldID+"/rotate", "{}")
	lcAssertAdminError(t, status, b, http.StatusNotFound, "not found")

	if n := mock.Count(); n != 2 {
		t.Fatalf("mock saw %d requests, want 2 (old before rotation, new after)", n)
	}
}

// TestRotateWithGrace: both keys work during the grace period; afterwards the
// old one gets a 401 that says it expired (not "unknown").
func TestRotateWithGrace(t *testing.T) {
	const grace = 2 * time.Second
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(gwtest.Site(mock.URL))
	g.NewAccount("acme", "10")
	oldID, oldSecret := g.NewKey("acme", "ci")
	unknownResp, unknownBody := gwtest.RawPost(t, g, []string{"Bearer sk-" + strings.Repeat("Z", 44) + "abcd"})
	unknown := gwtest.CheckOpenAIError(t, unknownResp, unknownBody, 401, "invalid_request_error", "invalid_api_key", "does not exist")

	t0 := time.Now()
	r, raw := lcRotate(t, g, oldID, `{"grace":"2s"}`)
	if bytes.Contains(raw, []byte(oldSecret)) {
		t.Fatal("the rotate answer contains the old plaintext")
	}
	if r.Old.Status != "rotated" || r.Old.ExpiresAt == nil {
		t.Fatalf("old key during grace %+v", r.Old)
	}
	if exp := *r.Old.ExpiresAt; exp.Before(t0.Add(grace-time.Millisecond)) || exp.After(time.Now().Add(grace)) {
		t.Fatalf("old key expires at %v, want rotation time + %v (rotation started %v)", exp, grace, t0)
	}
	if r.New.Name != "ci" || r.New.AccountID != "acme" || r.New.ExpiresAt != nil {
		t.Fatalf("new key %+v", r.New)
	}

	// during the grace period both keys work
	for _, k := range []string{oldSecret, r.New.Secret} {
		if status, b, err := lcPost(g.BaseURL, k); err != nil || status != 200 {
			t.Fatalf("during grace: %d %s %v", status, b, err)
		}
	}
	// a rotated key cannot be rotated again: admin.go maps keystore's
	// ErrInvalid ("rotate its replacement instead") to 400
	status, b := g.Admin("POST", "/ai-gateway/keys/"+oldID+"/rotate", `{"grace":"1h"}`)
	lcAssertAdminError(t, status, b, http.StatusBadRequest, "already rotated")

	// poll until the old key stops working; until then it must work
	var expiredBody []byte
	var expiredResp *http.Response
	deadline := t0.Add(grace + 10*time.Second)
	for {
		resp, body := gwtest.RawPost(t, g, []string{"Bearer " + oldSecret})
		if resp.StatusCode == 401 {
			expiredResp, expiredBody = resp, body
			break
		}
		if resp.StatusCode != 200 {
			t.Fatalf("old key during grace: %d %s", resp.StatusCode, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("old key still accepted %v after rotation with grace %v", time.Since(t0), grace)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if el := time.Since(t0); el < grace-10*time.Millisecond {
		t.Fatalf("old key refused after %v, before the %v grace period ended", el, grace)
	}
	e := gwtest.CheckOpenAIError(t, expiredResp, expiredBody, 401, "invalid_request_error", "invalid_api_key", "has expired")
	if e.Error.Message == unknown.Error.Message || strings.Contains(e.Error.Message, "does not exist") {
		t.Fatalf("expired-key message does not differ from the unknown-key message: %q", e.Error.Message)
	}
	if strings.Contains(e.Error.Message, oldSecret) || !strings.Contains(e.Error.Message, keystore.MaskKey(oldSecret)) {
		t.Fatalf("expired-key message must name the key masked only: %q", e.Error.Message)
	}
	// the replacement keeps working
	if _, err := gwtest.Chat(context.Background(), gwtest.Client(g, r.New.Secret)); err != nil {
		t.Fatalf("new key after grace: %v", err)
	}
	var old lcKeyView
	g.MustAdmin("GET", "/ai-gateway/keys/"+oldID, nil, 200, &old)
	if old.Status != "expired" || old.ReplacedBy != r.New.ID {
		t.Fatalf("old key after grace %+v", old)
	}
	status, b = g.Admin("POST", "/ai-gateway/keys/"+oldID+"/rotate", "{}")
	lcAssertAdminError(t, status, b, http.StatusBadRequest, "already rotated")
	lcAssertNoSecretInKeyViews(t, g, []string{oldID, r.New.ID}, oldSecret, r.New.Secret)
}

// lcAssertNoSecrets fails if any file contains any form of any secret.
func lcAssertNoSecrets(t *testing.T, files map[string][]byte, secrets []string) {
	t.Helper()
	for name, content := range files {
		for _, s := range secrets {
			for _, form := range gwtest.SecretForms(s) {
				if bytes.Contains(content, []byte(form)) {
					t.Fatalf("%s contains key material %q (of key %s)", name, form, keystore.MaskKey(s))
				}
			}
		}
	}
}

// TestPlaintextNeverStoredOrLogged: after creating, using, rotating and
// deleting keys, neither the database files (while running and after a
// clean stop) nor Caddy's logs (default log, access log, a DEBUG log of
// everything) hold a plaintext key in any common encoding.
func TestPlaintextNeverStoredOrLogged(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	accessLog := filepath.Join(g.Dir, "access.log")
	debugLog := filepath.Join(g.Dir, "debug.log")
	caddyLog := filepath.Join(g.Dir, "caddy.log")
	site := fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t}\n%s", accessLog, gwtest.Site(mock.URL))
	extraGlobal := fmt.Sprintf("log everything {\n\t\toutput file %s\n\t\tlevel DEBUG\n\t}", debugLog)
	g.Load(g.Caddyfile(site, extraGlobal))

	g.NewAccount("acme", "10")
	g.NewAccount("beta", "5")
	type key struct{ id, secret string }
	var keys []key
	for i, acct := range []string{"acme", "acme", "beta", "beta"} {
		id, s := g.NewKey(acct, fmt.Sprintf("key-%d", i))
		keys = append(keys, key{id, s})
	}
	var secrets []string
	for _, k := range keys {
		secrets = append(secrets, k.secret)
		for i := 0; i < 2; i++ {
			if _, err := gwtest.Chat(context.Background(), gwtest.Client(g, k.secret)); err != nil {
				t.Fatalf("chat with %s: %v", k.id, err)
			}
		}
	}
	// rotate one (no grace) and one with grace, delete one, use the new keys
	r1, _ := lcRotate(t, g, keys[0].id, "{}")
	r2, _ := lcRotate(t, g, keys[2].id, `{"grace":"1h"}`)
	g.MustAdmin("DELETE", "/ai-gateway/keys/"+keys[3].id, nil, 200, nil)
	secrets = append(secrets, r1.New.Secret, r2.New.Secret)
	for _, s := range []string{r1.New.Secret, r2.New.Secret, keys[2].secret} {
		if _, err := gwtest.Chat(context.Background(), gwtest.Client(g, s)); err != nil {
			t.Fatalf("chat after rotation: %v", err)
		}
	}
	// refused requests are logged too: a revoked key, a deleted key, a
	// wrong key that looks real, a malformed header
	wrong := "sk-" + strings.Repeat("Q", 40) + "wrongkey"
	secrets = append(secrets, wrong)
	for _, auth := range []string{"Bearer " + keys[0].secret, "Bearer " + keys[3].secret, "Bearer " + wrong, "Basic " + keys[1].secret} {
		resp, body := gwtest.RawPost(t, g, []string{auth})
		if resp.StatusCode != 401 {
			t.Fatalf("%s: %d %s", keystore.MaskKey(auth), resp.StatusCode, body)
		}
	}

	// while running: database, WAL and shared memory files (on
	// PostgreSQL: a dump of the database)
	dbFiles := func() map[string][]byte {
		if gwtest.OnPostgres() {
			dump, err := pgtest.Shared(t).Dump(pgtest.DatabaseName(g.DBPath))
			if err != nil {
				t.Fatal(err)
			}
			return map[string][]byte{"dump": dump}
		}
		return map[string][]byte{
			"db":     gwtest.ReadIfExists(t, g.DBPath),
			"db-wal": gwtest.ReadIfExists(t, g.DBPath+"-wal"),
			"db-shm": gwtest.ReadIfExists(t, g.DBPath+"-shm"),
		}
	}
	running := dbFiles()
	lcAssertNoSecrets(t, running, secrets)
	// positive control: the hash of a live key is in the database files,
	// so the scan looks at the right bytes
	h := sha256.Sum256([]byte(keys[1].secret))
	hashIn := func(files map[string][]byte) bool {
		if gwtest.OnPostgres() { // bytea is dumped in hex
			return bytes.Contains(files["dump"], []byte(hex.EncodeToString(h[:])))
		}
		return bytes.Contains(append(files["db"], files["db-wal"]...), h[:])
	}
	if !hashIn(running) {
		t.Fatal("the stored hash of a live key is not in the database files: wrong files?")
	}

	// clean stop: the store is closed, last-used times flushed, WAL merged
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := dbFiles()
	lcAssertNoSecrets(t, stopped, secrets)
	if !hashIn(stopped) {
		t.Fatal("the stored hash of a live key is not in the database after stop")
	}
	// last_used was flushed on close (the flush interval is 10s)
	st, err := keystore.Open(context.Background(), keystore.Options{Path: g.DBPath})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := st.Keys(context.Background(), "")
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		if k.ID != r1.New.ID && k.ID != r2.New.ID && k.ID != keys[1].id && k.ID != keys[2].id {
			t.Fatalf("unexpected live key %s", k.ID)
		}
		if k.LastUsedAt == nil {
			t.Fatalf("key %s was used but last_used_at was not persisted on stop", k.ID)
		}
	}
	if len(ks) != 4 {
		t.Fatalf("%d live keys, want 4", len(ks))
	}

	logs := map[string][]byte{
		"caddy.log":  gwtest.ReadIfExists(t, caddyLog),
		"access.log": gwtest.ReadIfExists(t, accessLog),
		"debug.log":  gwtest.ReadIfExists(t, debugLog),
	}
	for name, b := range logs {
		if len(b) == 0 {
			t.Fatalf("%s is empty: the log configuration of this test is wrong", name)
		}
	}
	lcAssertNoSecrets(t, logs, secrets)

	// The access log: Authorization is present only as REDACTED, the key id
	// appears for admitted requests, and every request was logged.
	var entries, admitted int
	for _, line := range bytes.Split(bytes.TrimSpace(logs["access.log"]), []byte("\n")) {
		var e struct {
			Logger  string `json:"logger"`
			Status  int    `json:"status"`
			UserID  string `json:"user_id"`
			KeyID   string `json:"ai_gateway_key_id"`
			Account string `json:"ai_gateway_account"`
			Request struct {
				Headers map[string][]string `json:"headers"`
			} `json:"request"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("access log line is not JSON: %s", line)
		}
		if !strings.HasPrefix(e.Logger, "http.log.access") {
			continue
		}
		entries++
		auth, ok := e.Request.Headers["Authorization"]
		if !ok {
			t.Fatalf("access log entry without the (redacted) Authorization header: %s", line)
		}
		if len(auth) != 1 || auth[0] != "REDACTED" {
			t.Fatalf("Authorization logged as %q, want REDACTED", auth)
		}
		switch e.Status {
		case 200:
			admitted++
			if !strings.HasPrefix(e.UserID, "key_") || e.KeyID != e.UserID || e.Account == "" {
				t.Fatalf("admitted request logged without key id placeholder: %s", line)
			}
		case 401:
			if e.UserID != "" || e.KeyID != "" {
				t.Fatalf("refused request logged with a key id: %s", line)
			}
		default:
			t.Fatalf("unexpected status in access log: %s", line)
		}
	}
	if entries != 15 || admitted != 11 {
		t.Fatalf("access log has %d entries (%d admitted), want 15 (11 admitted)", entries, admitted)
	}
	if n := mock.Count(); n != 11 {
		t.Fatalf("mock saw %d requests, want 11", n)
	}
}

// lcCountPool returns the keys in storePool and their reference counts.
func lcCountPool() map[string]int {
	out := map[string]int{}
	storePool.Range(func(k, _ any) bool {
		refs, _ := storePool.References(k)
		out[k.(string)] = refs
		return true
	})
	return out
}

// lcWaitPool waits until storePool holds exactly want (path -> refs).
func lcWaitPool(t *testing.T, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := lcCountPool()
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("storePool holds %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lcLoadCaddyfile posts a Caddyfile to the admin endpoint's /load with a
// forced reload (Cache-Control: must-revalidate; without it Caddy skips a
// config identical to the running one).
func lcLoadCaddyfile(t *testing.T, g *gwtest.Gateway, caddyfile string) {
	t.Helper()
	// After a load Caddy swaps admin servers; wait until the admin endpoint
	// answers a GET (retrying its connection errors) so the POST below does
	// not land on the listener being closed.
	for deadline := time.Now().Add(5 * time.Second); ; {
		probe, _ := http.NewRequest("GET", "http://"+g.AdminAddr+"/config/", nil)
		probe.Close = true
		resp, err := lcHTTP.Do(probe)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin endpoint not answering: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	req, _ := http.NewRequest("POST", "http://"+g.AdminAddr+"/load", strings.NewReader(caddyfile))
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Cache-Control", "must-revalidate")
	// A fresh connection: a load replaces Caddy's admin server, so an idle
	// connection to the previous one can be closed under a reused request
	// (seen as EOF), and a POST is not retried.
	req.Close = true
	resp, err := lcHTTP.Do(req)
	if err != nil {
		log := strings.Split(string(gwtest.ReadIfExists(t, filepath.Join(g.Dir, "caddy.log"))), "\n")
		t.Fatalf("POST /load: %v\nlast log lines:\n%s", err, strings.Join(log[max(0, len(log)-15):], "\n"))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /load: %d %s", resp.StatusCode, b)
	}
}

// lcCountLog counts lines of the caddy log that contain all parts.
func lcCountLog(t *testing.T, g *gwtest.Gateway, parts ...string) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(string(gwtest.ReadIfExists(t, filepath.Join(g.Dir, "caddy.log"))), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			n++
		}
	}
	return n
}

// TestConfigReloadUnderTraffic: forced reloads of the same config, a changed
// config and back, while 8 SDK clients send requests without retries. No
// request fails, the store is shared (one handle in storePool) and keeps its
// data, keys created during the reloads work, and stopping Caddy releases
// the handle.
func TestConfigReloadUnderTraffic(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	mock.SetRecording(false)
	g := gwtest.New(t)
	siteA := strings.Replace(gwtest.Site(mock.URL), "https://dashboard.example.test/keys", "https://a.example.test/keys", 1)
	siteB := strings.Replace(gwtest.Site(mock.URL), "https://dashboard.example.test/keys", "https://b.example.test/keys", 1) +
		"\n\thandle /extra {\n\t\trespond \"extra route\" 200\n\t}"
	cfgA, cfgB := g.Caddyfile(siteA, ""), g.Caddyfile(siteB, "")
	g.Load(cfgA)

	g.NewAccount("acme", "10")
	g.NewAccount("beta", "3.5")
	trafficID, trafficKey := g.NewKey("acme", "traffic")
	betaID, betaKey := g.NewKey("beta", "beta-key")
	lcWaitPool(t, map[string]int{g.DBPath: 1})

	const readyMsg = "ai gateway store ready"
	if n := lcCountLog(t, g, readyMsg, `"shared_with_previous_config":false`); n != 1 {
		t.Fatalf("%d store openings logged, want 1", n)
	}

	// traffic
	var (
		stop       atomic.Bool
		ok, failed atomic.Int64
		// attempts answered with a status other than 200, and attempts
		// that met a closed connection (see the client below)
		badAnswers, connRetries atomic.Int64
		errMu                   sync.Mutex
		errs                    []string
		wg                      sync.WaitGroup
	)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The SDK's own retries (as every client has them by default)
			// cover the HTTP/1.1 keep-alive race: a reload closes idle
			// connections, and a request written onto one at that instant
			// meets a closed socket. The middleware sees every attempt: an
			// HTTP answer other than 200 is a gateway failure and fails the
			// test; connection errors are counted and reported.
			c := openai.NewClient(
				option.WithBaseURL(g.BaseURL+"/v1/"),
				option.WithAPIKey(trafficKey),
				option.WithMaxRetries(3),
				option.WithMiddleware(func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
					resp, err := next(req)
					if err != nil {
						connRetries.Add(1)
					} else if resp.StatusCode != http.StatusOK {
						badAnswers.Add(1)
					}
					return resp, err
				}),
			)
			for !stop.Load() {
				resp, err := gwtest.Chat(context.Background(), c)
				if err == nil && len(resp.Choices) == 1 {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				errMu.Lock()
				if len(errs) < 10 {
					errs = append(errs, fmt.Sprintf("%v", err))
				}
				errMu.Unlock()
			}
		}()
	}
	// keys created while reloads happen
	type created struct{ id, secret string }
	var (
		createdMu  sync.Mutex
		createdKs  []created
		createErrs []string
		// admin calls that met the admin server being replaced
		adminConnErrs int
		stopCreate    atomic.Bool
		cwg           sync.WaitGroup
	)
	cwg.Add(1)
	go func() {
		defer cwg.Done()
		for i := 0; !stopCreate.Load(); i++ {
			id, s, err := lcNewKey(g, "acme", fmt.Sprintf("during-reload-%d", i))
			createdMu.Lock()
			var urlErr *url.Error
			if errors.As(err, &urlErr) {
				// Caddy replaces its admin server on every config load,
				// so an admin call at that instant can meet a closed
				// socket. Such a call must have created nothing: the
				// key count is checked at the end.
				adminConnErrs++
			} else if err != nil {
				createErrs = append(createErrs, err.Error())
			} else {
				createdKs = append(createdKs, created{id, s})
			}
			createdMu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()

	waitProgress := func() {
		t.Helper()
		target := ok.Load() + 40
		deadline := time.Now().Add(10 * time.Second)
		for ok.Load() < target && failed.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("traffic made no progress (%d ok)", ok.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	msg401 := func() string {
		// A request can meet a connection that the reload's server
		// shutdown closes at that instant (an EOF before any answer);
		// only that is retried, a wrong answer is not.
		var b []byte
		var err error
		for try := 0; try < 3; try++ {
			if _, b, err = lcPost(g.BaseURL, ""); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		var e gwtest.ErrorEnvelope
		_ = json.Unmarshal(b, &e)
		return e.Error.Message
	}

	steps := []struct {
		name, cfg, keysURL string
		extra              bool
	}{
		{"same config", cfgA, "a.example.test", false},
		{"same config again", cfgA, "a.example.test", false},
		{"changed config", cfgB, "b.example.test", true},
		{"changed config again", cfgB, "b.example.test", true},
		{"back to the first config", cfgA, "a.example.test", false},
	}
	waitProgress()
	for i, st := range steps {
		lcLoadCaddyfile(t, g, st.cfg)
		// the reload really happened: one more provisioning of the app,
		// which found the open store in the pool
		if n := lcCountLog(t, g, readyMsg, `"shared_with_previous_config":true`); n != i+1 {
			t.Fatalf("%s: %d shared store provisionings logged, want %d", st.name, n, i+1)
		}
		if m := msg401(); !strings.Contains(m, st.keysURL) {
			t.Fatalf("%s: 401 message %q does not name %s", st.name, m, st.keysURL)
		}
		resp, err := lcHTTP.Get(g.BaseURL + "/extra")
		if err != nil {
			t.Fatalf("%s: GET /extra: %v", st.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if st.extra && (resp.StatusCode != 200 || string(b) != "extra route") {
			t.Fatalf("%s: /extra answered %d %q", st.name, resp.StatusCode, b)
		}
		if !st.extra && string(b) == "extra route" {
			t.Fatalf("%s: /extra still routed", st.name)
		}
		// one database handle, held by the running config only
		lcWaitPool(t, map[string]int{g.DBPath: 1})
		waitProgress()
	}
	stopCreate.Store(true)
	cwg.Wait()
	stop.Store(true)
	wg.Wait()

	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed during reloads; first errors: %v", f, f+ok.Load(), errs)
	}
	if n := badAnswers.Load(); n != 0 {
		t.Fatalf("%d attempts were answered with an error status during reloads", n)
	}
	t.Logf("%d attempts met a connection closed by a reload and were resent by the SDK; "+
		"%d admin calls met the admin server being replaced", connRetries.Load(), adminConnErrs)
	if len(createErrs) != 0 {
		t.Fatalf("key creation failed during reloads: %v", createErrs)
	}
	if len(createdKs) < 3 {
		t.Fatalf("only %d keys were created during the reloads", len(createdKs))
	}
	t.Logf("%d requests, 0 failed, %d keys created during %d reloads", ok.Load(), len(createdKs), len(steps))

	// data survived: balances, keys, and the keys created meanwhile work
	// Every request of the traffic was billed exactly once across the
	// reloads: one usage row per successful request, and the balance is the
	// top-up minus their costs.
	var acme, beta struct {
		BalanceNano int64  `json:"balance_nano"`
		Balance     string `json:"balance"`
	}
	g.MustAdmin("GET", "/ai-gateway/accounts/acme", nil, 200, &acme)
	g.MustAdmin("GET", "/ai-gateway/accounts/beta", nil, 200, &beta)
	var usage struct {
		Totals []struct {
			Requests int64 `json:"requests"`
			CostNano int64 `json:"cost_nano"`
		} `json:"totals"`
	}
	g.MustAdmin("GET", "/ai-gateway/usage?account=acme", nil, 200, &usage)
	if len(usage.Totals) != 1 || usage.Totals[0].Requests != ok.Load() {
		t.Fatalf("usage after reloads: %+v, want %d requests", usage.Totals, ok.Load())
	}
	if want := 10_000_000_000 - usage.Totals[0].CostNano; acme.BalanceNano != want || usage.Totals[0].CostNano <= 0 {
		t.Fatalf("acme balance after reloads: %d nano, want %d (10 minus the usage)", acme.BalanceNano, want)
	}
	if beta.Balance != "3.50" {
		t.Fatalf("beta balance after reloads: %s (beta sent nothing)", beta.Balance)
	}
	var list []lcKeyView
	g.MustAdmin("GET", "/ai-gateway/keys", nil, 200, &list)
	have := map[string]bool{}
	for _, k := range list {
		have[k.ID] = true
	}
	if !have[trafficID] || !have[betaID] || len(list) != 2+len(createdKs) {
		t.Fatalf("keys after reloads: %d listed, want %d", len(list), 2+len(createdKs))
	}
	for _, k := range append(createdKs, created{betaID, betaKey}) {
		if !have[k.id] {
			t.Fatalf("key %s missing after reloads", k.id)
		}
		if status, b, err := lcPost(g.BaseURL, k.secret); err != nil || status != 200 {
			t.Fatalf("key %s after reloads: %d %s %v", k.id, status, b, err)
		}
	}
	lcWaitPool(t, map[string]int{g.DBPath: 1})

	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := lcCountPool(); len(got) != 0 {
		t.Fatalf("storePool holds %v after caddy.Stop, want nothing", got)
	}
}

// TestConcurrentRequestsWithKeyChurn: 200 concurrent clients with a pool of
// keys while keys are created and deleted through the admin API. Keys that
// are never deleted always work; keys deleted before a request started are
// refused; nothing else happens (no 5xx, no 403, no transport error), and
// only admitted requests reach the provider.
func TestConcurrentRequestsWithKeyChurn(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	mock.SetRecording(false)
	g := gwtest.New(t)
	g.LoadSite(gwtest.Site(mock.URL))
	g.NewAccount("acme", "100")
	g.NewAccount("churn", "100")

	const (
		clients  = 200
		perCl    = 3
		nStable  = 10
		nDoomed  = 20
		churners = 3
	)
	type key struct {
		id, secret string
		doomed     bool
		delStarted atomic.Bool
		delDone    atomic.Bool
	}
	var keys []*key
	for i := 0; i < nStable+nDoomed; i++ {
		id, s := g.NewKey("acme", fmt.Sprintf("k%d", i))
		keys = append(keys, &key{id: id, secret: s, doomed: i >= nStable})
	}

	var (
		failMu   sync.Mutex
		failures []string
		ok200    atomic.Int64
		got401   atomic.Int64
	)
	fail := func(format string, args ...any) {
		failMu.Lock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
		failMu.Unlock()
	}
	// classify checks one outcome: 200 always allowed unless the key was
	// deleted before the request started; 401 invalid_api_key only if its
	// deletion had started before the response came.
	classify := func(k *key, deletedBefore bool, status int, body []byte, err error) {
		if err != nil {
			fail("%s: transport error %v", k.id, err)
			return
		}
		switch status {
		case 200:
			if deletedBefore {
				fail("%s: 200 although the key was deleted before the request", k.id)
				return
			}
			ok200.Add(1)
		case 401:
			if !k.delStarted.Load() {
				fail("%s: 401 for a key that was never deleted: %s", k.id, body)
				return
			}
			if lcCode(body) != "invalid_api_key" {
				fail("%s: 401 with body %s", k.id, body)
				return
			}
			got401.Add(1)
		default:
			fail("%s: status %d: %s", k.id, status, body)
		}
	}

	start := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			<-start
			for r := 0; r < perCl; r++ {
				// half the requests use a stable key, half a doomed one
				var k *key
				if (c+r)%2 == 0 {
					k = keys[(c+r)%nStable]
				} else {
					k = keys[nStable+(c*7+r)%nDoomed]
				}
				deletedBefore := k.delDone.Load()
				status, body, err := lcPost(g.BaseURL, k.secret)
				classify(k, deletedBefore, status, body, err)
			}
		}(c)
	}

	// admin churn: delete the doomed keys one by one
	var awg sync.WaitGroup
	awg.Add(1)
	go func() {
		defer awg.Done()
		<-start
		for _, k := range keys[nStable:] {
			time.Sleep(2 * time.Millisecond)
			k.delStarted.Store(true)
			status, b, err := lcAdmin(g, "DELETE", "/ai-gateway/keys/"+k.id, nil)
			if err != nil || status != 200 {
				fail("DELETE %s: %d %s %v", k.id, status, b, err)
			}
			k.delDone.Store(true)
		}
	}()
	// admin churn: create keys, use them, delete them, use them again
	var churnDone atomic.Bool
	var churned atomic.Int64
	for w := 0; w < churners; w++ {
		awg.Add(1)
		go func(w int) {
			defer awg.Done()
			<-start
			for i := 0; !churnDone.Load() || i < 3; i++ {
				id, s, err := lcNewKey(g, "churn", fmt.Sprintf("churn-%d-%d", w, i))
				if err != nil {
					fail("create churn key: %v", err)
					return
				}
				k := &key{id: id, secret: s}
				status, body, err := lcPost(g.BaseURL, s)
				classify(k, false, status, body, err)
				if status != 200 {
					fail("fresh key %s: %d", id, status)
				}
				k.delStarted.Store(true)
				if status, b, err := lcAdmin(g, "DELETE", "/ai-gateway/keys/"+id, nil); err != nil || status != 200 {
					fail("DELETE %s: %d %s %v", id, status, b, err)
				}
				k.delDone.Store(true)
				status, body, err = lcPost(g.BaseURL, s)
				classify(k, true, status, body, err)
				if status != 401 {
					fail("deleted key %s: %d", id, status)
				}
				churned.Add(1)
			}
		}(w)
	}

	close(start)
	wg.Wait()
	churnDone.Store(true)
	awg.Wait()

	if len(failures) > 0 {
		t.Fatalf("%d+ bad outcomes:\n%s", len(failures), strings.Join(failures, "\n"))
	}
	total := int64(clients*perCl) + 2*churned.Load()
	if ok200.Load()+got401.Load() != total {
		t.Fatalf("%d outcomes counted, want %d", ok200.Load()+got401.Load(), total)
	}
	if got401.Load() < churned.Load() {
		t.Fatalf("only %d refusals for %d deleted churn keys", got401.Load(), churned.Load())
	}
	// only admitted requests reached the provider
	if n := int64(mock.Count()); n != ok200.Load() {
		t.Fatalf("mock saw %d requests, gateway answered %d with 200", n, ok200.Load())
	}
	// afterwards every doomed key is refused and every stable key works
	for _, k := range keys {
		status, body, err := lcPost(g.BaseURL, k.secret)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 401, false: 200}[k.doomed]; status != want {
			t.Fatalf("%s (doomed=%v): %d %s", k.id, k.doomed, status, body)
		}
	}
	t.Logf("%d requests: %d ok, %d refused; %d churn keys", total, ok200.Load(), got401.Load(), churned.Load())
}

// lcAssertAdminError checks an admin API error: the status, and Caddy's
// admin error shape {"error":"message"} with Content-Type application/json.
func lcAssertAdminError(t *testing.T, status int, body []byte, want int, msgPart string) {
	t.Helper()
	if status != want {
		t.Fatalf("status %d, want %d: %s", status, want, body)
	}
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("error body is not JSON: %s", body)
	}
	msg, ok := raw["error"].(string)
	if len(raw) != 1 || !ok || msg == "" {
		t.Fatalf("error body not of the form {\"error\":\"message\"}: %s", body)
	}
	if !strings.Contains(msg, msgPart) {
		t.Fatalf("error message %q does not contain %q", msg, msgPart)
	}
}

// lcAdminRaw sends a raw body to the admin API and returns status, headers
// and body.
func lcAdminRaw(t *testing.T, g *gwtest.Gateway, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+g.AdminAddr+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := lcHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// TestAdminAPIErrors: refused admin requests answer with the right status in
// Caddy's admin error shape and change nothing.
func TestAdminAPIErrors(t *testing.T) {
	g := gwtest.New(t)
	g.LoadSite(gwtest.Site("http://127.0.0.1:9"))
	g.NewAccount("acme", "10")
	keyID, _ := g.NewKey("acme", "k")

	expectErr := func(method, path, body string, want int, msgPart string) {
		t.Helper()
		status, h, b := lcAdminRaw(t, g, method, path, body)
		if ct := h.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: Content-Type %q", method, path, ct)
		}
		lcAssertAdminError(t, status, b, want, msgPart)
	}
	keyCount := func() int {
		var ks []lcKeyView
		g.MustAdmin("GET", "/ai-gateway/keys", nil, 200, &ks)
		return len(ks)
	}
	accountIDs := func() string {
		var as []struct {
			ID string `json:"id"`
		}
		g.MustAdmin("GET", "/ai-gateway/accounts", nil, 200, &as)
		var ids []string
		for _, a := range as {
			ids = append(ids, a.ID)
		}
		return strings.Join(ids, ",")
	}
	balance := func() string {
		var a struct {
			Balance string `json:"balance"`
		}
		g.MustAdmin("GET", "/ai-gateway/accounts/acme", nil, 200, &a)
		return a.Balance
	}

	t.Run("key for unknown account", func(t *testing.T) {
		expectErr("POST", "/ai-gateway/keys", `{"account":"ghost","name":"k"}`, 404, `account "ghost": not found`)
		expectErr("POST", "/ai-gateway/keys", `{"name":"k"}`, 400, "account is required")
		expectErr("POST", "/ai-gateway/keys", `{"account":"acme","name":""}`, 400, "name must not be empty")
		expectErr("POST", "/ai-gateway/keys", `{"account":"acme","name":"k","expires_in":"-1h"}`, 400, "not a positive duration")
		expectErr("POST", "/ai-gateway/keys", `{"account":"acme","name":"k","expires_at":"2001-01-01T00:00:00Z"}`, 400, "not in the future")
		expectErr("POST", "/ai-gateway/keys", `{"account":"acme","name":"k","expires_in":"1h","expires_at":"2099-01-01T00:00:00Z"}`, 400, "not both")
		if n := keyCount(); n != 1 {
			t.Fatalf("%d keys after refused creates, want 1", n)
		}
		expectErr("GET", "/ai-gateway/keys?account=ghost", "", 404, "not found")
	})
	t.Run("duplicate account", func(t *testing.T) {
		expectErr("POST", "/ai-gateway/accounts", `{"id":"acme","name":"Impostor"}`, 409, "already exists")
		var a struct {
			Name    string `json:"name"`
			Balance string `json:"balance"`
		}
		g.MustAdmin("GET", "/ai-gateway/accounts/acme", nil, 200, &a)
		if a.Name != "acme" || a.Balance != "10.00" {
			t.Fatalf("duplicate create changed the account: %+v", a)
		}
	})
	t.Run("bad amounts", func(t *testing.T) {
		for _, body := range []string{
			`{"amount":"1.2.3"}`, `{"amount":"abc"}`, `{"amount":"0.0000000001"}`, `{"amount":"1e3"}`,
			`{"amount":"NaN"}`, `{"amount":""}`, `{"amount":null}`, `{"amount":"1,5"}`, `{"amount":"2000000000"}`,
		} {
			expectErr("POST", "/ai-gateway/accounts/acme/balance", body, 400, "invalid argument")
		}
		for _, body := range []string{`{"amount":5}`, `{"amount":5.5}`, `{"note":"no amount"}`, `{"amount":true}`} {
			expectErr("POST", "/ai-gateway/accounts/acme/balance", body, 400, "decimal string")
		}
		// a repeated member is refused before its values are looked at
		expectErr("POST", "/ai-gateway/accounts/acme/balance", `{"amount":"5","amount":6}`, 400, "more than once")
		expectErr("POST", "/ai-gateway/accounts/acme/balance", `{"amount":"0"}`, 400, "must not be zero")
		expectErr("POST", "/ai-gateway/accounts/acme/balance", `{"amount":"-0.000"}`, 400, "must not be zero")
		expectErr("POST", "/ai-gateway/accounts/ghost/balance", `{"amount":"1"}`, 404, "not found")
		if b := balance(); b != "10.00" {
			t.Fatalf("balance %s after refused adjustments, want 10.00", b)
		}
	})
	t.Run("invalid account id", func(t *testing.T) {
		before := accountIDs()
		for _, id := range []string{"Acme", "-acme", "a b", "", "acme/x", "é", strings.Repeat("a", 65)} {
			b, _ := json.Marshal(map[string]string{"id": id, "name": "x"})
			expectErr("POST", "/ai-gateway/accounts", string(b), 400, "account id")
		}
		if after := accountIDs(); after != before {
			t.Fatalf("accounts changed from %q to %q", before, after)
		}
	})
	t.Run("unknown JSON field", func(t *testing.T) {
		before := accountIDs()
		expectErr("POST", "/ai-gateway/accounts", `{"id":"newco","nmae":"x"}`, 400, `unknown field "nmae"`)
		expectErr("POST", "/ai-gateway/keys", `{"account":"acme","name":"k","expire_in":"1h"}`, 400, `unknown field "expire_in"`)
		expectErr("POST", "/ai-gateway/accounts/acme/balance", `{"amount":"1","notes":"x"}`, 400, `unknown field "notes"`)
		expectErr("PATCH", "/ai-gateway/accounts/acme", `{"disabled":true,"x":1}`, 400, `unknown field "x"`)
		expectErr("PATCH", "/ai-gateway/keys/"+keyID, `{"nam":"x"}`, 400, `unknown field "nam"`)
		expectErr("POST", "/ai-gateway/keys/"+keyID+"/rotate", `{"grac":"1s"}`, 400, `unknown field "grac"`)
		// other malformed bodies
		expectErr("POST", "/ai-gateway/accounts", `{"id":"newco"} {"id":"x"}`, 400, "data after the JSON object")
		expectErr("POST", "/ai-gateway/accounts", ``, 400, "must be a JSON object")
		expectErr("POST", "/ai-gateway/accounts", `[1]`, 400, "decoding request body")
		expectErr("POST", "/ai-gateway/keys/"+keyID+"/rotate", `{"grace":"soon"}`, 400, "is not a duration such as 24h")
		expectErr("POST", "/ai-gateway/keys/"+keyID+"/rotate", `{"grace":"-1s"}`, 400, "must not be negative")
		if after := accountIDs(); after != before {
			t.Fatalf("accounts changed from %q to %q", before, after)
		}
		if b := balance(); b != "10.00" {
			t.Fatalf("balance %s", b)
		}
		var k lcKeyView
		g.MustAdmin("GET", "/ai-gateway/keys/"+keyID, nil, 200, &k)
		if k.ReplacedBy != "" || k.Name != "k" || keyCount() != 1 {
			t.Fatalf("refused rotate/rename changed the key: %+v", k)
		}
		var a struct {
			Disabled bool `json:"disabled"`
		}
		g.MustAdmin("GET", "/ai-gateway/accounts/acme", nil, 200, &a)
		if a.Disabled {
			t.Fatal("a refused PATCH disabled the account")
		}
	})
	t.Run("routes and methods", func(t *testing.T) {
		expectErr("GET", "/ai-gateway/nope", "", 404, "no such ai-gateway route")
		expectErr("GET", "/ai-gateway/keys/"+keyID+"/rotate", "", 405, "not allowed")
		expectErr("DELETE", "/ai-gateway/accounts/acme", "", 405, "not allowed")
		expectErr("GET", "/ai-gateway/keys/key_nope", "", 404, "not found")
		expectErr("DELETE", "/ai-gateway/keys/key_nope", "", 404, "not found")
		expectErr("PATCH", "/ai-gateway/accounts/acme", `{}`, 400, "nothing to change")
	})
}

// TestStoreUnavailableFailsClosed: once the store cannot answer, every
// request with a key gets 503 store_unavailable in the OpenAI shape, whether
// or not its key was cached, and nothing reaches the provider.
func TestStoreUnavailableFailsClosed(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(gwtest.Site(mock.URL))
	g.NewAccount("acme", "10")
	_, cached := g.NewKey("acme", "cached")
	_, fresh := g.NewKey("acme", "never-used")
	if _, err := gwtest.Chat(context.Background(), gwtest.Client(g, cached)); err != nil {
		t.Fatal(err)
	}
	mock.Reset()

	app, err := caddy.ActiveContext().AppIfConfigured("ai_gateway")
	if err != nil {
		t.Fatal(err)
	}
	ga := app.(*App)
	if ga.DatabasePath() != g.DBPath {
		t.Fatalf("app uses %s, want %s", ga.DatabasePath(), g.DBPath)
	}
	if err := ga.Store().Close(); err != nil {
		t.Fatal(err)
	}

	for name, key := range map[string]string{"uncached key": fresh, "cached key": cached} {
		resp, body := gwtest.RawPost(t, g, []string{"Bearer " + key})
		e := gwtest.CheckOpenAIError(t, resp, body, 503, "server_error", "store_unavailable", "not sent to the provider")
		if strings.Contains(e.Error.Message, key) {
			t.Fatalf("%s: message echoes the key", name)
		}
	}
	_, err = gwtest.Chat(context.Background(), gwtest.Client(g, cached))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Code != "store_unavailable" || apiErr.Type != "server_error" {
		t.Fatalf("SDK sees %v, want 503 store_unavailable", err)
	}
	// what needs no store still gets its 401
	resp, body := gwtest.RawPost(t, g, nil)
	gwtest.CheckOpenAIError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "didn't provide an API key")

	if n := mock.Count(); n != 0 {
		t.Fatalf("mock saw %d requests after the store closed; the gateway must fail closed", n)
	}
	// the admin API says so too
	status, b := g.Admin("POST", "/ai-gateway/keys", map[string]string{"account": "acme", "name": "x"})
	lcAssertAdminError(t, status, b, http.StatusServiceUnavailable, "closed")
	status, b = g.Admin("POST", "/ai-gateway/accounts/acme/balance", map[string]string{"amount": "1"})
	lcAssertAdminError(t, status, b, http.StatusServiceUnavailable, "closed")
}
