package management

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

// usageFlags are the filters of `caddy ai-gateway usage`.
type usageFlags struct {
	account, key, model, status, since, until, by string
	limit                                         int
	adjustments                                   bool
}

func (c *gatewayCLI) usageCommand() *cobra.Command {
	var f usageFlags
	cmd := &cobra.Command{
		Use:   "usage [--account ID] [--key KEY_ID] [--model M] [--status ok|error|4xx|5xx|CODE] [--since 24h] [--until T] [--by model|day|key|account] [--limit N]",
		Short: "Show the usage ledger and totals",
		Long: `Shows what requests cost, from the ledger: one row per request the
gateway admitted (model, tokens, cost, status), newest first, and totals.

With --by, prints totals grouped by model, day (UTC), key or account
instead of the rows. --since and --until take a time (2026-11-25T10:00:00Z),
a date (2026-11-25, UTC) or a duration back from now (24h, 30m).
--adjustments lists top-ups and corrections instead of requests. --status
keeps the requests that ended with a 2xx (ok), any other status (error),
a 4xx, a 5xx, or one status (429); totals then count only the rows still
in the ledger (retention prunes rows, the rollups keep no status).
'usage export' writes the raw rows as CSV or JSON Lines.

Rows marked "est." were charged by the documented estimate because the
provider reported no usage (for example a stream cut before its end).`,
		Example: `  $ caddy ai-gateway usage --account acme --since 24h
  $ caddy ai-gateway usage --account acme --by model
  $ caddy ai-gateway usage --by day --since 720h
  $ caddy ai-gateway usage --account acme --adjustments
  $ caddy ai-gateway usage export --output ledger.csv`,
		Args: namedArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := keyWhereKeyIDBelongs("--key", f.key); err != nil {
				return fmt.Errorf("refused, nothing was sent: %w", err)
			}
			q := url.Values{}
			for name, v := range map[string]string{
				"account": f.account, "key": f.key, "model": f.model, "status": f.status,
				"since": f.since, "until": f.until, "by": f.by,
			} {
				if v != "" {
					q.Set(name, v)
				}
			}
			if cmd.Flags().Changed("limit") {
				if f.limit < 1 || f.limit > 10000 {
					return usageError(cmd, fmt.Errorf("--limit must be from 1 to 10000, got %d", f.limit))
				}
				q.Set("limit", strconv.Itoa(f.limit))
			}
			if f.adjustments {
				if f.by != "" {
					return usageError(cmd, fmt.Errorf("--adjustments and --by do not go together"))
				}
				q.Set("kind", "adjustment")
			} else {
				q.Set("kind", "usage")
			}
			var ans UsageView
			table, err := c.callInto(cmd, http.MethodGet, "/ai-gateway/usage?"+q.Encode(), nil, &ans)
			if err != nil || !table {
				return err
			}
			w := cmd.OutOrStdout()
			switch {
			case f.adjustments:
				return printAdjustments(w, ans)
			case f.by != "":
				return printTotals(w, ans)
			default:
				return printUsageRows(w, ans)
			}
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.account, "account", "", "Only this account")
	fl.StringVar(&f.key, "key", "", "Only this key id")
	fl.StringVar(&f.model, "model", "", "Only this model (exact name)")
	fl.StringVar(&f.status, "status", "", "Only requests that ended so: ok (2xx), error, 4xx, 5xx or a status such as 429")
	fl.StringVar(&f.since, "since", "", "From this time, date or duration ago (inclusive)")
	fl.StringVar(&f.until, "until", "", "Up to this time, date or duration ago (exclusive)")
	fl.StringVar(&f.by, "by", "", "Print totals grouped by model, day, key or account")
	decimalIntVar(fl, &f.limit, "limit", "At most this many rows (default 100, max 10000)")
	fl.BoolVar(&f.adjustments, "adjustments", false, "List top-ups and corrections instead of requests")
	cmd.AddCommand(c.usageExport())
	return cmd
}

func printUsageRows(w io.Writer, u UsageView) error {
	if len(u.Rows) == 0 {
		_, err := fmt.Fprintln(w, "No requests in this range.")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tACCOUNT\tKEY\tNAME\tMODEL\tPROMPT\tCACHED\tCOMPLETION\tSTATUS\tMS\tCOST")
	for _, r := range u.Rows {
		cost := Money(amount(r.Cost), u.Currency)
		if r.Estimated {
			cost += " (est.)"
		}
		name := r.KeyName
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", fmtTime(r.CreatedAt), r.AccountID, r.KeyID, name,
			r.Model, Count(r.PromptTokens), r.CachedTokens, Count(r.CompletionTokens), r.Status, Count(r.DurationMS), cost)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(u.Totals) == 1 {
		t := u.Totals[0]
		fmt.Fprintf(w, "\n%d %s, %d prompt (%d cached) and %d completion tokens, %s",
			t.Requests, plural(t.Requests, "request", "requests"), t.PromptTokens, t.CachedTokens, t.CompletionTokens, Money(amount(t.Cost), u.Currency))
		if n := Count(t.Estimated); n > 0 {
			fmt.Fprintf(w, " (%d estimated)", n)
		}
		fmt.Fprintln(w)
	}
	if u.NextBefore != 0 {
		fmt.Fprintf(w, "More rows: raise --limit (or use the admin API with before=%d).\n", u.NextBefore)
	}
	return nil
}

func printTotals(w io.Writer, u UsageView) error {
	if len(u.Totals) == 0 {
		_, err := fmt.Fprintln(w, "No requests in this range.")
		return err
	}
	tw := newTable(w)
	fmt.Fprintf(tw, "%s\tREQUESTS\tPROMPT\tCACHED\tCOMPLETION\tESTIMATED\tCOST\n", map[string]string{
		"model": "MODEL", "day": "DAY", "key": "KEY", "account": "ACCOUNT"}[u.By])
	for _, t := range u.Totals {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", t.Group, t.Requests, t.PromptTokens, t.CachedTokens,
			t.CompletionTokens, Count(t.Estimated), Money(amount(t.Cost), u.Currency))
	}
	return tw.Flush()
}

func printAdjustments(w io.Writer, u UsageView) error {
	if len(u.Rows) == 0 {
		_, err := fmt.Fprintln(w, "No balance adjustments in this range.")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tACCOUNT\tAMOUNT\tBALANCE AFTER\tNOTE")
	for _, r := range u.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", fmtTime(r.CreatedAt), r.AccountID,
			Money(signed(r.Amount), u.Currency), Money(amount(r.BalanceAfter), u.Currency), r.Note)
	}
	return tw.Flush()
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
