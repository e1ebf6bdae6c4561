package management

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// The db commands work on the database itself, not through the admin API:
// they are for a database no Caddy serves yet (a new PostgreSQL database,
// an upgrade before the new build starts, a move from SQLite).

// dbCLI holds the flags of the `db` command group.
type dbCLI struct {
	*gatewayCLI
	database string
}

// dbCommand is `caddy ai-gateway db`.
func (c *gatewayCLI) dbCommand() *cobra.Command {
	d := &dbCLI{gatewayCLI: c}
	cmd := &cobra.Command{
		Use:   "db <status|migrate|copy>",
		Short: "Inspects, migrates or copies the gateway's database directly",
		Long: `Works on the gateway's database directly, not through a running Caddy:
the schema version (status), applying migrations (migrate, e.g. before a
rolling upgrade of several instances on one PostgreSQL), and copying an
SQLite store into PostgreSQL (copy).

The database is --database if given (an SQLite path or a PostgreSQL
connection string); otherwise the ai_gateway database of the config given
with --config (adapted with --adapter if needed); otherwise the default,
ai-gateway.db in Caddy's data directory. {env.VAR} placeholders are
expanded, so a password can stay out of the command line (pgx also reads
PGPASSWORD and ~/.pgpass). Passwords are shown as xxxxx.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.PersistentFlags().StringVar(&d.database, "database", "", "The database: an SQLite path or a postgres:// URL (default: the config's, see above)")
	cmd.AddCommand(d.statusCommand(), d.migrateCommand(), d.copyCommand())
	return cmd
}

// resolveDatabase returns the database the db commands work on.
func (d *dbCLI) resolveDatabase(cmd *cobra.Command) (string, error) {
	repl := caddy.NewReplacer()
	if strings.TrimSpace(d.database) != "" {
		return resolveDatabaseSetting(repl.ReplaceKnown(d.database, ""))
	}
	if d.config != "" {
		cfg, _, _, err := caddycmd.LoadConfig(d.config, d.adapter)
		if err != nil {
			return "", fmt.Errorf("reading the database from %s: %w", d.config, err)
		}
		var c struct {
			Apps struct {
				AIGateway *App `json:"ai_gateway"`
			} `json:"apps"`
		}
		if err := json.Unmarshal(cfg, &c); err != nil {
			return "", fmt.Errorf("reading the database from %s: %w", d.config, err)
		}
		if c.Apps.AIGateway != nil && c.Apps.AIGateway.Database != "" {
			return resolveDatabaseSetting(repl.ReplaceKnown(c.Apps.AIGateway.Database, ""))
		}
	} else if d.adapter != "" {
		return "", usageError(cmd, errors.New("--adapter needs --config"))
	}
	return filepath.Join(caddy.AppDataDir(), "ai-gateway.db"), nil
}

// resolveDatabaseSetting is App.Provision's reading of the database
// setting: a PostgreSQL connection string as it is, a path made absolute.
func resolveDatabaseSetting(db string) (string, error) {
	db = strings.TrimSpace(db)
	if db == "" {
		return "", errors.New("the database setting is empty")
	}
	if keystore.IsPostgres(db) {
		return db, nil
	}
	return filepath.Abs(db)
}

func (d *dbCLI) printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "\t")
	return enc.Encode(v)
}

func (d *dbCLI) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the database's backend, schema version and pending migrations",
		Long: `Shows which database the gateway uses (SQLite or PostgreSQL), its schema
version against the one this build writes, and how many migrations the
next start (or 'db migrate') would apply. It changes nothing and may run
while Caddy serves the database. A database written by a newer build is
reported; this build refuses to open it.`,
		Args: namedArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := d.resolveDatabase(cmd)
			if err != nil {
				return err
			}
			st, err := keystore.Status(cmd.Context(), db)
			if err != nil {
				return err
			}
			if d.json {
				return d.printJSON(cmd.OutOrStdout(), st)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "Database:\t%s\n", st.Database)
			fmt.Fprintf(tw, "Backend:\t%s\n", st.Backend)
			switch {
			case !st.Exists:
				fmt.Fprintf(tw, "Schema version:\tnone (the file does not exist yet; this build writes %d)\n", st.BuildVersion)
			case st.Newer:
				fmt.Fprintf(tw, "Schema version:\t%d, newer than this build's %d: this build refuses to open it\n", st.SchemaVersion, st.BuildVersion)
			default:
				fmt.Fprintf(tw, "Schema version:\t%d (this build: %d)\n", st.SchemaVersion, st.BuildVersion)
			}
			fmt.Fprintf(tw, "Pending migrations:\t%d\n", st.Pending)
			return tw.Flush()
		},
	}
}

func (d *dbCLI) migrateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the schema migrations the database lacks",
		Long: `Applies the schema migrations the database lacks, as the next start of
Caddy would, and reports each phase on stderr. Run it before a rolling
upgrade, so that the instances of the new build start on a migrated
database. On PostgreSQL, instances may keep serving meanwhile (migrations
run under an advisory lock); an SQLite file must not be open in a running
Caddy. A database written by a newer build is refused.`,
		Args: namedArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := d.resolveDatabase(cmd)
			if err != nil {
				return err
			}
			from, to, err := keystore.Migrate(cmd.Context(), db, func(p keystore.MigrationProgress) {
				fmt.Fprintf(cmd.ErrOrStderr(), "schema version %d: %s (step %d of %d, %d ledger rows, %s)\n",
					p.Version, p.Phase, min(p.Step, p.Steps), p.Steps, p.LedgerRows, p.Elapsed.Round(1e6))
			})
			if err != nil {
				return err
			}
			name := keystore.RedactDatabase(db)
			if d.json {
				return d.printJSON(cmd.OutOrStdout(), map[string]any{"database": name, "from_version": from, "to_version": to})
			}
			if from == to {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s is at schema version %d already: nothing to do.\n", name, to)
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Migrated %s from schema version %d to %d.\n", name, from, to)
			return err
		},
	}
}

func (d *dbCLI) copyCommand() *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "copy --from FILE --to postgres://...",
		Short: "Copy an SQLite store into an empty PostgreSQL database",
		Long: `Copies the SQLite store FILE into the PostgreSQL database --to, which
must hold no gateway data (its tables are created): accounts, API keys
(their hashes, so every key keeps working), the ledger with its ids and
running balances, the carried-forward totals of pruned rows, the usage
rollups and provider objects. The copy is one transaction, committed only
after checking that every table has as many rows as the source and that
every account's balance equals the sum of its ledger.

Stop Caddy first (the file must not be open in a running Caddy), or copy a
backup made with 'caddy ai-gateway backup'. The source is migrated to this
build's schema first. Then point the ai_gateway database at --to.`,
		Args: namedArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" {
				return usageError(cmd, errors.New("--from and --to are required"))
			}
			repl := caddy.NewReplacer()
			src, err := resolveDatabaseSetting(repl.ReplaceKnown(from, ""))
			if err != nil {
				return err
			}
			dst := strings.TrimSpace(repl.ReplaceKnown(to, ""))
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			rep, err := keystore.CopyToPostgres(ctx, src, dst, func(table string, rows int64) {
				fmt.Fprintf(cmd.ErrOrStderr(), "copied %s: %d rows\n", table, rows)
			})
			if err != nil {
				return err
			}
			if d.json {
				return d.printJSON(cmd.OutOrStdout(), rep)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "TABLE\tROWS\n")
			for _, t := range rep.Tables {
				fmt.Fprintf(tw, "%s\t%d\n", t.Name, t.Rows)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Copied %s to %s; checked %d accounts: balance = ledger sum.\n",
				src, keystore.RedactDatabase(dst), rep.AccountsChecked)
			return err
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "The SQLite database file to copy")
	cmd.Flags().StringVar(&to, "to", "", "The PostgreSQL database to copy into (postgres://...; {env.VAR} placeholders expanded)")
	return cmd
}
