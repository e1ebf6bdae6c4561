package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// redactKeysFields are the log filters docs/operations.md and
// Caddyfile.example ship: Caddy logs a copy of each request taken before any
// handler runs, so keys a client put where the gateway does not take them
// are removed by the log configuration.
const redactKeysFields = `
			request>headers>X-Api-Key delete
			request>headers>Api-Key delete
			request>uri regexp sk-[0-9A-Za-z]{20,} sk-REDACTED
			uri regexp sk-[0-9A-Za-z]{20,} sk-REDACTED
			error regexp sk-[0-9A-Za-z]{20,} sk-REDACTED`

// TestKeysElsewhereNeverForwardedOrLogged: a gateway key sent in X-Api-Key,
// Api-Key or ?key= (alone, or beside a valid Bearer key) is refused or
// served, but never reaches the provider and never appears in the filtered
// logs. An unfiltered access log of the same requests is the positive
// control: it does hold the keys, so the scan looks at the right bytes.
func TestKeysElsewhereNeverForwardedOrLogged(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	filtered := filepath.Join(g.Dir, "access.log")
	raw := filepath.Join(g.Dir, "access-unfiltered.log")
	defaultLog := filepath.Join(g.Dir, "default.log")
	cfg := fmt.Sprintf(`{
	admin %s
	persist_config off
	auto_https off
	http_port %d
	storage file_system %s
	log {
		output file %s
		level DEBUG
		format filter {
			wrap json
			fields {%s
			}
		}
	}
	ai_gateway {
		database %s
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	log {
		output file %s
		format filter {
			wrap json
			fields {%s
			}
		}
	}
	log unfiltered {
		output file %s
	}
%s
}
`, g.AdminAddr, g.HTTPPort, filepath.Join(g.Dir, "storage"), defaultLog, redactKeysFields, g.DBPath,
		g.HTTPPort, filtered, redactKeysFields, raw, gwtest.Site(mock.URL))
	g.Load(cfg)
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "app")

	body := `{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}`
	send := func(query string, header map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", g.BaseURL+"/v1/chat/completions"+query, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// alone: 401 that says where the key must go
	for _, tc := range []struct {
		query  string
		header map[string]string
		where  string
	}{
		{"", map[string]string{"X-Api-Key": secret}, "X-Api-Key header"},
		{"", map[string]string{"Api-Key": secret}, "Api-Key header"},
		{"?key=" + secret, nil, "query parameter key"},
		{"?api-version=1&api_key=" + secret, nil, "query parameter api_key"},
	} {
		status, b := send(tc.query, tc.header)
		if status != http.StatusUnauthorized || !strings.Contains(b, "Bearer") || !strings.Contains(b, tc.where) {
			t.Errorf("key in %s alone: %d %s", tc.where, status, b)
		}
		if strings.Contains(b, secret) {
			t.Errorf("the 401 echoes the key: %s", b)
		}
	}
	if mock.Count() != 0 {
		t.Fatalf("refused requests reached the provider: %d", mock.Count())
	}

	// beside a valid Bearer key: served, but the copies are not forwarded
	status, b := send("?api-version=2024-10-21&key="+secret, map[string]string{
		"Authorization": "Bearer " + secret, "X-Api-Key": secret, "Api-Key": secret,
	})
	if status != http.StatusOK {
		t.Fatalf("with Bearer: %d %s", status, b)
	}
	reqs := mock.Requests()
	if len(reqs) != 1 {
		t.Fatalf("provider saw %d requests", len(reqs))
	}
	if gwtest.HasHeaderValue(reqs, secret) || strings.Contains(reqs[0].Query, secret) {
		t.Fatalf("the key reached the provider: header %v query %q", reqs[0].Header, reqs[0].Query)
	}
	if reqs[0].Query != "api-version=2024-10-21" {
		t.Fatalf("other query parameters must pass untouched, got %q", reqs[0].Query)
	}

	// a key put in an admin URL by mistake is filtered from the default log
	g.Admin("GET", "/ai-gateway/keys/"+secret, nil)

	for _, f := range []string{filtered, defaultLog} {
		content, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(content) == 0 {
			t.Fatalf("%s is empty: nothing was logged", f)
		}
		if strings.Contains(string(content), secret) {
			t.Errorf("%s holds the plaintext key", filepath.Base(f))
		}
	}
	unfiltered, _ := os.ReadFile(raw)
	if !strings.Contains(string(unfiltered), secret) {
		t.Fatal("positive control: the unfiltered access log should hold the key sent in X-Api-Key")
	}
}

// TestCaddyfileExampleFiltersKeysFromLogs: the shipped configuration carries
// the filters TestKeysElsewhereNeverForwardedOrLogged proves.
func TestCaddyfileExampleFiltersKeysFromLogs(t *testing.T) {
	example, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.ReplaceAll(string(gwtest.Adapt(t, string(example))), `\u003e`, ">")
	for _, line := range strings.Split(strings.TrimSpace(redactKeysFields), "\n") {
		f := strings.Fields(line)
		if !strings.Contains(cfg, `"`+f[0]+`":{"filter":"`+f[1]+`"`) {
			t.Errorf("Caddyfile.example's default log lacks the filter %q", strings.TrimSpace(line))
		}
	}
}
