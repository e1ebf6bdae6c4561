//go:build unix

package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver, to read the database behind the gateway's back

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// TestCrashUnderLoadKeepsLedgerConsistent runs the real caddy binary (built
// from ./internal/testcaddy) as a child process, loads it with concurrent
// chat requests (JSON and streams) and balance top-ups, and SIGKILLs it in
// the middle of the load. It then reads the SQLite file directly and checks
// what the ledger writer promises after a crash: the database is intact, for
// every account balance == SUM(ledger.amount) and the balance_after chain
// holds, no request was charged twice or charged without having been sent,
// and every top-up the admin API confirmed survived. It restarts the binary
// on the same database, checks that the admin API shows the same balances
// and that new requests are served and billed, then stops it gracefully
// (SIGINT) under load and checks that no ledger row was lost: every request
// that completed with 200 has its row.
//
// Each chat request uses a unique model name (priced by the glob mock-*) that
// the mock echoes and the ledger stores, so rows are matched to requests one
// by one.
func TestCrashUnderLoadKeepsLedgerConsistent(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: builds a real caddy binary and kills it under load (about 15 s)")
	}
	began := time.Now()
	dir := t.TempDir()
	bin := processCaddy(t)

	mock := gwtest.NewMockProvider(t)
	mock.SetRecording(false)
	// A short pause between SSE events keeps streams in flight when the
	// kill lands. Set before any request reaches the mock.
	mock.StreamDelay = time.Millisecond
	if mock.Usage.Prompt != 12 || mock.Usage.Completion != 5 || mock.Usage.Cached != 0 {
		t.Fatalf("the mock's default usage changed to %+v; update crashCostNano", mock.Usage)
	}

	dbPath := filepath.Join(dir, "gateway.db")
	accounts := []string{"crash-a", "crash-b", "crash-c"}

	// --- phase 1: load, then SIGKILL -------------------------------------
	p1 := crashStart(t, bin, dir, "run1", dbPath, mock.URL)
	keys := map[string]string{}
	for _, a := range accounts {
		p1.mustAdmin(t, "POST", "/ai-gateway/accounts", map[string]string{"id": a, "name": a}, http.StatusCreated, nil)
		p1.mustAdmin(t, "POST", "/ai-gateway/accounts/"+a+"/balance",
			map[string]string{"amount": crashInitialTopUp, "note": crashInitialNote}, http.StatusOK, nil)
		var k struct {
			Key string `json:"key"`
		}
		p1.mustAdmin(t, "POST", "/ai-gateway/keys", map[string]string{"account": a, "name": a + "-key"}, http.StatusCreated, &k)
		if !strings.HasPrefix(k.Key, "sk-") {
			t.Fatalf("key for %s: got %q", a, k.Key)
		}
		keys[a] = k.Key
	}

	load1 := crashStartLoad(p1, "crash", accounts, keys, 16)
	time.Sleep(2 * time.Second)
	load1.expectErrors.Store(true)
	inFlight := load1.started.Load() - load1.finished.Load()
	p1.signal(t, syscall.SIGKILL)
	p1.waitExit(t, 10*time.Second)
	load1.stop.Store(true)
	load1.wait()
	ok1, cut1, topOK1, topCut1 := load1.results(t)
	t.Logf("phase 1 latency: %s", load1.latency())
	t.Logf("phase 1: %d chat requests succeeded, %d cut by the kill (%d were in flight at the kill); %d top-ups confirmed, %d cut",
		len(ok1), len(cut1), inFlight, len(topOK1), len(topCut1))
	if len(ok1) == 0 {
		t.Fatalf("no request succeeded before the kill")
	}

	db1 := crashReadDB(t, dbPath)
	db1.checkInvariants(t, "after SIGKILL")
	rows1 := db1.usageByPrefix("mock-crash-")
	if len(rows1) == 0 {
		t.Errorf("after SIGKILL: no usage rows in the ledger, though %d requests succeeded", len(ok1))
	}
	if len(rows1) > len(ok1)+len(cut1) {
		t.Errorf("after SIGKILL: %d usage rows, more than the %d requests that succeeded plus the %d cut by the kill",
			len(rows1), len(ok1), len(cut1))
	}
	lostAtCrash := 0
	for model, row := range rows1 {
		acct, isOK := ok1[model]
		if !isOK {
			acct = cut1[model]
		}
		if acct == "" {
			t.Errorf("after SIGKILL: usage row for %s, a request the clients never saw succeed or be cut", model)
		} else if row.account != acct {
			t.Errorf("after SIGKILL: usage row for %s charged to %s, the request used the key of %s", model, row.account, acct)
		}
	}
	for model := range ok1 {
		if _, ok := rows1[model]; !ok {
			lostAtCrash++
		}
	}
	// With durable billing (the default) an answer completes only once its
	// ledger row is committed, so no request the clients saw succeed may
	// be missing after the kill.
	t.Logf("after SIGKILL: %d usage rows committed; %d of the %d succeeded requests have no row; %d rows belong to requests cut by the kill",
		len(rows1), lostAtCrash, len(ok1), len(rows1)-(len(ok1)-lostAtCrash))
	if lostAtCrash > 0 {
		t.Errorf("after SIGKILL: %d requests completed at the client have no ledger row, with durable billing on", lostAtCrash)
	}
	for note, acct := range topOK1 {
		if got, ok := db1.adjustments[note]; !ok {
			t.Errorf("after SIGKILL: top-up %q of %s was confirmed by the admin API (200) but is not in the ledger", note, acct)
		} else if got != acct {
			t.Errorf("after SIGKILL: top-up %q is on %s, want %s", note, got, acct)
		}
	}
	for note := range db1.adjustments {
		if note == crashInitialNote {
			continue
		}
		if _, ok := topOK1[note]; !ok {
			if _, ok := topCut1[note]; !ok {
				t.Errorf("after SIGKILL: adjustment %q in the ledger that no client sent", note)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// --- phase 2: restart on the same database ---------------------------
	p2 := crashStart(t, bin, dir, "run2", dbPath, mock.URL)
	for _, a := range accounts {
		if got := p2.balance(t, a); got != db1.balances[a] {
			t.Errorf("after restart: admin API shows balance %d for %s, the database holds %d", got, a, db1.balances[a])
		}
	}

	// A few sequential requests per account, checked through the admin API
	// (the usage endpoint waits for the ledger writer).
	load2 := crashNewLoad(p2, "after", accounts, keys)
	for _, a := range accounts {
		before := p2.usage(t, a)
		balBefore := p2.balance(t, a)
		for mode := range 3 {
			model := load2.nextModel()
			if err := load2.chat(context.Background(), keys[a], model, mode); err != nil {
				t.Fatalf("after restart: request %s (mode %d) for %s: %v", model, mode, a, err)
			}
			load2.record(model, a, nil)
		}
		after := p2.usage(t, a)
		if after.Requests != before.Requests+3 || after.CostNano != before.CostNano+3*crashCostNano {
			t.Errorf("after restart: usage of %s went from %+v to %+v, want 3 more requests costing %d nano",
				a, before, after, 3*crashCostNano)
		}
		if got := p2.balance(t, a); got != balBefore-3*crashCostNano {
			t.Errorf("after restart: balance of %s went from %d to %d, want %d", a, balBefore, got, balBefore-3*crashCostNano)
		}
		if before.Requests != int64(len(db1.usageByAccount(a))) {
			t.Errorf("after restart: usage of %s counts %d requests, the database had %d rows", a, before.Requests, len(db1.usageByAccount(a)))
		}
	}

	// Concurrent load, then a graceful stop in the middle of it.
	load2.run(8)
	time.Sleep(time.Second)
	load2.expectErrors.Store(true)
	p2.signal(t, syscall.SIGINT)
	p2.waitExit(t, 60*time.Second)
	load2.stop.Store(true)
	load2.wait()
	if err := p2.exitErr(); err != nil {
		t.Errorf("after SIGINT: caddy exited with %v, want a clean exit", err)
	}
	ok2, cut2, topOK2, topCut2 := load2.results(t)
	t.Logf("phase 2 latency: %s", load2.latency())
	t.Logf("phase 2: %d chat requests succeeded, %d failed during the graceful stop; %d top-ups confirmed, %d failed",
		len(ok2), len(cut2), len(topOK2), len(topCut2))

	db2 := crashReadDB(t, dbPath)
	db2.checkInvariants(t, "after graceful stop")
	rows2 := db2.usageByPrefix("mock-after-")
	for model, acct := range ok2 {
		row, ok := rows2[model]
		switch {
		case !ok:
			t.Errorf("after graceful stop: request %s of %s completed with 200 but has no ledger row", model, acct)
		case row.account != acct:
			t.Errorf("after graceful stop: request %s charged to %s, want %s", model, row.account, acct)
		}
	}
	extra := 0
	for model := range rows2 {
		if _, ok := ok2[model]; ok {
			continue
		}
		if _, ok := cut2[model]; ok {
			extra++
			t.Logf("after graceful stop: request %s failed on the client but has a ledger row", model)
			continue
		}
		t.Errorf("after graceful stop: usage row for %s, a request no client sent", model)
	}
	if len(rows2) != len(ok2) {
		t.Errorf("after graceful stop: %d usage rows for the %d requests that succeeded after the restart (%d rows of failed requests)",
			len(rows2), len(ok2), extra)
	}
	// The rows committed before the crash are untouched.
	crashRows := db2.usageByPrefix("mock-crash-")
	if len(crashRows) != len(rows1) {
		t.Errorf("after graceful stop: %d rows of phase 1, the database had %d after the crash", len(crashRows), len(rows1))
	}
	for note, acct := range topOK2 {
		if got, ok := db2.adjustments[note]; !ok || got != acct {
			t.Errorf("after graceful stop: top-up %q of %s was confirmed but is not in the ledger (found on %q)", note, acct, got)
		}
	}
	t.Logf("done in %s", time.Since(began).Round(100*time.Millisecond))
}

const (
	crashInitialTopUp = "1000.00"
	crashInitialNote  = "crash test initial top-up"
	crashTopUp        = "0.01"
	// crashCostNano is what one request costs: the mock reports 12 prompt
	// and 5 completion tokens, priced at 1.00 and 2.00 per 1M tokens:
	// 12×1000 + 5×2000 nano-units.
	crashCostNano = 22000
)

// crashBuildCaddy builds ./internal/testcaddy into dir with `go build`, which
// reuses the build cache of the tests (a few seconds when it is warm).
func crashBuildCaddy(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			goBin = filepath.Join(root, "bin", "go")
		} else {
			t.Fatalf("the go command is needed to build caddy: %v", err)
		}
	}
	bin := filepath.Join(dir, "caddy")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, "github.com/metask/caddy-ai-gateway/internal/testcaddy")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./internal/testcaddy: %v\n%s", err, out)
	}
	t.Logf("built caddy in %s", time.Since(start).Round(100*time.Millisecond))
	return bin
}

