//go:build unix

package main

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver
)

// costNano is what one request costs: bench/mockprovider reports 12 prompt
// and 8 completion tokens, priced 1.00 and 2.00 per 1M tokens.
const costNano = 12*1000 + 8*2000

// usageRow is a usage row of the ledger.
type usageRow struct {
	account   string
	amount    int64
	estimated bool
}

// ledgerDB is what the database holds.
type ledgerDB struct {
	integrity string
	balances  map[string]int64
	sums      map[string]int64
	chainErrs int
	rows      int
	usage     map[string]usageRow // model → row
	dups      map[string]int
	otherRows int // usage rows of models the soak does not make
}

// readLedger opens the database read-only after caddy has stopped and
// reads it.
func readLedger(path string) (*ledgerDB, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	d := &ledgerDB{balances: map[string]int64{}, sums: map[string]int64{}, usage: map[string]usageRow{}, dups: map[string]int{}}
	var checks []string
	rows, err := db.Query(`PRAGMA integrity_check`)
	if err != nil {
		return nil, fmt.Errorf("integrity_check of %s: %w", path, err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		checks = append(checks, s)
	}
	rows.Close()
	d.integrity = strings.Join(checks, "; ")

	rows, err = db.Query(`SELECT id, balance FROM accounts`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id string
		var bal int64
		if err := rows.Scan(&id, &bal); err != nil {
			return nil, err
		}
		d.balances[id] = bal
	}
	rows.Close()

	rows, err = db.Query(`SELECT account_id, kind, amount, balance_after, COALESCE(model, ''), estimated FROM ledger ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var acct, kind, model string
		var amount, after, est int64
		if err := rows.Scan(&acct, &kind, &amount, &after, &model, &est); err != nil {
			return nil, err
		}
		d.rows++
		d.sums[acct] += amount
		if after != d.sums[acct] {
			d.chainErrs++
		}
		if kind != "usage" {
			continue
		}
		if !strings.HasPrefix(model, "mock-soak-") {
			d.otherRows++
			continue
		}
		if _, dup := d.usage[model]; dup {
			d.dups[model]++
		}
		d.usage[model] = usageRow{account: acct, amount: amount, estimated: est != 0}
	}
	return d, rows.Err()
}

// report prints the figures and the verdict.
func report(c config, l *load, ch *chaos, db *ledgerDB, exitErr error) bool {
	reqs := l.results()
	completed := 0
	failed := map[string]int{}
	missing, wrongAccount, inexact := 0, 0, 0
	notCompletedRows := map[string]int{}
	for model, r := range reqs {
		row, billed := db.usage[model]
		if r.outcome == outcomeOK {
			completed++
			switch {
			case !billed:
				missing++
			case row.account != r.account:
				wrongAccount++
			case row.amount != -costNano || row.estimated:
				inexact++
			}
			continue
		}
		failed[r.outcome]++
		if billed {
			notCompletedRows[r.outcome]++
			if row.account != r.account {
				wrongAccount++
			}
		}
	}
	neverSent := 0
	for model := range db.usage {
		if _, ok := reqs[model]; !ok {
			neverSent++
		}
	}

	var fails []string
	fail := func(format string, args ...any) { fails = append(fails, fmt.Sprintf(format, args...)) }

	fmt.Println()
	fmt.Printf("=== soak result: durable_billing %s, %s, disk-full phase %s ===\n", onOff(c.durable), c.duration, map[bool]string{true: "on", false: "SKIPPED"}[c.diskFull])
	fmt.Printf("requests sent:                          %d\n", len(reqs))
	fmt.Printf("completed (200, complete body):         %d\n", completed)
	fmt.Printf("failed:                                 %d  %s\n", len(reqs)-completed, countsString(failed))
	for _, k := range sortedKeys(l.examples) {
		fmt.Printf("  e.g. %s: %.160s\n", k, l.examples[k])
	}
	fmt.Printf("ledger usage rows (soak requests):      %d  (ledger rows in all: %d)\n", len(db.usage), db.rows)
	fmt.Printf("completed requests missing from ledger: %d\n", missing)
	fmt.Printf("rows for requests that did not complete: %d  %s\n", sumCounts(notCompletedRows), countsString(notCompletedRows))
	fmt.Printf("rows for requests never sent:           %d\n", neverSent)
	fmt.Printf("completed requests charged other than %d nano (or estimated): %d; charged to the wrong account: %d\n", costNano, inexact, wrongAccount)
	fmt.Printf("duplicate usage rows:                   %d\n", len(db.dups))
	fmt.Printf("disturbances: %d valid reloads (%d answered 200), %d invalid reloads (%d refused with 400), %d SIGKILL+restart (down %s in all), %d disk-full phases (%d MiB written, %.0f ledger write errors, backlog reported in %d, max %.0f rows waiting, drained in ≤ %s, %d not drained)\n",
		ch.validReloads, ch.validOK, ch.invalidReloads, ch.refused, ch.kills, ch.downtime.Round(time.Millisecond),
		ch.fills, ch.fillBytes>>20, ch.fillWriteErrors, ch.backlogged, ch.maxPending, ch.maxRecovery.Round(time.Millisecond), ch.unrecovered)
	fmt.Printf("caddy log lines: %d \"ledger write failed; retrying\", %d \"ledger row not committed in time\"\n",
		grepLogs(c.workDir, "ledger write failed; retrying"), grepLogs(c.workDir, "ledger row not committed in time"))
	fmt.Printf("integrity_check: %s\n", db.integrity)
	fmt.Println("balance - SUM(ledger.amount) per account:")
	ids := make([]string, 0, len(db.balances))
	for id := range db.balances {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		diff := db.balances[id] - db.sums[id]
		fmt.Printf("  %-10s balance %16d nano, ledger sum %16d, difference %d\n", id, db.balances[id], db.sums[id], diff)
		if diff != 0 {
			fail("account %s: balance - SUM(ledger) = %d", id, diff)
		}
	}

	if db.integrity != "ok" {
		fail("integrity_check: %s", db.integrity)
	}
	if db.chainErrs > 0 {
		fail("%d ledger rows break the balance_after chain", db.chainErrs)
	}
	if len(db.dups) > 0 {
		fail("%d requests have more than one usage row", len(db.dups))
	}
	if neverSent > 0 || db.otherRows > 0 {
		fail("%d usage rows of requests never sent, %d of unknown models", neverSent, db.otherRows)
	}
	if inexact > 0 || wrongAccount > 0 {
		fail("%d completed requests not charged exactly, %d rows on the wrong account", inexact, wrongAccount)
	}
	if completed == 0 {
		fail("no request completed")
	}
	if len(ch.reloadProblems) > 0 {
		fail("reloads: %s", strings.Join(ch.reloadProblems, "; "))
	}
	if len(ch.problems) > 0 {
		fail("%s", strings.Join(ch.problems, "; "))
	}
	if exitErr != nil {
		fail("final SIGINT: caddy exited with %v, want status 0", exitErr)
	}
	if missing > 0 {
		if c.durable {
			fail("%d completed requests have no ledger row (durable_billing on)", missing)
		} else {
			fmt.Printf("durable_billing off: %d completed requests lost their ledger row at the %d kills (the loss window), as expected\n", missing, ch.kills)
		}
	}
	if len(fails) > 0 {
		fmt.Println("FAIL:")
		for _, f := range fails {
			fmt.Println("  - " + f)
		}
		fmt.Printf("(caddy logs and configs in %s)\n", c.workDir)
		return false
	}
	fmt.Println("PASS")
	return true
}

func countsString(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || (m[keys[i]] == m[keys[j]] && keys[i] < keys[j]) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// grepLogs counts the lines of the caddy logs in dir that contain s.
func grepLogs(dir, s string) int {
	files, _ := filepath.Glob(filepath.Join(dir, "caddy-*.log"))
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n += strings.Count(string(b), s)
	}
	return n
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
