//go:build unix

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
	"github.com/metask/caddy-ai-gateway/internal/pgtest"
)

// Several gateway instances (real caddy binaries) on one PostgreSQL
// database, behind Caddy's own reverse_proxy with lb_policy round_robin,
// called with the OpenAI Go SDK.

// clusterGlobal are the ai_gateway settings of the instances: the default
// revocation bound (1s), and a short lease TTL so that a killed instance's
// leases lapse within the test.
const clusterGlobal = "revocation_staleness 1s\n\t\tlease_ttl 10s\n\t\tlease 0.10"

// clusterStart starts a gateway instance on the PostgreSQL database dsn;
// its answers carry X-Gateway-Instance: name.
func clusterStart(t *testing.T, bin, dir, name, dsn, upstream string) *crashCaddy {
	t.Helper()
	return clusterStartWith(t, bin, dir, name, dsn, upstream, clusterGlobal)
}

// clusterStartWith is clusterStart with other ai_gateway settings.
func clusterStartWith(t *testing.T, bin, dir, name, dsn, upstream, global string) *crashCaddy {
	t.Helper()
	return clusterStartConfig(t, bin, dir, name, func(adminPort, sitePort int, home string) string {
		return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	auto_https off
	storage file_system %s
	ai_gateway {
		database "%s"
		%s
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	header X-Gateway-Instance %s
	api_key_auth
	balance_guard {
		price mock-* input 1.00 output 2.00
		unknown_model reject
	}
	reverse_proxy %s {
		header_up Authorization "Bearer provider-key"
	}
}
`, adminPort, filepath.Join(home, "storage"), dsn, global, sitePort, name, strings.TrimPrefix(upstream, "http://"))
	})
}

// clusterStartLB starts a load balancer in front of the instances: Caddy's
// reverse_proxy, round robin, retrying a request whose connection to an
// instance fails on the next one (what a load balancer in front of the
// gateway needs, docs/operations.md).
func clusterStartLB(t *testing.T, bin, dir string, instances ...*crashCaddy) *crashCaddy {
	t.Helper()
	var ups []string
	for _, p := range instances {
		ups = append(ups, strings.TrimPrefix(p.site, "http://"))
	}
	return clusterStartConfig(t, bin, dir, "lb", func(adminPort, sitePort int, home string) string {
		return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	auto_https off
	storage file_system %s
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy %s {
		lb_policy round_robin
		lb_try_duration 2s
		fail_duration 10s
		flush_interval -1
	}
}
`, adminPort, filepath.Join(home, "storage"), sitePort, strings.Join(ups, " "))
	})
}

// clusterStartConfig starts a caddy child with the config config returns
// for its ports and home directory, retrying on a port taken meanwhile.
func clusterStartConfig(t *testing.T, bin, dir, name string, config func(adminPort, sitePort int, home string) string) *crashCaddy {
	t.Helper()
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		n := fmt.Sprintf("%s-%d", name, attempt)
		adminPort, sitePort := gwtest.FreePort(t), gwtest.FreePort(t)
		for sitePort == adminPort {
			sitePort = gwtest.FreePort(t)
		}
		home := filepath.Join(dir, "home-"+n)
		cfgPath := filepath.Join(dir, "Caddyfile-"+n)
		if err := os.WriteFile(cfgPath, []byte(config(adminPort, sitePort, home)), 0o600); err != nil {
			t.Fatal(err)
		}
		p := &crashCaddy{
			name:    n,
			logPath: filepath.Join(dir, "caddy-"+n+".log"),
			admin:   fmt.Sprintf("http://127.0.0.1:%d", adminPort),
			site:    fmt.Sprintf("http://127.0.0.1:%d", sitePort),
			client:  &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableCompression: true}},
			done:    make(chan struct{}),
		}
		p.launch(t, bin, cfgPath, home)
		if lastErr = p.waitReady(30 * time.Second); lastErr == nil {
			t.Cleanup(func() {
				if p.running() {
					p.cmd.Process.Signal(syscall.SIGTERM)
					select {
					case <-p.done:
					case <-time.After(20 * time.Second):
						p.cmd.Process.Kill()
					}
				}
			})
			return p
		}
		t.Logf("starting caddy %s (attempt %d): %v", name, attempt, lastErr)
	}
	t.Fatalf("caddy %s did not start: %v", name, lastErr)
	return nil
}

// clusterClient is an SDK client of the load balancer with key.
func clusterClient(lb *crashCaddy, key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(lb.site+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0),
		option.WithHTTPClient(&http.Client{Timeout: 30 * time.Second}))
}

