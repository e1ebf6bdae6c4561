//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// goBuild builds pkg into out with the go command of PATH.
func goBuild(ctx context.Context, out, pkg string) error {
	t0 := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	logf("built %s in %s", filepath.Base(out), time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// mockProc is bench/mockprovider, on a loopback port it picked itself.
type mockProc struct {
	cmd  *exec.Cmd
	addr string
}

func startMock(bin, dir string, delay time.Duration) (*mockProc, error) {
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0",
		"-stream-delay", delay.String(), "-first-chunk-delay", delay.String(), "-stream-chunks", "3")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	m := &mockProc{cmd: cmd}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if addr, ok := strings.CutPrefix(sc.Text(), "mockprovider listening on "); ok {
			m.addr = addr
			break
		}
	}
	if m.addr == "" {
		m.kill()
		return nil, errors.New("mockprovider did not say where it listens")
	}
	go io.Copy(io.Discard, stderr) //nolint:errcheck // drain it
	return m, nil
}

func (m *mockProc) kill() {
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
}

// gateway is the caddy child: the same ports, Caddyfile and database
// across restarts.
type gateway struct {
	c          config
	bin        string
	dbPath     string
	upstream   string
	adminPort  int
	sitePort   int
	admin      string
	site       string
	home       string
	client     *http.Client
	cfgVariant int

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	starts  int
}

func newGateway(c config, upstream string) (*gateway, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	return &gateway{
		c: c, bin: c.caddyBin, dbPath: filepath.Join(c.dbDir, "gateway.db"), upstream: upstream,
		adminPort: ports[0], sitePort: ports[1],
		admin:  fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		site:   fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		home:   filepath.Join(c.workDir, "home"),
		client: &http.Client{Timeout: 30 * time.Second},
	}, nil
}

// freePorts picks n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// caddyfile is the gateway's config. variant changes key_cache_size, so
// that consecutive valid reloads differ; badPrice makes it invalid.
func (g *gateway) caddyfile(variant int, badPrice bool) string {
	price := "price mock-* input 1.00 output 2.00"
	if badPrice {
		price = "price mock-* input 1.0x output 2.00"
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	auto_https off
	storage file_system %s
	ai_gateway {
		database %s
		key_cache_size %d
		durable_billing %s
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	api_key_auth
	balance_guard {
		%s
		unknown_model reject
	}
	reverse_proxy %s {
		header_up Authorization "Bearer provider-key"
	}
}
`, g.adminPort, filepath.Join(g.home, "storage"), g.dbPath, 1000+variant%2*1000, onOff(g.c.durable), g.sitePort, price, g.upstream)
}

// start starts caddy with the current valid Caddyfile and waits until it
// serves; a start that fails (the ports of the killed one not free yet) is
// retried.
func (g *gateway) start() error {
	var last error
	for attempt := range 10 {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
		if last = g.tryStart(); last == nil {
			return nil
		}
		logf("starting caddy (attempt %d): %v", attempt+1, last)
	}
	return fmt.Errorf("caddy did not start: %w", last)
}

func (g *gateway) tryStart() error {
	g.mu.Lock()
	g.starts++
	n := g.starts
	g.mu.Unlock()
	cfg := filepath.Join(g.c.workDir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(g.caddyfile(g.cfgVariant, false)), 0o600); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(g.c.workDir, fmt.Sprintf("caddy-%02d.log", n)))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(g.bin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+g.home,
		"XDG_DATA_HOME="+filepath.Join(g.home, "data"), "XDG_CONFIG_HOME="+filepath.Join(g.home, "config"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	g.mu.Lock()
	g.cmd, g.done = cmd, done
	g.mu.Unlock()
	go func() {
		err := cmd.Wait()
		g.mu.Lock()
		g.waitErr = err
		g.mu.Unlock()
		close(done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for _, url := range []string{g.admin + "/config/", g.site + "/"} {
		for {
			resp, err := g.client.Get(url)
			if err == nil {
				resp.Body.Close()
				break
			}
			select {
			case <-done:
				return fmt.Errorf("caddy exited during start (%v); see %s", g.waitErr, logFile.Name())
			default:
			}
			if time.Now().After(deadline) {
				g.kill()
				return fmt.Errorf("%s did not answer within 30s", url)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// sigkill kills caddy with SIGKILL and waits until it is gone.
func (g *gateway) sigkill() {
	g.mu.Lock()
	cmd, done := g.cmd, g.done
	g.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// kill is the cleanup: SIGKILL if it still runs.
func (g *gateway) kill() {
	g.mu.Lock()
	cmd, done := g.cmd, g.done
	g.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
	default:
		_ = cmd.Process.Kill()
		<-done
	}
}

// stop stops caddy with SIGINT and returns its exit error (nil: status 0).
func (g *gateway) stop(timeout time.Duration) error {
	g.mu.Lock()
	cmd, done := g.cmd, g.done
	g.mu.Unlock()
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(timeout):
		g.kill()
		return fmt.Errorf("did not exit within %s of SIGINT (killed)", timeout)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waitErr
}

// adminDo calls the admin API with a JSON body (or raw bytes of ctype).
func (g *gateway) adminDo(method, path, ctype string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, g.admin+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (g *gateway) adminJSON(method, path string, in any, want int, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	status, resp, err := g.adminDo(method, path, "application/json", b)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if status != want {
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, path, status, want, resp)
	}
	if out != nil {
		return json.Unmarshal(resp, out)
	}
	return nil
}

// setupAccounts creates n accounts with 1000.00 each and a key each;
// it returns account → key.
func (g *gateway) setupAccounts(n int) (map[string]string, error) {
	keys := map[string]string{}
	for i := range n {
		a := fmt.Sprintf("soak-%d", i+1)
		if err := g.adminJSON("POST", "/ai-gateway/accounts", map[string]string{"id": a, "name": a}, http.StatusCreated, nil); err != nil {
			return nil, err
		}
		if err := g.adminJSON("POST", "/ai-gateway/accounts/"+a+"/balance",
			map[string]string{"amount": "1000.00", "note": "soak top-up"}, http.StatusOK, nil); err != nil {
			return nil, err
		}
		var k struct {
			Key string `json:"key"`
		}
		if err := g.adminJSON("POST", "/ai-gateway/keys", map[string]string{"account": a, "name": a + "-key"}, http.StatusCreated, &k); err != nil {
			return nil, err
		}
		keys[a] = k.Key
	}
	return keys, nil
}

// metrics scrapes the admin endpoint's /metrics and sums the series of
// each name asked for (over their labels).
func (g *gateway) metrics(names ...string) (map[string]float64, error) {
	status, b, err := g.adminDo("GET", "/metrics", "", nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: status %d", status)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, n := range names {
			rest, ok := strings.CutPrefix(line, n)
			if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
				continue
			}
			f := strings.Fields(rest[strings.LastIndex(rest, "}")+1:])
			if len(f) == 0 {
				continue
			}
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				out[n] += v
			}
		}
	}
	return out, nil
}