// crashCaddy is one caddy child process.
type crashCaddy struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	admin   string // http://127.0.0.1:port
	site    string // http://127.0.0.1:port
	client  *http.Client

	done    chan struct{}
	waitErr error // set before done is closed
}

// crashStart starts caddy on fresh loopback ports with the gateway's
// database at dbPath and waits until the admin endpoint and the site answer.
// A port taken by someone else between picking and binding is retried.
func crashStart(t *testing.T, bin, dir, name, dbPath, upstream string) *crashCaddy {
	t.Helper()
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		p, err := crashTryStart(t, bin, dir, fmt.Sprintf("%s-%d", name, attempt), dbPath, upstream)
		if err == nil {
			return p
		}
		lastErr = err
		t.Logf("starting caddy %s (attempt %d): %v", name, attempt, err)
	}
	t.Fatalf("caddy %s did not start: %v", name, lastErr)
	return nil
}

// crashTryStart makes one attempt of crashStart.
func crashTryStart(t *testing.T, bin, dir, name, dbPath, upstream string) (*crashCaddy, error) {
	adminPort, sitePort := gwtest.FreePort(t), gwtest.FreePort(t)
	for sitePort == adminPort {
		sitePort = gwtest.FreePort(t)
	}
	home := filepath.Join(dir, "home-"+name)
	cfgPath := filepath.Join(dir, "Caddyfile-"+name)
	if err := os.WriteFile(cfgPath, []byte(crashCaddyfile(adminPort, sitePort, home, dbPath, upstream)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &crashCaddy{
		name:    name,
		logPath: filepath.Join(dir, "caddy-"+name+".log"),
		admin:   fmt.Sprintf("http://127.0.0.1:%d", adminPort),
		site:    fmt.Sprintf("http://127.0.0.1:%d", sitePort),
		client:  &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableCompression: true}},
		done:    make(chan struct{}),
	}
	p.launch(t, bin, cfgPath, home)
	if err := p.waitReady(30 * time.Second); err != nil {
		return nil, err
	}
	return p, nil
}