// clusterChat sends one chat request for model and returns the status (200
// on success) and the instance that answered.
func clusterChat(ctx context.Context, c openai.Client, model string) (int, string, error) {
	return clusterSend(ctx, c, openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
	})
}

// clusterSend sends one chat request and returns the status (200 on
// success) and the instance that answered.
func clusterSend(ctx context.Context, c openai.Client, params openai.ChatCompletionNewParams) (int, string, error) {
	var resp *http.Response
	_, err := c.Chat.Completions.New(ctx, params, option.WithResponseInto(&resp))
	var apiErr *openai.Error
	switch {
	case err == nil:
		return http.StatusOK, resp.Header.Get("X-Gateway-Instance"), nil
	case errors.As(err, &apiErr):
		inst := ""
		if apiErr.Response != nil {
			inst = apiErr.Response.Header.Get("X-Gateway-Instance")
		}
		return apiErr.StatusCode, inst, err
	}
	return 0, "", err
}

// clusterNewKey creates an account with a balance and a key on p.
func clusterNewKey(t *testing.T, p *crashCaddy, account, topUp string) (id, key string) {
	t.Helper()
	p.mustAdmin(t, "POST", "/ai-gateway/accounts", map[string]string{"id": account, "name": account}, http.StatusCreated, nil)
	if topUp != "" {
		p.mustAdmin(t, "POST", "/ai-gateway/accounts/"+account+"/balance", map[string]string{"amount": topUp, "note": "top-up"}, http.StatusOK, nil)
	}
	var k struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	p.mustAdmin(t, "POST", "/ai-gateway/keys", map[string]string{"account": account, "name": account + "-key"}, http.StatusCreated, &k)
	return k.ID, k.Key
}

// clusterLedger reads the usage rows (by model) and the account balances
// straight from PostgreSQL.
func clusterLedger(t *testing.T, dsn string) (rows map[string]int, sums, balances map[string]int64) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, sums, balances = map[string]int{}, map[string]int64{}, map[string]int64{}
	r, err := conn.Query(ctx, `SELECT account_id, amount, COALESCE(model, ''), kind FROM ledger`)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var (
			acct, model, kind string
			amount            int64
		)
		if err := r.Scan(&acct, &amount, &model, &kind); err != nil {
			t.Fatal(err)
		}
		sums[acct] += amount
		if kind == "usage" {
			rows[model]++
		}
	}
	if r.Err() != nil {
		t.Fatal(r.Err())
	}
	r, err = conn.Query(ctx, `SELECT id, balance FROM accounts`)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var (
			id string
			b  int64
		)
		if err := r.Scan(&id, &b); err != nil {
			t.Fatal(err)
		}
		balances[id] = b
	}
	return rows, sums, balances
}

