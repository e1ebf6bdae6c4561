package management

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

// auditFlags are the filters of `caddy ai-gateway audit`.
type auditFlags struct {
	account, target, action, actor, since, until string
	limit                                        int
	before                                       int64
}

func (c *gatewayCLI) auditCommand() *cobra.Command {
	var f auditFlags
	cmd := &cobra.Command{
		Use:   "audit [--account ID] [--target ID] [--action ACTION] [--actor WHO] [--since 24h] [--until T] [--limit N] [--before ENTRY_ID]",
		Short: "Show who changed which account, balance or key, and when",
		Long: `Shows the audit log, newest first: every change of accounts, balances
and keys made through the admin API, this CLI or the dashboard, with its
time, actor ("admin API 127.0.0.1:41234", "cli (alice@host) via …",
"dashboard:alice"), account, target (an account or key id), action and
what changed. An entry is written in the same transaction as its change;
it never holds a key.

--action takes one action (key.rotate) or a group (account, balance,
key). --actor takes an actor or a prefix ending in * ("dashboard:*").
--since and --until take a time, a date or a duration back from now.`,
		Example: `  $ caddy ai-gateway audit --account acme --since 720h
  $ caddy ai-gateway audit --action key --actor 'dashboard:*'
  $ caddy ai-gateway audit --target key_0123456789abcdef`,
		Args: namedArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			for name, v := range map[string]string{"account": f.account, "target": f.target, "action": f.action,
				"actor": f.actor, "since": f.since, "until": f.until} {
				if v != "" {
					q.Set(name, v)
				}
			}
			if cmd.Flags().Changed("limit") {
				if f.limit < 1 || f.limit > 1000 {
					return usageError(cmd, fmt.Errorf("--limit must be from 1 to 1000, got %d", f.limit))
				}
				q.Set("limit", strconv.Itoa(f.limit))
			}
			if f.before != 0 {
				q.Set("before", strconv.FormatInt(f.before, 10))
			}
			if err := keyWhereKeyIDBelongs("--target", f.target); err != nil {
				return fmt.Errorf("refused, nothing was sent: %w", err)
			}
			var ans AuditView
			table, err := c.callInto(cmd, http.MethodGet, "/ai-gateway/audit?"+q.Encode(), nil, &ans)
			if err != nil || !table {
				return err
			}
			return printAudit(cmd.OutOrStdout(), ans)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.account, "account", "", "Only changes in this account")
	fl.StringVar(&f.target, "target", "", "Only changes of this key or account id")
	fl.StringVar(&f.action, "action", "", "Only this action (key.rotate) or group (account, balance, key)")
	fl.StringVar(&f.actor, "actor", "", "Only this actor, or actors starting with a prefix ending in *")
	fl.StringVar(&f.since, "since", "", "From this time, date or duration ago (inclusive)")
	fl.StringVar(&f.until, "until", "", "Up to this time, date or duration ago (exclusive)")
	decimalIntVar(fl, &f.limit, "limit", "At most this many entries (default 100, max 1000)")
	decimalVar(fl, &f.before, "before", "Only entries older than this entry id (paging)")
	return cmd
}

func printAudit(w io.Writer, a AuditView) error {
	if len(a.Entries) == 0 {
		_, err := fmt.Fprintln(w, "No audit entries match.")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tTIME\tACTOR\tACCOUNT\tTARGET\tACTION\tDETAIL")
	for _, e := range a.Entries {
		var detail bytes.Buffer
		if json.Compact(&detail, e.Detail) != nil {
			detail.Reset()
			detail.Write(e.Detail)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, fmtTime(e.CreatedAt), e.Actor, e.AccountID, e.Target, e.Action,
			strings.Join(strings.Fields(detail.String()), " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if a.NextBefore != 0 {
		_, err := fmt.Fprintf(w, "Older entries: --before %d\n", a.NextBefore)
		return err
	}
	return nil
}
