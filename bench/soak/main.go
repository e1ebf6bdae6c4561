//go:build unix

// Command soak runs the real gateway under load while it is disturbed, then
// checks that the ledger still accounts for every request. bench/soak.sh
// drives it (it mounts the small tmpfs the database lives on); see
// docs/development.md.
//
// It builds caddy (./internal/testcaddy) and bench/mockprovider, starts the
// mock and caddy on loopback with the gateway's database in -dbdir, creates
// accounts and keys through the admin API and loads the gateway with
// concurrent chat completions (JSON, streams asking for usage, streams not
// asking). Every request names its own model, mock-soak-<n>, priced by the
// glob mock-*: the ledger stores the model of the request, so each usage row
// is joined to the one request that made it.
//
// Meanwhile, one action every -interval, in turn:
//
//   - reload a valid config (POST /load, Caddyfile): must answer 200;
//   - reload the running JSON config with key_cache_size -1: must be refused
//     with 400;
//   - SIGKILL caddy and start it again on the same database and ports;
//   - reload a Caddyfile with a malformed price: must be refused with 400;
//   - fill the database's file system (writes until ENOSPC), hold it full
//     for -fill-hold, free it, and wait for the ledger backlog to drain
//     (skipped with -diskfull=false);
//
// At the end it stops the load, stops caddy with SIGINT (it must exit 0),
// reads the database with SQL and prints what the clients saw and what the
// ledger holds. PASS needs: an intact database; balance == SUM(ledger) and
// an unbroken balance_after chain for every account; no request with two
// usage rows and no row for a request that was never sent; every completed
// request charged exactly; the reloads answered as expected; a clean final
// exit; and, with durable billing on, no completed request missing from the
// ledger. With it off the missing ones (lost at the kills) are counted, not
// failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

type config struct {
	duration   time.Duration
	maxDur     time.Duration
	interval   time.Duration
	fillHold   time.Duration
	workers    int
	rate       int
	accounts   int
	durable    bool
	diskFull   bool
	dbDir      string
	workDir    string
	caddyBin   string
	mockBin    string
	streamWait time.Duration
}

func main() {
	var c config
	flag.DurationVar(&c.duration, "duration", 5*time.Minute, "how long the load and the disturbances last")
	flag.DurationVar(&c.maxDur, "max-duration", 30*time.Minute, "refuse a -duration longer than this (the soak is bounded)")
	flag.DurationVar(&c.interval, "interval", 3*time.Second, "time between two disturbances")
	flag.DurationVar(&c.fillHold, "fill-hold", 4*time.Second, "how long the database's file system stays full")
	flag.IntVar(&c.workers, "workers", 16, "concurrent clients")
	flag.IntVar(&c.rate, "rate", 200, "requests per second, at most (all clients together)")
	flag.IntVar(&c.accounts, "accounts", 4, "accounts (one key each)")
	flag.BoolVar(&c.durable, "durable", true, "durable_billing on (true) or off (false)")
	flag.BoolVar(&c.diskFull, "diskfull", true, "fill the database's file system now and then (use it only on a dedicated tmpfs)")
	flag.StringVar(&c.dbDir, "dbdir", "", "directory of the database (a small dedicated tmpfs for -diskfull)")
	flag.StringVar(&c.workDir, "workdir", "", "directory for the binaries, configs and caddy logs (default: a new temporary one)")
	flag.StringVar(&c.caddyBin, "caddy", "", "caddy binary to use (default: go build ./internal/testcaddy)")
	flag.StringVar(&c.mockBin, "mock", "", "mockprovider binary to use (default: go build ./bench/mockprovider)")
	flag.DurationVar(&c.streamWait, "stream-delay", 5*time.Millisecond, "mock: delay between stream events")
	flag.Parse()
	if c.dbDir == "" {
		fatalf("-dbdir is required (bench/soak.sh mounts a tmpfs for it)")
	}
	if c.duration <= 0 || c.workers <= 0 || c.rate <= 0 || c.accounts <= 0 || c.interval <= 0 {
		fatalf("-duration, -interval, -workers, -rate and -accounts must be positive")
	}
	if c.duration > c.maxDur {
		fatalf("-duration %s is longer than -max-duration %s", c.duration, c.maxDur)
	}
	if c.workDir == "" {
		d, err := os.MkdirTemp("", "soak-")
		if err != nil {
			fatalf("%v", err)
		}
		c.workDir = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, c)
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "soak: "+format+"\n", args...)
	os.Exit(2)
}

// run is the whole soak; it reports whether it passed.
func run(ctx context.Context, c config) (bool, error) {
	began := time.Now()
	if c.caddyBin == "" {
		c.caddyBin = filepath.Join(c.workDir, "caddy")
		if err := goBuild(ctx, c.caddyBin, "github.com/metask/caddy-ai-gateway/internal/testcaddy"); err != nil {
			return false, err
		}
	}
	if c.mockBin == "" {
		c.mockBin = filepath.Join(c.workDir, "mockprovider")
		if err := goBuild(ctx, c.mockBin, "github.com/metask/caddy-ai-gateway/bench/mockprovider"); err != nil {
			return false, err
		}
	}
	mock, err := startMock(c.mockBin, c.workDir, c.streamWait)
	if err != nil {
		return false, err
	}
	defer mock.kill()

	gw, err := newGateway(c, mock.addr)
	if err != nil {
		return false, err
	}
	defer gw.kill()
	if err := gw.start(); err != nil {
		return false, err
	}
	keys, err := gw.setupAccounts(c.accounts)
	if err != nil {
		return false, err
	}
	logf("caddy %s, database %s, durable_billing %s, %d clients at up to %d req/s for %s, one disturbance every %s",
		gw.site, gw.dbPath, onOff(c.durable), c.workers, c.rate, c.duration, c.interval)

	loadStart := time.Now()
	loadCtx, stopLoad := context.WithTimeout(ctx, c.duration)
	defer stopLoad()
	l := newLoad(gw.site, keys, c.rate)
	l.start(loadCtx, c.workers)
	ch := &chaos{c: c, gw: gw}
	ch.run(loadCtx)
	l.wait()
	logf("load stopped after %s (in-flight requests finished); stopping caddy with SIGINT", time.Since(loadStart).Round(time.Second))

	exitErr := gw.stop(60 * time.Second)
	db, err := readLedger(gw.dbPath)
	if err != nil {
		return false, err
	}
	r := report(c, l, ch, db, exitErr)
	logf("done in %s", time.Since(began).Round(time.Second))
	return r, nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func logf(format string, args ...any) {
	fmt.Printf("%s soak: "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