// TestClusterTwoInstancesRoundRobin: two instances on one PostgreSQL behind
// a round-robin proxy serve one key and one balance; usage reports and
// balances are the same from both; a key deleted on one instance is refused
// by both from one second later; a top-up on one instance is spendable on
// both from one second later; balance == sum(ledger).
func TestClusterTwoInstancesRoundRobin(t *testing.T) {
	bin := processCaddy(t)
	dsn := pgtest.NewDatabase(t)
	dir := t.TempDir()
	mock := gwtest.NewMockProvider(t)
	mock.SetRecording(false)
	a := clusterStart(t, bin, dir, "a", dsn, mock.URL)
	b := clusterStart(t, bin, dir, "b", dsn, mock.URL)
	lb := clusterStartLB(t, bin, dir, a, b)
	ctx := context.Background()

	keyID, key := clusterNewKey(t, a, "acme", "100.00")
	c := clusterClient(lb, key)
	served := map[string]int{}
	for i := range 20 {
		status, inst, err := clusterChat(ctx, c, fmt.Sprintf("mock-rr-%d", i))
		if status != http.StatusOK {
			t.Fatalf("request %d: %d %v", i, status, err)
		}
		served[inst]++
	}
	if served["a"] == 0 || served["b"] == 0 {
		t.Fatalf("requests served per instance: %v, want both", served)
	}

	// Admin views and usage reports agree. (An account's held amount is
	// what the instances have leased at the moment of the read: it moves
	// as they lease and give back, so it is left out here.)
	if ba, bb := a.balance(t, "acme"), b.balance(t, "acme"); ba != bb {
		t.Errorf("balance of acme: %d from a, %d from b", ba, bb)
	}
	for _, path := range []string{"/ai-gateway/usage?account=acme", "/ai-gateway/usage?by=model", "/ai-gateway/usage/export?account=acme"} {
		_, fromA, errA := a.adminDo("GET", path, nil)
		_, fromB, errB := b.adminDo("GET", path, nil)
		if errA != nil || errB != nil || !bytes.Equal(fromA, fromB) {
			t.Errorf("GET %s differs:\na: %s %v\nb: %s %v", path, fromA, errA, fromB, errB)
		}
	}
	rows, sums, balances := clusterLedger(t, dsn)
	if len(rows) != 20 || sums["acme"] != balances["acme"] || a.balance(t, "acme") != balances["acme"] {
		t.Fatalf("%d usage rows, ledger sum %d, balance %d (admin %d)", len(rows), sums["acme"], balances["acme"], a.balance(t, "acme"))
	}

	// Revocation: deleted through b, refused by both a second later.
	b.mustAdmin(t, "DELETE", "/ai-gateway/keys/"+keyID, nil, http.StatusOK, nil)
	deleted := time.Now()
	time.Sleep(time.Until(deleted.Add(time.Second)))
	refusedBy := map[string]int{}
	for i := range 6 {
		status, inst, _ := clusterChat(ctx, c, fmt.Sprintf("mock-revoked-%d", i))
		if status != http.StatusUnauthorized {
			t.Errorf("request %d with the deleted key, a second after: status %d from %q", i, status, inst)
		}
		refusedBy[inst]++
	}
	if refusedBy["a"] == 0 || refusedBy["b"] == 0 {
		t.Errorf("refusals per instance: %v, want both", refusedBy)
	}

	// Top-up: an empty account is refused, topped up through a, and
	// served by both a second later.
	_, key2 := clusterNewKey(t, b, "empty", "")
	c2 := clusterClient(lb, key2)
	for i := range 2 {
		if status, inst, _ := clusterChat(ctx, c2, "mock-empty"); status != http.StatusForbidden {
			t.Fatalf("request %d on an empty account: %d from %s", i, status, inst)
		}
	}
	a.mustAdmin(t, "POST", "/ai-gateway/accounts/empty/balance", map[string]string{"amount": "5.00", "note": "top-up"}, http.StatusOK, nil)
	time.Sleep(time.Second)
	servedBy := map[string]int{}
	for i := range 4 {
		status, inst, err := clusterChat(ctx, c2, fmt.Sprintf("mock-topped-%d", i))
		if status != http.StatusOK {
			t.Fatalf("request %d a second after the top-up: %d from %s: %v", i, status, inst, err)
		}
		servedBy[inst]++
	}
	if servedBy["a"] == 0 || servedBy["b"] == 0 {
		t.Errorf("after the top-up, served per instance: %v, want both", servedBy)
	}
	_, sums, balances = clusterLedger(t, dsn)
	for acct, bal := range balances {
		if sums[acct] != bal {
			t.Errorf("account %s: balance %d, ledger %d", acct, bal, sums[acct])
		}
	}
}

