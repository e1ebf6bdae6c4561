//go:build unix

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// Operational safety of the real binary, as an operator meets it: the
// process lock on the database, `caddy validate` / `caddy adapt` leaving the
// database alone, and the permissions of the files the gateway creates. The
// helpers of crash_test.go start and talk to the child processes.

// processBin is the caddy binary the tests of this file share: built once
// per package run (the first test that needs it builds it) into a
// directory TestMain removes.
var (
	processBinOnce sync.Once
	processBinDir  string
	processBinPath string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if processBinDir != "" {
		os.RemoveAll(processBinDir)
	}
	os.Exit(code)
}

// processCaddy returns the shared caddy binary, building it on first use.
func processCaddy(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped in -short mode: builds and runs a real caddy binary")
	}
	processBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ai-gateway-e2e-bin-")
		if err != nil {
			t.Fatal(err)
		}
		processBinDir = dir
		processBinPath = crashBuildCaddy(t, dir) // t.Fatalf on failure leaves processBinPath empty
	})
	if processBinPath == "" {
		t.Fatal("building caddy failed (see the first test that needed it)")
	}
	return processBinPath
}

// processChild starts caddy with the crash tests' Caddyfile on fresh ports
// without waiting for it to serve, for a start that is expected to fail.
func processChild(t *testing.T, bin, dir, name, dbPath, upstream string) *crashCaddy {
	t.Helper()
	adminPort, sitePort := gwtest.FreePort(t), gwtest.FreePort(t)
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
		client:  &http.Client{Timeout: 10 * time.Second},
		done:    make(chan struct{}),
	}
	p.launch(t, bin, cfgPath, home)
	return p
}

// processNewKey creates an account with money and a key through p's admin
// API and returns the key's id and secret.
func processNewKey(t *testing.T, p *crashCaddy, account string) (id, secret string) {
	t.Helper()
	p.mustAdmin(t, "POST", "/ai-gateway/accounts", map[string]string{"id": account, "name": account}, http.StatusCreated, nil)
	p.mustAdmin(t, "POST", "/ai-gateway/accounts/"+account+"/balance",
		map[string]string{"amount": "10.00", "note": "process test"}, http.StatusOK, nil)
	var k struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	p.mustAdmin(t, "POST", "/ai-gateway/keys", map[string]string{"account": account, "name": account + "-key"}, http.StatusCreated, &k)
	if k.ID == "" || !strings.HasPrefix(k.Key, "sk-") {
		t.Fatalf("POST /ai-gateway/keys for %s: id %q, key %q", account, k.ID, k.Key)
	}
	return k.ID, k.Key
}

