// Package pgtest starts a real PostgreSQL server for tests: one throwaway
// cluster per test binary, in a temporary directory, listening only on a
// Unix socket in that directory, with durability against power loss
// switched off for speed (fsync and full_page_writes off). A commit still
// writes its WAL before it returns (synchronous_commit stays on; without
// fsync that costs a write, not a disk flush), so that a test which kills
// the server (StopImmediate) loses no committed transaction, as with a
// real server. Each test gets a fresh database of its own (NewDatabase).
//
// The server binaries are found in PATH or under /usr/lib/postgresql/*/bin
// (Debian's postgresql package). When they are missing, tests that need
// PostgreSQL are skipped, unless AIGW_REQUIRE_PG=1 is set (test.sh sets it),
// which makes them fail instead. When the tests run as root, initdb and the
// server run as the "postgres" user (PostgreSQL refuses to run as root).
//
// A test binary that uses it should stop the cluster when its tests end:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// If the test binary dies without stopping it, the server gets SIGQUIT
// from the kernel (Linux) and exits too.
//
// Fault tests can stop the server abruptly and start it again
// (Cluster.StopImmediate, Cluster.Start) and cut the connections of a
// database (Cluster.TerminateBackends).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DurableEnv, set to 1, starts the server with its durability settings
// (fsync and full_page_writes on), for benchmarks that compare it with
// SQLite's synchronous commits.
const DurableEnv = "AIGW_PGTEST_DURABLE"

// RequireEnv is the environment variable that turns a missing PostgreSQL
// into a test failure instead of a skip.
const RequireEnv = "AIGW_REQUIRE_PG"

// Cluster is a PostgreSQL server started for tests.
type Cluster struct {
	bin     string // directory of initdb and postgres
	root    string // temporary directory holding data/ and the socket
	dataDir string
	cred    *syscall.Credential // run as this user (root: postgres), nil: as we are
	user    string              // database superuser name

	mu  sync.Mutex
	cmd *exec.Cmd     // the running postmaster, nil while stopped
	out *os.File      // its log
	dbs atomic.Int64  // counter for database names
	ran chan struct{} // closed when cmd has exited
}

var (
	sharedMu  sync.Mutex
	shared    *Cluster
	sharedErr error
)

// Main runs the tests of m and then stops the shared cluster if one was
// started; use it from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	Stop()
	return code
}

// Stop stops the shared cluster, if it was started, and removes its files.
func Stop() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.Destroy()
		shared = nil
	}
}

// Available reports whether the PostgreSQL server binaries were found.
func Available() bool {
	_, err := findBin()
	return err == nil
}

// Shared returns the cluster of this test binary, starting it on first use.
// Without PostgreSQL installed it skips tb, or fails it when AIGW_REQUIRE_PG
// is 1. A cluster that fails to start fails tb.
func Shared(tb testing.TB) *Cluster {
	tb.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		bin, err := findBin()
		if err != nil {
			if os.Getenv(RequireEnv) == "1" {
				tb.Fatalf("PostgreSQL is required (%s=1) but not installed: %v", RequireEnv, err)
			}
			tb.Skipf("PostgreSQL not installed (%v); set %s=1 to fail instead", err, RequireEnv)
		}
		shared, sharedErr = start(bin)
	}
	if sharedErr != nil {
		tb.Fatalf("starting the test PostgreSQL: %v", sharedErr)
	}
	return shared
}

// NewDatabase creates a fresh, empty database on the shared cluster and
// returns its connection URL; the database is dropped when tb ends (after
// the cleanups tb registers later, such as closing a store on it).
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	return Shared(tb).NewDatabase(tb)
}