// TestClusterKillOneInstanceUnderLoad: one of two instances is SIGKILLed
// while requests go through the load balancer. Every request a client saw
// complete is in the ledger (durable billing), no row is there twice,
// balance == sum(ledger), the survivor keeps serving, and the dead
// instance's leases lapse after lease_ttl.
func TestClusterKillOneInstanceUnderLoad(t *testing.T) {
	bin := processCaddy(t)
	dsn := pgtest.NewDatabase(t)
	dir := t.TempDir()
	mock := gwtest.NewMockProvider(t)
	mock.SetRecording(false)
	mock.StreamDelay = time.Millisecond
	a := clusterStart(t, bin, dir, "a", dsn, mock.URL)
	b := clusterStart(t, bin, dir, "b", dsn, mock.URL)
	lb := clusterStartLB(t, bin, dir, a, b)
	ctx := context.Background()
	_, key := clusterNewKey(t, a, "acme", "1000.00")
	c := clusterClient(lb, key)

	var (
		mu        sync.Mutex
		completed = map[string]bool{}
		sent      atomic.Int64
		stop      atomic.Bool
		wg        sync.WaitGroup
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				model := fmt.Sprintf("mock-kill-%d-%d", w, i)
				sent.Add(1)
				if status, _, _ := clusterChat(ctx, c, model); status == http.StatusOK {
					mu.Lock()
					completed[model] = true
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	b.signal(t, syscall.SIGKILL)
	b.waitExit(t, 10*time.Second)
	killed := time.Now()
	time.Sleep(1500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	mu.Lock()
	done := len(completed)
	mu.Unlock()

	// The survivor serves.
	if status, inst, err := clusterChat(ctx, c, "mock-after-kill"); status != http.StatusOK || inst != "a" {
		t.Fatalf("after the kill: %d from %q: %v", status, inst, err)
	}
	time.Sleep(200 * time.Millisecond) // a's last batch
	rows, sums, balances := clusterLedger(t, dsn)
	for model := range completed {
		if rows[model] != 1 {
			t.Errorf("completed request %s has %d usage rows, want 1", model, rows[model])
		}
	}
	for model, n := range rows {
		if n != 1 {
			t.Errorf("%s: %d usage rows", model, n)
		}
	}
	if int64(len(rows)) > sent.Load()+1 {
		t.Errorf("%d usage rows for %d requests sent", len(rows), sent.Load()+1)
	}
	if sums["acme"] != balances["acme"] {
		t.Errorf("balance %d, ledger %d", balances["acme"], sums["acme"])
	}
	t.Logf("%d requests sent, %d completed, %d usage rows", sent.Load(), done, len(rows))

	// The dead instance's leases lapse within lease_ttl (10s) of its last
	// heartbeat; a's own are renewed.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := killed.Add(15 * time.Second)
	for {
		var live, instances int
		if err := conn.QueryRow(ctx, `SELECT count(DISTINCT instance_id) FILTER (WHERE expires_at > now()), count(DISTINCT instance_id)
			FROM aigw_leases`).Scan(&live, &instances); err != nil {
			t.Fatal(err)
		}
		if instances < 2 {
			t.Fatalf("leases of %d instances, want 2 (a's and the dead b's)", instances)
		}
		if live <= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leases of %d instances still live 15s after the kill", live)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if status, _, err := clusterChat(ctx, c, "mock-after-lapse"); status != http.StatusOK {
		t.Fatalf("after the leases lapsed: %d %v", status, err)
	}
}

// TestClusterPostgresStopUnderLoad: PostgreSQL stopped at once (as
// `pg_ctl stop -m immediate` does) while requests go through the load
// balancer to two instances. Billed requests then get 503
// store_unavailable in the OpenAI shape; when PostgreSQL is back both
// instances serve again by themselves; every request a client saw complete
// is in the ledger exactly once, no row is there twice, and balance ==
// sum(ledger).
func TestClusterPostgresStopUnderLoad(t *testing.T) {
	bin := processCaddy(t)
	pg := pgtest.Shared(t)
	dsn := pgtest.NewDatabase(t)
	dir := t.TempDir()
	mock := gwtest.NewMockProvider(t)
	mock.SetRecording(false)
	a := clusterStart(t, bin, dir, "a", dsn, mock.URL)
	b := clusterStart(t, bin, dir, "b", dsn, mock.URL)
	lb := clusterStartLB(t, bin, dir, a, b)
	ctx := context.Background()
	_, key := clusterNewKey(t, a, "acme", "1000.00")
	c := clusterClient(lb, key)

	var (
		mu          sync.Mutex
		completed   = map[string]bool{}
		unavailable = map[string]int{} // 503 store_unavailable by instance
		sent        atomic.Int64
		stop        atomic.Bool
		wg          sync.WaitGroup
	)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				model := fmt.Sprintf("mock-pgstop-%d-%d", w, i)
				sent.Add(1)
				status, inst, err := clusterChat(ctx, c, model)
				mu.Lock()
				var apiErr *openai.Error
				switch {
				case status == http.StatusOK:
					completed[model] = true
				case status == http.StatusServiceUnavailable && errors.As(err, &apiErr) && apiErr.Code == "store_unavailable":
					unavailable[inst]++
				}
				mu.Unlock()
				if status != http.StatusOK {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	if err := pg.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			pg.Start()
		}
	})
	// Past revocation_staleness (1s) both instances refuse billed requests.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		na, nb := unavailable["a"], unavailable["b"]
		mu.Unlock()
		if na > 0 && nb > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("503 store_unavailable from a %d times, from b %d times, in 20s with PostgreSQL down", na, nb)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	// Both recover by themselves.
	recovered := map[string]bool{}
	deadline = time.Now().Add(30 * time.Second)
	for !recovered["a"] || !recovered["b"] {
		if time.Now().After(deadline) {
			t.Fatalf("30s after PostgreSQL came back, only %v serve", recovered)
		}
		if status, inst, _ := clusterChat(ctx, c, "mock-pgstop-probe"); status == http.StatusOK {
			recovered[inst] = true
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()

	// Settled rows of the outage are committed once the database is back.
	var rows map[string]int
	var sums, balances map[string]int64
	deadline = time.Now().Add(20 * time.Second)
	for {
		rows, sums, balances = clusterLedger(t, dsn)
		missing := 0
		for model := range completed {
			if rows[model] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d completed requests missing from the ledger 20s after recovery", missing)
		}
		time.Sleep(250 * time.Millisecond)
	}
	for model, n := range rows {
		if n != 1 && model != "mock-pgstop-probe" {
			t.Errorf("%s: %d usage rows, want 1", model, n)
		}
	}
	if sums["acme"] != balances["acme"] {
		t.Errorf("balance %d, ledger %d", balances["acme"], sums["acme"])
	}
	mu.Lock()
	t.Logf("%d requests sent, %d completed, 503 store_unavailable from a %d and b %d, %d usage rows",
		sent.Load(), len(completed), unavailable["a"], unavailable["b"], len(rows))
	mu.Unlock()
}

// TestClusterExactModeOverdraft: with lease 0 (exact mode) two instances
// behind the load balancer spend a tiny balance with concurrent requests,
// and the account ends no lower than minus one request's cost, the
// single-instance bound (every request is covered by its hold here, so
// there are no overruns), having spent it through both instances;
// balance == sum(ledger).
func TestClusterExactModeOverdraft(t *testing.T) {
	bin := processCaddy(t)
	dsn := pgtest.NewDatabase(t)
	dir := t.TempDir()
	mock := gwtest.NewMockProvider(t)
	mock.SetRecording(false)
	const exact = "revocation_staleness 1s\n\t\tlease_ttl 10s\n\t\tlease 0"
	a := clusterStartWith(t, bin, dir, "a", dsn, mock.URL, exact)
	b := clusterStartWith(t, bin, dir, "b", dsn, mock.URL, exact)
	lb := clusterStartLB(t, bin, dir, a, b)
	ctx := context.Background()
	// Requests ask for at most 16 output tokens, so each holds about
	// 0.00005: the balance covers a few dozen, many at once.
	_, key := clusterNewKey(t, a, "acme", "0.001")
	c := clusterClient(lb, key)

	var (
		served = map[string]int{}
		mu     sync.Mutex
		wg     sync.WaitGroup
	)
	for w := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A refusal while other requests hold the rest of the
			// balance is expected; a worker stops after 15 refusals in
			// a row (300 ms), when the balance is spent.
			for i, refused := 0, 0; refused < 15 && i < 300; i++ {
				status, inst := clusterSmallChat(ctx, c, fmt.Sprintf("mock-exact-%d-%d", w, i))
				switch status {
				case http.StatusOK:
					refused = 0
					mu.Lock()
					served[inst]++
					mu.Unlock()
				case http.StatusForbidden:
					refused++
					time.Sleep(20 * time.Millisecond)
				default:
					t.Errorf("status %d from %q", status, inst)
					return
				}
			}
		}()
	}
	wg.Wait()
	time.Sleep(300 * time.Millisecond) // the last batches
	_, sums, balances := clusterLedger(t, dsn)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var largest int64
	if err := conn.QueryRow(ctx, `SELECT COALESCE(max(-amount), 0) FROM ledger WHERE kind = 'usage'`).Scan(&largest); err != nil {
		t.Fatal(err)
	}
	if served["a"] == 0 || served["b"] == 0 {
		t.Fatalf("served %v: the balance was not spent through both instances", served)
	}
	if balances["acme"] != sums["acme"] {
		t.Errorf("balance %d, ledger %d", balances["acme"], sums["acme"])
	}
	if balances["acme"] < -largest {
		t.Errorf("final balance %d nano below minus the largest request (%d): the exact-mode bound is broken", balances["acme"], largest)
	}
	t.Logf("served %v, final balance %d nano, largest request %d nano", served, balances["acme"], largest)
}

// clusterSmallChat sends one chat request for model with a small output
// limit and returns the status and the instance that answered.
func clusterSmallChat(ctx context.Context, c openai.Client, model string) (int, string) {
	status, inst, _ := clusterSend(ctx, c, openai.ChatCompletionNewParams{
		Model:               model,
		Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
		MaxCompletionTokens: openai.Int(16),
	})
	return status, inst
}