// crashCaddyfile is the config of a crash test caddy: the gateway in front
// of upstream, with its database at dbPath and Caddy's storage under home.
func crashCaddyfile(adminPort, sitePort int, home, dbPath, upstream string) string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	auto_https off
	storage file_system %s
	ai_gateway {
		database %s
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	api_key_auth
	balance_guard {
		price mock-* input 1.00 output 2.00
		unknown_model reject
	}
	reverse_proxy %s {
		header_up Authorization "Bearer provider-key"
	}
}
`, adminPort, filepath.Join(home, "storage"), dbPath, sitePort, strings.TrimPrefix(upstream, "http://"))
}

// launch starts the child with its output in p.logPath, and makes the
// test's cleanup kill it if it still runs and show its output if the test
// failed.
func (p *crashCaddy) launch(t *testing.T, bin, cfgPath, home string) {
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the child has its own descriptor

	p.cmd = exec.Command(bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(),
		"HOME="+home, "XDG_DATA_HOME="+filepath.Join(home, "data"), "XDG_CONFIG_HOME="+filepath.Join(home, "config"))
	p.cmd.Stdout = logFile
	p.cmd.Stderr = logFile
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.running() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			const maxLog = 64 << 10
			if len(b) > maxLog {
				b = append([]byte("…\n"), b[len(b)-maxLog:]...)
			}
			t.Logf("caddy %s output (%s):\n%s", p.name, p.logPath, b)
		}
	})
}

// waitReady waits until the admin endpoint and the site answer; if the
// child exits first, or they do not answer within timeout (the child is
// then killed), it says why.
func (p *crashCaddy) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, url := range []string{p.admin + "/config/", p.site + "/"} {
		for {
			resp, err := p.client.Get(url)
			if err == nil {
				resp.Body.Close()
				break
			}
			if !p.running() {
				b, _ := os.ReadFile(p.logPath)
				return fmt.Errorf("caddy exited during start (%v):\n%s", p.waitErr, b)
			}
			if time.Now().After(deadline) {
				_ = p.cmd.Process.Kill()
				<-p.done
				return fmt.Errorf("%s did not answer within 30s: %v", url, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func (p *crashCaddy) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *crashCaddy) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("sending %v to caddy %s: %v", sig, p.name, err)
	}
}

func (p *crashCaddy) waitExit(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("caddy %s did not exit within %s", p.name, timeout)
	}
}

// exitErr is the child's exit error (nil: exit status 0). Only after exit.
func (p *crashCaddy) exitErr() error {
	<-p.done
	return p.waitErr
}

// adminDo calls the admin API; safe from any goroutine.
func (p *crashCaddy) adminDo(method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, p.admin+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (p *crashCaddy) mustAdmin(t *testing.T, method, path string, body any, want int, out any) {
	t.Helper()
	status, b, err := p.adminDo(method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
}

func (p *crashCaddy) balance(t *testing.T, account string) int64 {
	t.Helper()
	var a struct {
		Balance *int64 `json:"balance_nano"`
	}
	p.mustAdmin(t, "GET", "/ai-gateway/accounts/"+account, nil, http.StatusOK, &a)
	if a.Balance == nil {
		t.Fatalf("GET account %s: no balance_nano", account)
	}
	return *a.Balance
}

type crashTotals struct {
	Requests int64 `json:"requests"`
	CostNano int64 `json:"cost_nano"`
}

func (p *crashCaddy) usage(t *testing.T, account string) crashTotals {
	t.Helper()
	var u struct {
		Totals []crashTotals `json:"totals"`
	}
	p.mustAdmin(t, "GET", "/ai-gateway/usage?account="+account, nil, http.StatusOK, &u)
	if len(u.Totals) != 1 {
		t.Fatalf("GET usage of %s: %d totals, want 1", account, len(u.Totals))
	}
	return u.Totals[0]
}

// crashLoad is the client side of one phase: chat requests with unique
// model names and top-ups with unique notes, classified by outcome.
type crashLoad struct {
	p        *crashCaddy
	phase    string
	accounts []string
	keys     map[string]string
	client   *http.Client

	seq        atomic.Int64
	started    atomic.Int64
	finished   atomic.Int64
	latencySum atomic.Int64 // ns, of finished chat requests
	latencyMax atomic.Int64 // ns
	stop       atomic.Bool
	// expectErrors: from now on failures are the kill's or the stop's
	// doing; a goroutine whose request fails then stops.
	expectErrors atomic.Bool
	wg           sync.WaitGroup

	mu       sync.Mutex
	ok       map[string]string // model → account: 200 with a complete, valid body
	cut      map[string]string // model → account: failed once expectErrors was set
	topOK    map[string]string // note → account: top-up answered 200
	topCut   map[string]string // note → account: top-up failed once expectErrors was set
	problems []string          // unexpected outcomes
	cutErrs  []string          // a few errors of cut requests, for the log
}

func crashNewLoad(p *crashCaddy, phase string, accounts []string, keys map[string]string) *crashLoad {
	return &crashLoad{
		p: p, phase: phase, accounts: accounts, keys: keys,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConns: 64, MaxIdleConnsPerHost: 64, DisableCompression: true,
		}},
		ok: map[string]string{}, cut: map[string]string{},
		topOK: map[string]string{}, topCut: map[string]string{},
	}
}

func crashStartLoad(p *crashCaddy, phase string, accounts []string, keys map[string]string, workers int) *crashLoad {
	l := crashNewLoad(p, phase, accounts, keys)
	l.run(workers)
	return l
}

func (l *crashLoad) nextModel() string {
	return fmt.Sprintf("mock-%s-%07d", l.phase, l.seq.Add(1))
}

// run starts workers chat goroutines and one top-up goroutine.
func (l *crashLoad) run(workers int) {
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; !l.stop.Load(); i++ {
				acct := l.accounts[(w+i)%len(l.accounts)]
				model := l.nextModel()
				l.started.Add(1)
				t0 := time.Now()
				err := l.chat(context.Background(), l.keys[acct], model, (w+i)%3)
				l.observe(time.Since(t0))
				l.finished.Add(1)
				l.record(model, acct, err)
				if err != nil && l.expectErrors.Load() {
					return // the server is going away
				}
			}
		}()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for i := 0; !l.stop.Load(); i++ {
			acct := l.accounts[i%len(l.accounts)]
			note := fmt.Sprintf("%s-topup-%05d", l.phase, i)
			status, b, err := l.p.adminDo("POST", "/ai-gateway/accounts/"+acct+"/balance",
				map[string]string{"amount": crashTopUp, "note": note})
			l.mu.Lock()
			switch {
			case err == nil && status == http.StatusOK:
				l.topOK[note] = acct
			case l.expectErrors.Load():
				l.topCut[note] = acct
			default:
				l.problems = append(l.problems, fmt.Sprintf("top-up %s of %s: status %d, err %v: %s", note, acct, status, err, b))
			}
			l.mu.Unlock()
			if (err != nil || status != http.StatusOK) && l.expectErrors.Load() {
				return
			}
			time.Sleep(25 * time.Millisecond)
		}
	}()
}

func (l *crashLoad) wait() { l.wg.Wait() }

func (l *crashLoad) observe(d time.Duration) {
	l.latencySum.Add(int64(d))
	for {
		m := l.latencyMax.Load()
		if int64(d) <= m || l.latencyMax.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// latency summarises the chat requests' latency for the log.
func (l *crashLoad) latency() string {
	n := l.finished.Load()
	if n == 0 {
		return "no requests"
	}
	return fmt.Sprintf("mean %s, max %s over %d requests",
		time.Duration(l.latencySum.Load()/n).Round(time.Microsecond), time.Duration(l.latencyMax.Load()).Round(time.Microsecond), n)
}

// record files the outcome of one chat request.
func (l *crashLoad) record(model, acct string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var se *crashStatusError
	switch {
	case err == nil:
		l.ok[model] = acct
	case errors.As(err, &se) && !l.expectErrors.Load():
		l.problems = append(l.problems, fmt.Sprintf("%s (%s): %v", model, acct, err))
	case l.expectErrors.Load():
		l.cut[model] = acct
		if len(l.cutErrs) < 3 {
			l.cutErrs = append(l.cutErrs, fmt.Sprintf("%s: %v", model, err))
		}
	default:
		l.problems = append(l.problems, fmt.Sprintf("%s (%s): %v", model, acct, err))
	}
}

// results fails the test on unexpected outcomes and returns the
// classification.
func (l *crashLoad) results(t *testing.T) (ok, cut, topOK, topCut map[string]string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.problems); n > 0 {
		shown := l.problems[:min(n, 10)]
		t.Errorf("phase %s: %d requests failed before the kill/stop:\n%s", l.phase, n, strings.Join(shown, "\n"))
	}
	if len(l.cutErrs) > 0 {
		t.Logf("phase %s: failures after the kill/stop, e.g.:\n%s", l.phase, strings.Join(l.cutErrs, "\n"))
	}
	return l.ok, l.cut, l.topOK, l.topCut
}

// crashStatusError is a complete answer with a status other than 200.
type crashStatusError struct {
	status int
	body   string
}

func (e *crashStatusError) Error() string { return fmt.Sprintf("status %d: %s", e.status, e.body) }

// chat sends one chat completion: mode 0 JSON, 1 a stream asking for usage,
// 2 a stream without (the gateway asks for it). It returns nil only for a
// 200 answer with a complete body for the right model.
func (l *crashLoad) chat(ctx context.Context, key, model string, mode int) error {
	body := map[string]any{
		"model":    model,
		"messages": []any{map[string]any{"role": "user", "content": "Hello from the crash test"}},
	}
	switch mode {
	case 1:
		body["stream"] = true
		body["stream_options"] = map[string]any{"include_usage": true}
	case 2:
		body["stream"] = true
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "POST", l.p.site+"/v1/chat/completions", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := l.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the answer (status %d): %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return &crashStatusError{status: resp.StatusCode, body: string(out)}
	}
	if mode == 0 {
		var c struct {
			Model string `json:"model"`
			Usage struct {
				Prompt int `json:"prompt_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(out, &c); err != nil {
			return fmt.Errorf("decoding the answer: %w: %s", err, out)
		}
		if c.Model != model || c.Usage.Prompt == 0 {
			return fmt.Errorf("unexpected answer: %s", out)
		}
		return nil
	}
	s := string(out)
	if !strings.Contains(s, `"model":"`+model+`"`) || !strings.HasSuffix(strings.TrimSpace(s), "data: [DONE]") {
		return fmt.Errorf("incomplete stream: %q", s)
	}
	if mode == 1 && !strings.Contains(s, `"usage"`) {
		return fmt.Errorf("stream without the usage chunk it asked for: %q", s)
	}
	return nil
}