// findBin finds the directory holding initdb and postgres.
func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real // the package's bin directory, which has pg_dump too
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// The newest major version first.
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no initdb and postgres in PATH or /usr/lib/postgresql/*/bin")
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// start runs initdb in a new temporary directory and starts the server.
func start(bin string) (*Cluster, error) {
	root, err := os.MkdirTemp("", "aigw-pg-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin, root: root, dataDir: filepath.Join(root, "data"), user: "postgres"}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(root)
			return nil, fmt.Errorf("running as root, and there is no postgres user to run PostgreSQL as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(root, uid, gid); err != nil {
			os.RemoveAll(root)
			return nil, err
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", c.dataDir, "-U", c.user, "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.Dir = root
	c.setUser(initdb)
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(root)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if err := c.Start(); err != nil {
		c.Destroy()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) setUser(cmd *exec.Cmd) {
	cmd.SysProcAttr = sysProcAttr()
	if c.cred != nil {
		cmd.SysProcAttr.Credential = c.cred
	}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
}

// SocketDir is the directory of the server's Unix socket (the "host" of a
// connection string).
func (c *Cluster) SocketDir() string { return c.root }

// DSN returns the connection URL of database db as the superuser.
func (c *Cluster) DSN(db string) string {
	return "postgres://" + c.user + "@/" + db + "?host=" + c.root + "&sslmode=disable"
}

// Start starts the server (again, after StopImmediate) and waits until it
// accepts connections.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(filepath.Join(c.root, "server.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := []string{"-D", c.dataDir, "-k", c.root, "-c", "listen_addresses=",
		"-c", "max_connections=400", "-c", "shared_buffers=32MB",
		"-c", "log_min_messages=warning", "-c", "logging_collector=off"}
	if os.Getenv(DurableEnv) != "1" {
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off")
	}
	cmd := exec.Command(filepath.Join(c.bin, "postgres"), args...)
	cmd.Dir = c.root
	cmd.Stdout, cmd.Stderr = logf, logf
	c.setUser(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting postgres: %w", err)
	}
	ran := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(ran) }()
	c.cmd, c.out, c.ran = cmd, logf, ran
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-ran:
			c.cmd = nil
			return fmt.Errorf("postgres exited at start: %s", c.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within 60s: %v\n%s", err, c.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) logTail() string {
	b, _ := os.ReadFile(filepath.Join(c.root, "server.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// StopImmediate stops the server like `pg_ctl stop -m immediate`: SIGQUIT,
// no checkpoint, every connection cut; the next Start recovers from the WAL.
// It returns once the server has exited.
func (c *Cluster) StopImmediate() error { return c.stop(syscall.SIGQUIT) }

// StopFast stops the server like `pg_ctl stop -m fast` (SIGINT): open
// transactions are rolled back, a checkpoint is written.
func (c *Cluster) StopFast() error { return c.stop(syscall.SIGINT) }

func (c *Cluster) stop(sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return nil
	}
	if err := c.cmd.Process.Signal(sig); err != nil {
		return err
	}
	select {
	case <-c.ran:
	case <-time.After(60 * time.Second):
		c.cmd.Process.Kill()
		<-c.ran
	}
	c.cmd = nil
	return nil
}

// Restart is StopImmediate then Start.
func (c *Cluster) Restart() error {
	if err := c.StopImmediate(); err != nil {
		return err
	}
	return c.Start()
}

// Exec runs SQL on the maintenance database "postgres" as the superuser.
func (c *Cluster) Exec(ctx context.Context, sql string, args ...any) error {
	return c.ExecIn(ctx, "postgres", sql, args...)
}

// ExecIn runs SQL on database db as the superuser.
func (c *Cluster) ExecIn(ctx context.Context, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, c.DSN(db))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// TerminateBackends cuts every connection to database db (other than the
// one it uses itself) with pg_terminate_backend, and returns how many it
// cut.
func (c *Cluster) TerminateBackends(ctx context.Context, db string) (int, error) {
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid()) t`, db).Scan(&n)
	return n, err
}

// NewDatabase creates a fresh, empty database and returns its connection
// URL; the database is dropped (its connections cut) when tb ends.
func (c *Cluster) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), c.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("creating test database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// Best effort: the cluster is removed at the end anyway, and a
		// test that stopped the server may not have started it again.
		_ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return c.DSN(name)
}

// DatabaseName returns the database name of a URL returned by NewDatabase.
func DatabaseName(dsn string) string {
	rest := dsn[strings.Index(dsn, "@/")+2:]
	name, _, _ := strings.Cut(rest, "?")
	return name
}

// Destroy stops the server at once and removes its files.
func (c *Cluster) Destroy() {
	c.StopImmediate()
	os.RemoveAll(c.root)
}

// Dump returns the plain SQL dump (pg_dump) of database db: what an
// operator's backup of it would hold. bytea values appear in hex.
func (c *Cluster) Dump(db string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(c.bin, "pg_dump"), "--host", c.root, "--username", c.user, "--no-password", db)
	c.setUser(cmd)
	cmd.SysProcAttr.Pdeathsig = 0
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("pg_dump %s: %w: %s", db, err, stderr.String())
	}
	return out, nil
}
