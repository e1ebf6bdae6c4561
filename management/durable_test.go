package management

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// faultyStore opens the store of g's database into the pool (the app then
// shares it), with commits failing with fault while the returned flag is
// set. opts sets the other options; Path and CommitHook are the helper's.
func faultyStore(t *testing.T, g *gwtest.Gateway, fault error, opts keystore.Options) *atomic.Bool {
	t.Helper()
	failing := new(atomic.Bool)
	opts.Path = g.DBPath
	opts.CommitHook = func() error {
		if failing.Load() {
			return fault
		}
		return nil
	}
	_, _, err := storePool.LoadOrNew(g.DBPath, func() (caddy.Destructor, error) {
		s, err := keystore.Open(context.Background(), opts)
		if err != nil {
			return nil, err
		}
		return pooledStore{Store: s}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = storePool.Delete(g.DBPath) })
	return failing
}

// TestDurableBillingWithholdsUntilCommitted: with durable billing (the
// default), a JSON answer lacks its last byte and a stream its terminator
// until the request's ledger row is committed; the content of a stream is
// not held. The database refuses commits for a while to make the wait
// visible; once it recovers both answers complete, and their rows are in
// the database file.
func TestDurableBillingWithholdsUntilCommitted(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	failing := faultyStore(t, g, errors.New("injected fault: disk I/O error"), keystore.Options{})
	g.LoadSite(gwtest.Site(mock.URL))
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "app")

	failing.Store(true)
	post := func(body string) *http.Response {
		req, _ := http.NewRequest("POST", g.BaseURL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secret)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	// JSON: everything but the last byte arrives; the rest waits.
	jsonResp := post(`{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}`)
	defer jsonResp.Body.Close()
	if jsonResp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", jsonResp.StatusCode)
	}
	want := jsonResp.ContentLength
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(jsonResp.Body); got <- b }()

	// stream: the content arrives, [DONE] waits.
	streamResp := post(`{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	defer streamResp.Body.Close()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(streamResp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var content int
	deadline := time.After(5 * time.Second)
	for content == 0 {
		select {
		case l := <-lines:
			if strings.Contains(l, `"content"`) {
				content++
			}
			if strings.Contains(l, "[DONE]") {
				t.Fatal("the stream's terminator arrived before the ledger row was committed")
			}
		case <-deadline:
			t.Fatal("no streamed content while the ledger commit waits: the stream is held back")
		}
	}
	select {
	case b := <-got:
		t.Fatalf("the JSON answer completed (%d of %d bytes) before its ledger row was committed", len(b), want)
	case l, ok := <-waitLine(lines, "[DONE]", 300*time.Millisecond):
		if ok {
			t.Fatalf("the stream ended (%q) before its ledger row was committed", l)
		}
	}

	failing.Store(false)
	select {
	case b := <-got:
		if int64(len(b)) != want || !strings.HasSuffix(strings.TrimSpace(string(b)), "}") {
			t.Fatalf("JSON answer %d of %d bytes after the commit: %q", len(b), want, b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the JSON answer did not complete after the commit")
	}
	if _, ok := <-waitLine(lines, "[DONE]", 10*time.Second); !ok {
		t.Fatal("the stream did not end with [DONE] after the commit")
	}
	store := storeOf(t, g.DBPath)
	onDisk, _ := store.StoredBalance(context.Background(), "acme")
	sum, _ := store.LedgerSum(context.Background(), "acme")
	rows := gwtest.UsageRows(t, g)
	if len(rows) != 2 || onDisk != sum || onDisk == 10*keystore.NanoPerUnit {
		t.Fatalf("after both answers: %d usage rows, stored balance %d, sum(ledger) %d", len(rows), onDisk, sum)
	}
}

// waitLine reports the first line containing s within d (ok false: none, or
// the stream ended first).
func waitLine(lines <-chan string, s string, d time.Duration) <-chan string {
	out := make(chan string, 1)
	go func() {
		defer close(out)
		timeout := time.After(d)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					return
				}
				if strings.Contains(l, s) {
					out <- l
					return
				}
			case <-timeout:
				return
			}
		}
	}()
	return out
}