// crashRow is a usage row of the ledger.
type crashRow struct {
	account   string
	amount    int64
	status    int64
	estimated bool
}

// crashDB is what the database file holds.
type crashDB struct {
	balances    map[string]int64    // accounts.balance
	sums        map[string]int64    // SUM(ledger.amount) per account
	chainErrs   []string            // balance_after chain breaks
	usage       map[string]crashRow // model → usage row
	duplicates  map[string]int      // models with more than one usage row
	adjustments map[string]string   // note → account (kind adjustment)
	badRows     []string            // usage rows that are not a plain 22000-nano charge
	ledgerRows  int
}

// crashReadDB opens the database read-write (so that SQLite recovers the
// WAL of a killed writer), checks its integrity and reads it.
func crashReadDB(t *testing.T, path string) *crashDB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	crashIntegrityCheck(t, db, path)
	d := &crashDB{
		balances: map[string]int64{}, sums: map[string]int64{}, usage: map[string]crashRow{},
		duplicates: map[string]int{}, adjustments: map[string]string{},
	}
	d.readAccounts(t, db)
	d.readLedger(t, db)
	return d
}

// crashIntegrityCheck fails the test unless PRAGMA integrity_check says ok.
func crashIntegrityCheck(t *testing.T, db *sql.DB, path string) {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `PRAGMA integrity_check`)
	if err != nil {
		t.Fatalf("integrity_check: %v", err)
	}
	var res []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatalf("integrity_check: %v", err)
		}
		res = append(res, s)
	}
	rows.Close()
	if len(res) != 1 || res[0] != "ok" {
		t.Fatalf("integrity_check of %s: %q", path, res)
	}
}

