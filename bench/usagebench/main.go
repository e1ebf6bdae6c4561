// Command usagebench times the usage reports of the admin API, the CLI and
// the dashboard on a database made by bench/ledgergen (see bench/usage.sh).
//
// Each report is timed as the store calls its handler makes, in the same
// order and with the same filters (management/usage.go for the admin API
// and so the CLI, dashboard/api.go for the dashboard), -runs times; the
// table gives the median, the fastest and the slowest run. The first run of
// each report is included: nothing is warmed up beforehand apart from
// opening the store.
//
// "Now" is the time of the newest ledger row (ledgergen spreads rows over
// the days before it ran), so that "--since 24h" covers a day of rows
// whenever the benchmark runs.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/metask/caddy-ai-gateway/keystore"
)

type report struct {
	name string
	run  func(ctx context.Context, s *keystore.Store) error
}

func main() {
	db := flag.String("db", "", "database made by bench/ledgergen")
	runs := flag.Int("runs", 5, "runs of each report")
	account := flag.String("account", "acct1", "account of the per-account reports")
	flag.Parse()
	if *db == "" || *runs < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if _, err := os.Stat(*db); err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	s, err := keystore.Open(ctx, keystore.Options{Path: *db})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	newest, err := s.Ledger(ctx, keystore.LedgerFilter{Limit: 1})
	if err != nil || len(newest) == 0 {
		log.Fatalf("reading the newest ledger row: %v (%d rows)", err, len(newest))
	}
	now := newest[0].CreatedAt
	var rows int64
	if err := s.ExportLedger(ctx, keystore.LedgerFilter{Since: now.Add(-24 * time.Hour), AccountID: *account},
		func(keystore.LedgerEntry) error { rows++; return nil }); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("database %s; now = newest row %s; %s has %d rows in its last 24h\n\n",
		*db, now.Format(time.RFC3339), *account, rows)

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "report\tmedian\tmin\tmax\t\n")
	for _, r := range reports(*account, now) {
		times := make([]time.Duration, 0, *runs)
		for i := 0; i < *runs; i++ {
			t0 := time.Now()
			if err := r.run(ctx, s); err != nil {
				log.Fatalf("%s: %v", r.name, err)
			}
			times = append(times, time.Since(t0))
		}
		slices.Sort(times)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", r.name, ms(times[len(times)/2]), ms(times[0]), ms(times[len(times)-1]))
	}
	tw.Flush()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// adminUsage is what GET /ai-gateway/usage does for filter f and by
// (management/usage.go): the account, the rows, the totals.
func adminUsage(ctx context.Context, s *keystore.Store, f keystore.LedgerFilter, by string) error {
	if f.AccountID != "" {
		if _, err := s.Account(ctx, f.AccountID); err != nil {
			return err
		}
	}
	if _, err := s.Ledger(ctx, f); err != nil {
		return err
	}
	_, err := s.UsageTotals(ctx, f, by)
	return err
}

// dashboardUsage is what the dashboard's GET api/usage?days= does
// (dashboard/api.go): totals by day, model and key and overall since the
// first day, the 25 newest rows, the account's keys.
func dashboardUsage(ctx context.Context, s *keystore.Store, account string, now time.Time, days int) error {
	if _, err := s.Account(ctx, account); err != nil {
		return err
	}
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	f := keystore.LedgerFilter{AccountID: account, Since: today.AddDate(0, 0, -(days - 1))}
	for _, by := range []string{"day", "model", "key", ""} {
		if _, err := s.UsageTotals(ctx, f, by); err != nil {
			return err
		}
	}
	if _, err := s.Ledger(ctx, keystore.LedgerFilter{AccountID: account, Limit: 25}); err != nil {
		return err
	}
	_, err := s.Keys(ctx, account)
	return err
}

func reports(account string, now time.Time) []report {
	day, month := now.Add(-24*time.Hour), now.Add(-720*time.Hour)
	usage := keystore.KindUsage
	return []report{
		{fmt.Sprintf("usage --account %s --since 24h --by model", account), func(ctx context.Context, s *keystore.Store) error {
			return adminUsage(ctx, s, keystore.LedgerFilter{AccountID: account, Since: day, Kind: usage}, "model")
		}},
		{"usage --since 720h --by model", func(ctx context.Context, s *keystore.Store) error {
			return adminUsage(ctx, s, keystore.LedgerFilter{Since: month, Kind: usage}, "model")
		}},
		{fmt.Sprintf("usage --account %s --since 720h --by day", account), func(ctx context.Context, s *keystore.Store) error {
			return adminUsage(ctx, s, keystore.LedgerFilter{AccountID: account, Since: month, Kind: usage}, "day")
		}},
		{fmt.Sprintf("GET /ai-gateway/usage?account=%s&limit=5", account), func(ctx context.Context, s *keystore.Store) error {
			return adminUsage(ctx, s, keystore.LedgerFilter{AccountID: account, Limit: 5}, "")
		}},
		{"dashboard usage, 30 days", func(ctx context.Context, s *keystore.Store) error {
			return dashboardUsage(ctx, s, account, now, 30)
		}},
		{"dashboard usage, 7 days", func(ctx context.Context, s *keystore.Store) error {
			return dashboardUsage(ctx, s, account, now, 7)
		}},
	}
}
