//go:build unix

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

const (
	metricPending = "caddy_ai_gateway_ledger_pending_writes"
	metricOldest  = "caddy_ai_gateway_ledger_oldest_pending_seconds"
	metricBacklog = "caddy_ai_gateway_ledger_backlogged"
	metricErrors  = "caddy_ai_gateway_ledger_write_errors_total"
)

// chaos disturbs the gateway, one action every interval, and counts what
// happened.
type chaos struct {
	c  config
	gw *gateway

	validReloads, validOK   int
	invalidReloads, refused int
	reloadProblems          []string
	kills                   int
	downtime                time.Duration
	fills                   int
	fillBytes               int64
	fillWriteErrors         float64 // ledger write errors counted by caddy during the fills
	maxPending              float64
	backlogged              int // fills during which the gateway reported a backlog
	recoveries, unrecovered int
	maxRecovery             time.Duration
	problems                []string
}

// run performs the actions until ctx ends.
func (ch *chaos) run(ctx context.Context) {
	actions := []func(){ch.reloadValid, ch.reloadBadJSON, ch.kill, ch.reloadBadPrice, ch.diskFull}
	t := time.NewTicker(ch.c.interval)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a := actions[i%len(actions)]
		if i%len(actions) == len(actions)-1 && !ch.c.diskFull {
			a = ch.reloadValid
		}
		a()
	}
}

// reloadValid loads the other variant of the valid Caddyfile: 200.
func (ch *chaos) reloadValid() {
	ch.validReloads++
	next := ch.gw.cfgVariant + 1
	status, b, err := ch.gw.adminDo("POST", "/load", "text/caddyfile", []byte(ch.gw.caddyfile(next, false)))
	if err != nil || status != http.StatusOK {
		ch.reloadProblems = append(ch.reloadProblems, fmt.Sprintf("valid reload: status %d, err %v: %.300s", status, err, b))
		return
	}
	ch.gw.cfgVariant = next
	ch.validOK++
	logf("reloaded a valid config: 200")
}

// reloadBadJSON loads the running JSON config with key_cache_size -1: 400.
func (ch *chaos) reloadBadJSON() {
	ch.invalidReloads++
	status, b, err := ch.gw.adminDo("GET", "/config/", "", nil)
	if err != nil || status != http.StatusOK {
		ch.reloadProblems = append(ch.reloadProblems, fmt.Sprintf("GET /config/: status %d, err %v", status, err))
		return
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		ch.reloadProblems = append(ch.reloadProblems, fmt.Sprintf("GET /config/: %v", err))
		return
	}
	apps, _ := cfg["apps"].(map[string]any)
	gwApp, _ := apps["ai_gateway"].(map[string]any)
	if gwApp == nil {
		ch.reloadProblems = append(ch.reloadProblems, "the running config has no ai_gateway app")
		return
	}
	gwApp["key_cache_size"] = -1
	bad, _ := json.Marshal(cfg)
	ch.expectRefused("key_cache_size -1 (JSON)", "application/json", bad)
}

// reloadBadPrice loads a Caddyfile with a malformed price: 400.
func (ch *chaos) reloadBadPrice() {
	ch.invalidReloads++
	ch.expectRefused("malformed price (Caddyfile)", "text/caddyfile", []byte(ch.gw.caddyfile(ch.gw.cfgVariant, true)))
}

func (ch *chaos) expectRefused(what, ctype string, body []byte) {
	status, b, err := ch.gw.adminDo("POST", "/load", ctype, body)
	if err != nil || status != http.StatusBadRequest {
		ch.reloadProblems = append(ch.reloadProblems, fmt.Sprintf("invalid reload (%s): status %d, err %v, want 400: %.300s", what, status, err, b))
		return
	}
	ch.refused++
	logf("invalid reload refused (%s): 400", what)
}

// kill SIGKILLs caddy and starts it again.
func (ch *chaos) kill() {
	ch.kills++
	t0 := time.Now()
	ch.gw.sigkill()
	if err := ch.gw.start(); err != nil {
		ch.problems = append(ch.problems, "restart after SIGKILL: "+err.Error())
		return
	}
	d := time.Since(t0)
	ch.downtime += d
	logf("SIGKILL and restart: down for %s", d.Round(time.Millisecond))
}

// diskFull fills the database's file system until ENOSPC, holds it full
// for fill-hold while the load goes on, frees it and waits for the ledger
// backlog to drain.
func (ch *chaos) diskFull() {
	ch.fills++
	before, _ := ch.gw.metrics(metricErrors)
	path := filepath.Join(ch.c.dbDir, "soak-fill")
	n, err := fill(path)
	if err != nil {
		ch.problems = append(ch.problems, "filling the disk: "+err.Error())
		_ = os.Remove(path)
		return
	}
	ch.fillBytes += n
	sawBacklog := false
	end := time.Now().Add(ch.c.fillHold)
	for time.Now().Before(end) {
		time.Sleep(250 * time.Millisecond)
		m, err := ch.gw.metrics(metricPending, metricBacklog)
		if err != nil {
			continue
		}
		ch.maxPending = max(ch.maxPending, m[metricPending])
		if m[metricBacklog] > 0 {
			sawBacklog = true
		}
	}
	after, _ := ch.gw.metrics(metricErrors, metricPending)
	errs := after[metricErrors] - before[metricErrors]
	ch.fillWriteErrors += errs
	if sawBacklog {
		ch.backlogged++
	}
	if err := os.Remove(path); err != nil {
		ch.problems = append(ch.problems, "freeing the disk: "+err.Error())
	}
	t0 := time.Now()
	for {
		m, err := ch.gw.metrics(metricPending)
		if err == nil && m[metricPending] == 0 {
			d := time.Since(t0)
			ch.recoveries++
			ch.maxRecovery = max(ch.maxRecovery, d)
			logf("disk full for %s (%d MiB written): %.0f ledger write errors, %.0f rows waiting at the end, backlog reported: %v; drained %s after freeing",
				ch.c.fillHold, n>>20, errs, after[metricPending], sawBacklog, d.Round(time.Millisecond))
			return
		}
		if time.Since(t0) > 30*time.Second {
			ch.unrecovered++
			ch.problems = append(ch.problems, fmt.Sprintf("ledger backlog not drained 30s after the disk was freed (%v rows pending)", m[metricPending]))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fill writes zeros to path until the file system is full (ENOSPC), in
// large then small blocks, and returns how much it wrote.
func fill(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	for _, size := range []int{1 << 20, 4 << 10, 512} {
		buf := make([]byte, size)
		for {
			w, err := f.Write(buf)
			n += int64(w)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				return n, err
			}
			if n > 8<<30 {
				return n, errors.New("wrote 8 GiB without ENOSPC: -dbdir is not a small dedicated file system")
			}
		}
	}
	return n, nil
}