// readAccounts reads every account's balance.
func (d *crashDB) readAccounts(t *testing.T, db *sql.DB) {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT id, balance FROM accounts`)
	if err != nil {
		t.Fatalf("reading accounts: %v", err)
	}
	for rows.Next() {
		var id string
		var bal int64
		if err := rows.Scan(&id, &bal); err != nil {
			t.Fatalf("reading accounts: %v", err)
		}
		d.balances[id] = bal
	}
	rows.Close()
}

// crashLedgerRow is a row of the ledger table as crashReadDB reads it.
type crashLedgerRow struct {
	id, amount, after, status, estimated int64
	acct, kind, model, note              string
}

// readLedger reads the ledger in order, row by row.
func (d *crashDB) readLedger(t *testing.T, db *sql.DB) {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT id, account_id, kind, amount, balance_after,
		COALESCE(model, ''), COALESCE(note, ''), COALESCE(status, 0), estimated FROM ledger ORDER BY id`)
	if err != nil {
		t.Fatalf("reading ledger: %v", err)
	}
	for rows.Next() {
		var r crashLedgerRow
		if err := rows.Scan(&r.id, &r.acct, &r.kind, &r.amount, &r.after, &r.model, &r.note, &r.status, &r.estimated); err != nil {
			t.Fatalf("reading ledger: %v", err)
		}
		d.add(r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading ledger: %v", err)
	}
	rows.Close()
}