// TestSecondProcessOnSameDatabaseFails starts a second caddy on the
// database a running one holds. The second must exit non-zero at once,
// saying which database and that another process has it; the first must go
// on serving from the store it owns: a key deleted through its admin API is
// refused by its site right away (the second process did not open, cache or
// write anything).
func TestSecondProcessOnSameDatabaseFails(t *testing.T) {
	bin := processCaddy(t)
	dir := t.TempDir()
	mock := gwtest.NewMockProvider(t)
	mock.SetRecording(false)
	dbPath := filepath.Join(dir, "gateway.db")

	p1 := crashStart(t, bin, dir, "first", dbPath, mock.URL)
	keyID, key := processNewKey(t, p1, "proc-a")
	load := crashNewLoad(p1, "proc", []string{"proc-a"}, map[string]string{"proc-a": key})
	if err := load.chat(t.Context(), key, load.nextModel(), 0); err != nil {
		t.Fatalf("first process, before the second starts: %v", err)
	}

	p2 := processChild(t, bin, dir, "second", dbPath, mock.URL)
	p2.waitExit(t, 30*time.Second)
	err := p2.exitErr()
	out, _ := os.ReadFile(p2.logPath)
	if err == nil {
		t.Fatalf("second caddy on %s exited with status 0, want a failure; output:\n%s", dbPath, out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("second caddy: %v, want a non-zero exit status; output:\n%s", err, out)
	}
	for _, want := range []string{dbPath, "in use by another process"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("second caddy's output does not contain %q:\n%s", want, out)
		}
	}
	t.Logf("second caddy: %v; its error: %s", err, processErrorLine(string(out)))

	// The first process still owns the database and serves.
	if !p1.running() {
		t.Fatalf("the first caddy exited when the second one started")
	}
	if err := load.chat(t.Context(), key, load.nextModel(), 1); err != nil {
		t.Fatalf("first process, after the second failed: %v", err)
	}
	p1.mustAdmin(t, "DELETE", "/ai-gateway/keys/"+keyID, nil, http.StatusOK, nil)
	err = load.chat(t.Context(), key, load.nextModel(), 0)
	var se *crashStatusError
	if !errors.As(err, &se) || se.status != http.StatusUnauthorized {
		t.Fatalf("first process, a request with the key deleted through it: %v, want status 401", err)
	}
	// And it can still create and use new keys: its store is writable.
	_, key2 := processNewKey(t, p1, "proc-b")
	if err := load.chat(t.Context(), key2, load.nextModel(), 0); err != nil {
		t.Fatalf("first process, a new key after the second failed: %v", err)
	}
	p1.signal(t, syscall.SIGINT)
	p1.waitExit(t, 30*time.Second)
	if err := p1.exitErr(); err != nil {
		t.Errorf("first caddy exited with %v after SIGINT, want a clean exit", err)
	}
}

// TestValidateAndAdaptLeaveTheDatabaseAlone runs `caddy adapt` and
// `caddy validate` on a Caddyfile whose ai_gateway database does not exist:
// both succeed and neither creates the database, its -wal and -shm files or
// its .lock file (nor anything else in its directory). Then it starts caddy
// on that database and runs `caddy validate` on the same Caddyfile while the
// running process holds the lock: validating must not need the database.
//
// Two configs: the gateway's handlers without balance_guard, and the full
// gateway (api_key_auth + balance_guard), the config operators run.
func TestValidateAndAdaptLeaveTheDatabaseAlone(t *testing.T) {
	bin := processCaddy(t)
	t.Run("api_key_auth", func(t *testing.T) {
		processValidateCase(t, bin, processAuthOnlyCaddyfile)
	})
	t.Run("balance_guard", func(t *testing.T) {
		processValidateCase(t, bin, crashCaddyfile)
	})
}

// processValidateCase is one config of TestValidateAndAdaptLeaveTheDatabaseAlone.
func processValidateCase(t *testing.T, bin string, caddyfile func(adminPort, sitePort int, home, dbPath, upstream string) string) {
	dir := t.TempDir()
	dbDir := filepath.Join(dir, "db")
	if err := os.Mkdir(dbDir, 0o700); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dbDir, "gateway.db")
	home := filepath.Join(dir, "home-validate")
	cfgPath := filepath.Join(dir, "Caddyfile")
	cfg := caddyfile(gwtest.FreePort(t), gwtest.FreePort(t), home, dbPath, "http://127.0.0.1:9")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, sub := range []string{"adapt", "validate"} {
		out, err := processRun(t, bin, home, sub, "--config", cfgPath, "--adapter", "caddyfile")
		if err != nil {
			t.Errorf("caddy %s: %v\n%s", sub, err, out)
		}
		if sub == "adapt" && !strings.Contains(out, `"ai_gateway"`) {
			t.Errorf("caddy adapt: no ai_gateway app in its output:\n%s", out)
		}
		if left := processDirEntries(t, dbDir); len(left) > 0 {
			t.Errorf("after caddy %s: %s holds %v, want nothing (no database, -wal, -shm or .lock)", sub, dbDir, left)
		}
	}
	for _, suffix := range []string{"", "-wal", "-shm", ".lock"} {
		if _, err := os.Stat(dbPath + suffix); !os.IsNotExist(err) {
			t.Errorf("%s after adapt and validate: %v, want it absent", dbPath+suffix, err)
		}
	}

	// Validate while a running process (the full gateway) holds the database.
	mock := gwtest.NewMockProvider(t)
	mock.SetRecording(false)
	p := crashStart(t, bin, dir, "holder", dbPath, mock.URL)
	_, key := processNewKey(t, p, "validate-a")
	out, err := processRun(t, bin, home, "validate", "--config", cfgPath, "--adapter", "caddyfile")
	if err != nil {
		t.Errorf("caddy validate while another process holds %s: %v\n%s", dbPath, err, out)
	}
	if !p.running() {
		t.Fatalf("the running caddy exited during caddy validate")
	}
	load := crashNewLoad(p, "validate", []string{"validate-a"}, map[string]string{"validate-a": key})
	if err := load.chat(t.Context(), key, load.nextModel(), 0); err != nil {
		t.Errorf("the running caddy after caddy validate: %v", err)
	}
}