// add files one ledger row: the running sum and balance_after chain of its
// account, and the row by kind (usage by model, adjustments by note), with
// duplicates and unexpected rows noted.
func (d *crashDB) add(r crashLedgerRow) {
	d.ledgerRows++
	d.sums[r.acct] += r.amount
	if r.after != d.sums[r.acct] {
		d.chainErrs = append(d.chainErrs, fmt.Sprintf("row %d (%s, %s, amount %d): balance_after %d, running sum %d",
			r.id, r.acct, r.kind, r.amount, r.after, d.sums[r.acct]))
	}
	switch r.kind {
	case "usage":
		if _, dup := d.usage[r.model]; dup {
			d.duplicates[r.model]++
		}
		d.usage[r.model] = crashRow{account: r.acct, amount: r.amount, status: r.status, estimated: r.estimated != 0}
		if r.amount != -crashCostNano || r.status != 200 || r.estimated != 0 {
			d.badRows = append(d.badRows, fmt.Sprintf("row %d (%s, %s): amount %d, status %d, estimated %d, note %q",
				r.id, r.acct, r.model, r.amount, r.status, r.estimated, r.note))
		}
	case "adjustment":
		if r.note != crashInitialNote {
			if _, dup := d.adjustments[r.note]; dup {
				d.duplicates["adjustment "+r.note]++
			}
		}
		d.adjustments[r.note] = r.acct
	default:
		d.badRows = append(d.badRows, fmt.Sprintf("row %d: unknown kind %q", r.id, r.kind))
	}
}

// checkInvariants reports broken money invariants.
func (d *crashDB) checkInvariants(t *testing.T, when string) {
	t.Helper()
	if len(d.balances) == 0 {
		t.Errorf("%s: no accounts in the database", when)
	}
	ids := make([]string, 0, len(d.balances))
	for id := range d.balances {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if d.balances[id] != d.sums[id] {
			t.Errorf("%s: account %s: balance %d != SUM(ledger.amount) %d (difference %d)",
				when, id, d.balances[id], d.sums[id], d.balances[id]-d.sums[id])
		}
	}
	for id := range d.sums {
		if _, ok := d.balances[id]; !ok {
			t.Errorf("%s: ledger rows for unknown account %s", when, id)
		}
	}
	if n := len(d.chainErrs); n > 0 {
		t.Errorf("%s: %d ledger rows break the balance_after chain, e.g.:\n%s", when, n, strings.Join(d.chainErrs[:min(n, 10)], "\n"))
	}
	if len(d.duplicates) > 0 {
		t.Errorf("%s: requests or top-ups with more than one ledger row: %v", when, d.duplicates)
	}
	if n := len(d.badRows); n > 0 {
		t.Errorf("%s: %d unexpected ledger rows, e.g.:\n%s", when, n, strings.Join(d.badRows[:min(n, 10)], "\n"))
	}
}

// usageByPrefix returns the usage rows whose model starts with prefix.
func (d *crashDB) usageByPrefix(prefix string) map[string]crashRow {
	out := map[string]crashRow{}
	for model, r := range d.usage {
		if strings.HasPrefix(model, prefix) {
			out[model] = r
		}
	}
	return out
}

func (d *crashDB) usageByAccount(acct string) map[string]crashRow {
	out := map[string]crashRow{}
	for model, r := range d.usage {
		if r.account == acct {
			out[model] = r
		}
	}
	return out
}