// processAuthOnlyCaddyfile is crashCaddyfile without balance_guard: the
// ai_gateway app, api_key_auth and the dashboard.
func processAuthOnlyCaddyfile(adminPort, sitePort int, home, dbPath, upstream string) string {
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
	handle_path /dashboard/* {
		ai_dashboard
	}
	api_key_auth
	reverse_proxy %s
}
`, adminPort, filepath.Join(home, "storage"), dbPath, sitePort, strings.TrimPrefix(upstream, "http://"))
}

// TestFilesPrivateUnderUmask022 starts caddy under umask 022 (which would
// leave new files world-readable) and checks that the database and the
// -wal and -shm files SQLite creates beside it, and the lock file, are 0600
// while it runs and has written.
func TestFilesPrivateUnderUmask022(t *testing.T) {
	bin := processCaddy(t)
	dir := t.TempDir()
	mock := gwtest.NewMockProvider(t)
	mock.SetRecording(false)
	dbPath := filepath.Join(dir, "gateway.db")

	// The child inherits the umask; no test of this package runs in
	// parallel, so changing the process's umask for the start is safe.
	old := syscall.Umask(0o022)
	p := crashStart(t, bin, dir, "umask", dbPath, mock.URL)
	syscall.Umask(old)

	_, key := processNewKey(t, p, "perm-a")
	load := crashNewLoad(p, "perm", []string{"perm-a"}, map[string]string{"perm-a": key})
	for mode := range 3 {
		if err := load.chat(t.Context(), key, load.nextModel(), mode); err != nil {
			t.Fatalf("request %d: %v", mode, err)
		}
	}
	// A file created by the test under the same umask shows the umask
	// took effect (else 0600 would prove nothing).
	probe := filepath.Join(dir, "probe")
	syscall.Umask(0o022)
	err := os.WriteFile(probe, nil, 0o666)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(probe); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("probe file under umask 022: %v, mode %v, want 0644", err, st.Mode().Perm())
	}

	for _, suffix := range []string{"", "-wal", "-shm", ".lock"} {
		st, err := os.Stat(dbPath + suffix)
		if err != nil {
			t.Errorf("%s while caddy runs: %v", dbPath+suffix, err)
			continue
		}
		if perm := st.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s: mode %#o, want 0600", dbPath+suffix, perm)
		}
	}
	p.signal(t, syscall.SIGINT)
	p.waitExit(t, 30*time.Second)
	if st, err := os.Stat(dbPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("%s after a clean stop: %v, want mode 0600", dbPath, err)
	}
}

// processRun runs the caddy binary with args and HOME (and the XDG dirs)
// under home, and returns its combined output.
func processRun(t *testing.T, bin, home string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(),
		"HOME="+home, "XDG_DATA_HOME="+filepath.Join(home, "data"), "XDG_CONFIG_HOME="+filepath.Join(home, "config"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// processDirEntries lists dir's entries.
func processDirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// processErrorLine is the line of a failed caddy's output that says why.
func processErrorLine(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "in use by another process") {
			return strings.TrimSpace(l)
		}
	}
	return "(no line names the lock)"
}
