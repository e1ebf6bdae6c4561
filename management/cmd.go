package management

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/metask/caddy-ai-gateway/keystore"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "ai-gateway",
		Usage: aiGatewayUsage,
		Short: aiGatewayShort,
		Long:  aiGatewayLong,
		CobraFunc: func(cmd *cobra.Command) {
			configureAIGatewayCommand(cmd)
		},
	})
}

const (
	aiGatewayUsage = "<accounts|keys|usage|audit|backup|db> [command] [flags]"
	aiGatewayShort = "Manages AI gateway accounts, API keys and usage of a running Caddy"
	aiGatewayLong  = `
Manages the accounts and API keys of the AI gateway (the ai_gateway app)
of a running Caddy instance, through the /ai-gateway/ routes of Caddy's
admin API.

The admin endpoint is found like 'caddy reload' finds it: --address if
given; otherwise the admin address of the config file given with --config
(adapted with --adapter if needed); otherwise the default, localhost:2019.

Accounts have an id (a slug such as "acme"), a name and a balance in the
currency of the ai_gateway app. Every request made with one of an
account's API keys is charged to its balance; requests are refused while
the balance is not positive. Amounts are decimals with at most nine
digits after the point, never floats.

API keys look like sk-... and belong to one account. Only a hash is
stored: the plaintext key is printed once, when the key is created or
rotated, and can never be shown again.

Output is a human-readable table; with --json the admin API's JSON
answer is printed instead. Errors of the admin API are printed on one
line and make the command exit with status 1.
`
	aiGatewayExample = `  $ caddy ai-gateway accounts create acme --name "Acme Corp"
  $ caddy ai-gateway accounts topup acme 25.00 --note "invoice 1042"
  $ caddy ai-gateway keys create --account acme --name production-app
  $ caddy ai-gateway keys list --account acme
  $ caddy ai-gateway keys rotate key_0123456789abcdef --grace 24h
  $ caddy ai-gateway usage --account acme --since 24h --by model
  $ caddy ai-gateway backup /var/backups/ai-gateway-$(date +%F).db
  $ caddy ai-gateway --config /etc/caddy/Caddyfile accounts list`
)

// newAIGatewayCommand builds the `ai-gateway` command tree as a stand-alone
// cobra command that writes its output to out. The command registered with
// Caddy is built by the same code; tests execute this one in-process.
func newAIGatewayCommand(out io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ai-gateway " + aiGatewayUsage,
		Short: aiGatewayShort,
		Long:  aiGatewayLong,
	}
	cmd.SetOut(out)
	// like Caddy's root command: an error is not followed by the usage
	cmd.SilenceUsage = true
	configureAIGatewayCommand(cmd)
	return cmd
}

// gatewayCLI holds the persistent flags of one `ai-gateway` command tree.
type gatewayCLI struct {
	address string
	config  string
	adapter string
	json    bool
}

// configureAIGatewayCommand adds flags and subcommands to the `ai-gateway`
// command.
func configureAIGatewayCommand(cmd *cobra.Command) {
	c := &gatewayCLI{}
	cmd.Long = strings.TrimSpace(cmd.Long)
	cmd.Example = aiGatewayExample
	pf := cmd.PersistentFlags()
	pf.StringVar(&c.address, "address", "", "Address of the administration API listener (if --config is not used)")
	pf.StringVarP(&c.config, "config", "c", "", "Configuration file to find the admin API address in (if --address is not used)")
	pf.StringVarP(&c.adapter, "adapter", "a", "", "Name of config adapter to apply (if --config is used)")
	pf.BoolVar(&c.json, "json", false, "Print the admin API's JSON answer instead of a table")
	cmd.RunE = groupRunE
	cmd.PersistentPreRunE = refuseKeysInCommandLine
	cmd.AddCommand(c.accountsCommand(), c.keysCommand(), c.usageCommand(), c.auditCommand(), c.backupCommand(), c.dbCommand())
}

// groupRunE runs a command that only groups subcommands: without arguments
// it prints help, with an unknown subcommand it fails.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return fmt.Errorf("%s (run '%s --help' for usage)", msg, cmd.CommandPath())
}

// usageError is a bad command line: the message plus the command's syntax.
func usageError(cmd *cobra.Command, err error) error {
	return fmt.Errorf("%w (usage: %s)", err, strings.TrimSuffix(cmd.UseLine(), " [flags]"))
}

// namedArgs requires exactly the named positional arguments, each non-empty.
func namedArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		return checkNamedArgs(cmd, args, names...)
	}
}

func checkNamedArgs(cmd *cobra.Command, args []string, names ...string) error {
	if len(args) < len(names) {
		return usageError(cmd, fmt.Errorf("missing argument %s", names[len(args)]))
	}
	if len(args) > len(names) {
		return usageError(cmd, fmt.Errorf("unexpected argument %q", args[len(names)]))
	}
	for i, a := range args {
		if strings.TrimSpace(a) == "" {
			return usageError(cmd, fmt.Errorf("argument %s must not be empty", names[i]))
		}
	}
	return nil
}

// refuseKeysInCommandLine refuses, before anything is sent, an argument or
// flag value that is a plaintext API key: no command takes one, and the
// admin API would echo it in an error and Caddy log it.
func refuseKeysInCommandLine(cmd *cobra.Command, args []string) error {
	var err error
	for _, name := range []string{"account", "key", "name", "note", "model", "models"} {
		if v, ferr := cmd.Flags().GetString(name); ferr == nil && cmd.Flags().Changed(name) && err == nil {
			err = keyWhereIDBelongs("--"+name, v)
		}
	}
	for _, a := range args {
		if err != nil {
			break
		}
		what := "argument"
		if name, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(name, "-") {
			what, a = name, v // a flag of a command that parses its own flags
		}
		err = keyWhereIDBelongs(what, a)
	}
	if err != nil {
		return fmt.Errorf("refused, nothing was sent: %w", err)
	}
	return nil
}

// keyIDArgs is namedArgs for a command whose arguments include KEY_ID: a
// plaintext key given as KEY_ID is refused before anything is sent, and
// shown only masked.
func keyIDArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := checkNamedArgs(cmd, args, names...); err != nil {
			return err
		}
		for i, n := range names {
			if n == "KEY_ID" {
				if err := keyWhereKeyIDBelongs(n, args[i]); err != nil {
					return fmt.Errorf("refused, nothing was sent: %w", err)
				}
			}
		}
		return nil
	}
}

// --- talking to the admin API ---

// adminAPIError is a non-2xx answer of the admin API.
type adminAPIError struct {
	Status  int
	Message string
}

func (e *adminAPIError) Error() string {
	return fmt.Sprintf("admin API: %s (HTTP %d)", e.Message, e.Status)
}

// caddyHTTPErrRe matches the error caddycmd.AdminAPIRequest returns for an
// answer with status >= 400.
var caddyHTTPErrRe = regexp.MustCompile(`(?s)^caddy responded with error: HTTP (\d{3}): (.*)$`)

// adminErrorMessage extracts the message of an admin API error body
// ({"error": "..."}), falling back to the body on one line.
func adminErrorMessage(status int, body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && strings.TrimSpace(e.Error) != "" {
		return strings.Join(strings.Fields(e.Error), " ")
	}
	msg := strings.Join(strings.Fields(string(body)), " ")
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	if msg == "" {
		msg = strings.ToLower(http.StatusText(status))
	}
	return msg
}

// adminAddress determines the admin API address like `caddy reload` does.
func (c *gatewayCLI) adminAddress(cmd *cobra.Command) (string, error) {
	if c.adapter != "" && c.config == "" {
		return "", usageError(cmd, errors.New("--adapter needs --config"))
	}
	if c.address != "" {
		return normalizeAdminAddress(c.address)
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(c.address, nil, c.config, c.adapter)
	if err != nil {
		return "", fmt.Errorf("finding the admin API address in %s: %w", c.config, err)
	}
	return addr, nil
}

// normalizeAdminAddress checks --address and returns it in the form Caddy's
// admin client takes: host:port, a unix socket (unix//path) or a URL with
// the http scheme (http://localhost:2019/), which is reduced to host:port.
// The admin API is spoken over plain HTTP, so https:// is refused rather
// than quietly sent in the clear.
func normalizeAdminAddress(s string) (string, error) {
	addr := strings.TrimSpace(s)
	if scheme, _, ok := strings.Cut(addr, "://"); ok {
		u, err := url.Parse(addr)
		switch {
		case err != nil:
			return "", fmt.Errorf("--address %q is not a valid URL: %w", s, err)
		case strings.EqualFold(scheme, "https"):
			return "", fmt.Errorf("--address %q: caddy ai-gateway reaches the admin API over plain http only; give http://HOST:PORT or HOST:PORT", s)
		case !strings.EqualFold(scheme, "http"):
			return "", fmt.Errorf("--address %q: scheme %q is not supported; give http://HOST:PORT or HOST:PORT (e.g. localhost:2019)", s, scheme)
		case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
			return "", fmt.Errorf("--address %q: give only the scheme, host and port (e.g. http://localhost:2019), no path, query or credentials", s)
		case u.Host == "":
			return "", fmt.Errorf("--address %q has no host", s)
		}
		addr = u.Host
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	na, err := caddy.ParseNetworkAddress(addr)
	if err != nil {
		return "", fmt.Errorf("--address %q is not an admin address (HOST:PORT such as localhost:2019, http://localhost:2019, or unix//path/to/socket): %w", s, err)
	}
	if na.PortRangeSize() > 1 {
		return "", fmt.Errorf("--address %q is a port range; give one port", s)
	}
	if !na.IsUnixNetwork() && !na.IsFdNetwork() && na.StartPort == 0 {
		return "", fmt.Errorf("--address %q has no port; give HOST:PORT such as localhost:2019", s)
	}
	return addr, nil
}

// call sends one request to the admin API and returns the body of a 2xx
// answer. reqBody, if not nil, is sent as JSON.
func (c *gatewayCLI) call(cmd *cobra.Command, method, uri string, reqBody any) ([]byte, error) {
	resp, addr, err := c.request(cmd, method, uri, reqBody)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of the admin API at %s: %w", addr, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &adminAPIError{Status: resp.StatusCode, Message: adminErrorMessage(resp.StatusCode, out)}
	}
	return out, nil
}

// request sends one request to the admin API and returns the answer, its
// body unread, and the address it went to. An answer with status >= 400
// is an *adminAPIError.
func (c *gatewayCLI) request(cmd *cobra.Command, method, uri string, reqBody any) (*http.Response, string, error) {
	addr, err := c.adminAddress(cmd)
	if err != nil {
		return nil, "", err
	}
	var body io.Reader
	if reqBody != nil {
		b, err := json.Marshal(reqBody)
		if err != nil {
			return nil, "", fmt.Errorf("encoding request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, http.Header{ActorHeader: {cliUser()}}, body)
	if err != nil {
		msg := err.Error()
		if m := caddyHTTPErrRe.FindStringSubmatch(msg); m != nil {
			status, _ := strconv.Atoi(m[1])
			return nil, "", &adminAPIError{Status: status, Message: adminErrorMessage(status, []byte(m[2]))}
		}
		if strings.HasPrefix(msg, "performing request") {
			return nil, "", fmt.Errorf("cannot reach the Caddy admin API at %s (is Caddy running? use --address or --config to point at its admin endpoint): %w", addr, err)
		}
		return nil, "", fmt.Errorf("admin API at %s: %w", addr, err)
	}
	return resp, addr, nil
}

// callInto is call that decodes the answer into v unless --json is set, in
// which case the answer is printed as is and v is left alone; it reports
// whether the caller should print a table.
func (c *gatewayCLI) callInto(cmd *cobra.Command, method, uri string, reqBody, v any) (bool, error) {
	b, err := c.call(cmd, method, uri, reqBody)
	if err != nil {
		return false, err
	}
	if c.json {
		b = bytes.TrimRight(b, "\n")
		_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s\n", b)
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("decoding the answer of the admin API: %w", err)
	}
	return true, nil
}

func escape(id string) string { return url.PathEscape(id) }

// cliUser names the user running the CLI for the admin API's audit log:
// user@host.
func cliUser() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		name = "?"
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		name += "@" + h
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r >= 0x7f {
			return '?'
		}
		return r
	}, name)
}

// --- formatting ---

// balance renders an account's balance with its currency.
func balance(a AccountView) string { return Money(amount(a.Balance), a.Currency) }

// amount renders a decimal amount of the admin API the one way the CLI
// shows amounts, keystore.FormatAmount's: at least two digits after the
// point ("5.00", "0.0000144"). An amount that does not parse is shown as
// it came.
func amount(s string) string {
	n, err := keystore.ParseAmount(s)
	if err != nil {
		return s
	}
	return keystore.FormatAmount(n)
}

// signed renders a change of a balance with its sign ("+10.00", "-1.50").
func signed(s string) string {
	s = amount(s)
	if !strings.HasPrefix(s, "-") {
		s = "+" + s
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTimePtr(t *time.Time, none string) string {
	if t == nil || t.IsZero() {
		return none
	}
	return fmtTime(*t)
}

// keyStatus is a key's status, with who disabled it.
func keyStatus(k KeyView) string {
	if k.Status == keystore.KeyDisabled && k.DisabledByAdmin {
		return k.Status + " (by an operator)"
	}
	return k.Status
}

func keyExpires(k keystore.Key) string {
	s := fmtTimePtr(k.ExpiresAt, "never")
	if k.Status == "expired" {
		s += " (expired)"
	}
	return s
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// printFields prints label/value pairs aligned, one per line.
func printFields(w io.Writer, pairs ...string) error {
	tw := newTable(w)
	for i := 0; i+1 < len(pairs); i += 2 {
		fmt.Fprintf(tw, "%s:\t%s\n", pairs[i], pairs[i+1])
	}
	return tw.Flush()
}

func printAccounts(w io.Writer, accts []AccountView) error {
	if len(accts) == 0 {
		_, err := fmt.Fprintln(w, "No accounts. Create one with: caddy ai-gateway accounts create ID")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tBALANCE\tHELD\tSPENT THIS MONTH\tKEYS\tSTATUS")
	for _, a := range accts {
		spent, keys := "-", "-"
		if a.SpendMonthNano != nil {
			spent = Money(keystore.FormatAmount(*a.SpendMonthNano), a.Currency)
		}
		if a.Keys != nil {
			keys = strconv.Itoa(*a.Keys)
		}
		status := a.Status
		if status == "" {
			status = map[bool]string{true: "disabled", false: "active"}[a.Disabled]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Name, balance(a), Money(amount(a.Held), a.Currency),
			spent, keys, status)
	}
	return tw.Flush()
}

func printAccount(w io.Writer, a AccountView) error {
	pairs := []string{
		"ID", a.ID,
		"Name", a.Name,
		"Balance", balance(a),
		"Disabled", yesNo(a.Disabled),
		"Created", fmtTime(a.CreatedAt),
	}
	if len(a.RateLimits) > 0 {
		pairs = append(pairs, "Rate limits", rateLimits(a.RateLimits))
	}
	return printFields(w, pairs...)
}

// models renders a key's allowlist.
func models(k KeyView) string {
	if len(k.AllowedModels) == 0 {
		return "any"
	}
	return strings.Join(k.AllowedModels, ",")
}

// limit renders a key's spend limit and its use.
func limit(k KeyView) string {
	l := k.SpendLimit
	if l == nil {
		return "none"
	}
	per := map[string]string{keystore.PeriodDay: "/day", keystore.PeriodMonth: "/month"}[l.Period]
	s := fmt.Sprintf("%s of %s%s", amount(l.Spent), keystore.FormatAmount(l.AmountNano), per)
	if l.ResetsAt != nil {
		s += ", resets " + fmtTime(*l.ResetsAt)
	}
	return s
}

func printKeys(w io.Writer, keys []KeyView) error {
	if len(keys) == 0 {
		_, err := fmt.Fprintln(w, "No keys. Create one with: caddy ai-gateway keys create --account ID --name NAME")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tACCOUNT\tHINT\tCREATED\tLAST USED\tEXPIRES\tMODELS\tSPEND LIMIT")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.AccountID, k.Hint,
			fmtTime(k.CreatedAt), fmtTimePtr(k.LastUsedAt, "never"), keyExpires(k.Key), models(k), limit(k))
	}
	return tw.Flush()
}

func printKey(w io.Writer, k KeyView) error {
	pairs := []string{
		"ID", k.ID,
		"Name", k.Name,
		"Account", k.AccountID,
		"Hint", k.Hint,
		"Status", keyStatus(k),
		"Created", fmtTime(k.CreatedAt),
		"Last used", fmtTimePtr(k.LastUsedAt, "never"),
		"Expires", keyExpires(k.Key),
		"Models", models(k),
		"Spend limit", limit(k),
		"Rate limits", rateLimits(k.RateLimits),
	}
	if k.ReplacedBy != "" {
		pairs = append(pairs, "Replaced by", k.ReplacedBy)
	}
	return printFields(w, pairs...)
}

// printSecret prints a new plaintext key on its own line and the warning
// that it will not be shown again.
func printSecret(w io.Writer, nk SecretKeyView) {
	fmt.Fprintf(w, "\n%s\n\n", nk.Secret)
	warning := nk.Warning
	if warning == "" {
		warning = ShownOnce
	}
	fmt.Fprintln(w, warning)
}

// --- accounts ---

func (c *gatewayCLI) accountsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "accounts",
		Aliases: []string{"account"},
		Short:   "Create, list, show, update, top up, disable and enable accounts",
		Long: `Accounts hold the balance that requests made with their API keys are
charged to. An account id is a slug of 1-64 characters: a-z, 0-9, '.', '_'
or '-', starting with a letter or digit.`,
		RunE: groupRunE,
	}
	cmd.AddCommand(c.accountsCreate(), c.accountsList(), c.accountsShow(), c.accountsTopup(),
		c.accountsSetDisabled(true), c.accountsSetDisabled(false), c.accountsUpdate())
	return cmd
}

// accountsSetDisabled builds `accounts disable ID` (disabled true) or
// `accounts enable ID`.
func (c *gatewayCLI) accountsSetDisabled(disabled bool) *cobra.Command {
	use, short, done := "enable", "Let an account's keys be used again", "enabled; its keys work again"
	if disabled {
		use, short, done = "disable", "Refuse every request of an account's keys (403 account_disabled)",
			"disabled; its keys get 403 account_disabled from the next request on"
	}
	return &cobra.Command{
		Use:   use + " ID",
		Short: short,
		Long: short + `. The balance, the keys and the ledger are kept; enabling the
account again restores access.`,
		Args: namedArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a AccountView
			table, err := c.callInto(cmd, http.MethodPatch, "/ai-gateway/accounts/"+escape(args[0]),
				UpdateAccountRequest{Disabled: &disabled}, &a)
			if err != nil || !table {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Account %s is %s.\n", a.ID, done)
			return err
		},
	}
}

func (c *gatewayCLI) accountsCreate() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "create ID [--name NAME]",
		Short: "Create an account with a zero balance",
		Long:  "Creates an account with a zero balance. The name defaults to the id.",
		Args:  namedArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a AccountView
			table, err := c.callInto(cmd, http.MethodPost, "/ai-gateway/accounts",
				CreateAccountRequest{ID: args[0], Name: name}, &a)
			if err != nil || !table {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Created account %s (%s), balance %s.\n", a.ID, a.Name, balance(a))
			fmt.Fprintf(w, "Top it up with: caddy ai-gateway accounts topup %s AMOUNT\n", a.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "Human-readable name of the account (default: the id)")
	return cmd
}

func (c *gatewayCLI) accountsList() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List accounts with their balances",
		Args:    namedArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var accts []AccountView
			table, err := c.callInto(cmd, http.MethodGet, "/ai-gateway/accounts", nil, &accts)
			if err != nil || !table {
				return err
			}
			return printAccounts(cmd.OutOrStdout(), accts)
		},
	}
}

func (c *gatewayCLI) accountsShow() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one account",
		Args:  namedArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a AccountView
			table, err := c.callInto(cmd, http.MethodGet, "/ai-gateway/accounts/"+escape(args[0]), nil, &a)
			if err != nil || !table {
				return err
			}
			return printAccount(cmd.OutOrStdout(), a)
		},
	}
}

// negativeNumberRe matches an argument that is a negative amount, not a
// flag: "-5", "-0.25", "-.5".
var negativeNumberRe = regexp.MustCompile(`^-[0-9.]`)

// negPlaceholder replaces negative amounts while flags are parsed, so that
// "-1.50" is not taken for a shorthand flag. It cannot start with '-'.
const negPlaceholder = "\x00neg:"

func (c *gatewayCLI) accountsTopup() *cobra.Command {
	var note string
	cmd := &cobra.Command{
		Use:   "topup ID AMOUNT [--note TEXT]",
		Short: "Add to (or, with a negative amount, correct) an account's balance",
		Long: `Adds AMOUNT to the balance of account ID and writes a ledger entry with
the note. AMOUNT is a decimal in the currency of the gateway with at most
nine digits after the point, such as 25, 10.50 or 0.000001. A negative
AMOUNT (for example -1.50) is a correction that lowers the balance.`,
		Example: `  $ caddy ai-gateway accounts topup acme 25.00 --note "invoice 1042"
  $ caddy ai-gateway accounts topup acme -1.50 --note "refund of a double top-up"`,
		// Flags are parsed in RunE so that a negative AMOUNT is not taken
		// for a flag.
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, rawArgs []string) error {
			args, err := parseFlagsAllowingNegatives(cmd, rawArgs)
			if err != nil {
				return usageError(cmd, err)
			}
			if help, _ := cmd.Flags().GetBool("help"); help {
				return cmd.Help()
			}
			note = restoreNegative(note)
			if err := checkNamedArgs(cmd, args, "ID", "AMOUNT"); err != nil {
				return err
			}
			amount := strings.TrimSpace(args[1])
			n, err := keystore.ParseAmount(amount)
			if err != nil {
				return usageError(cmd, fmt.Errorf("bad AMOUNT: %w", err))
			}
			if n == 0 {
				return usageError(cmd, fmt.Errorf("bad AMOUNT %q: a zero amount changes nothing; give a positive amount to top up or a negative one to correct", amount))
			}
			var res BalanceAdjustedView
			table, err := c.callInto(cmd, http.MethodPost, "/ai-gateway/accounts/"+escape(args[0])+"/balance",
				map[string]string{"amount": amount, "note": note}, &res)
			if err != nil || !table {
				return err
			}
			w := cmd.OutOrStdout()
			if res.Entry == nil {
				return errors.New("the admin API's answer has no ledger entry")
			}
			fmt.Fprintf(w, "Balance of %s changed by %s (ledger entry %d).\n",
				res.Account.ID, Money(signed(res.Entry.Amount), res.Account.Currency), res.Entry.ID)
			fmt.Fprintf(w, "New balance: %s\n", balance(res.Account))
			return nil
		},
	}
	cmd.Flags().StringVar(&note, "note", "", "Note for the ledger entry (e.g. an invoice number)")
	return cmd
}

// parseFlagsAllowingNegatives parses the flags of a command that has
// DisableFlagParsing set, treating arguments like "-1.50" as positional
// arguments (or flag values), and returns the positional arguments.
func parseFlagsAllowingNegatives(cmd *cobra.Command, raw []string) ([]string, error) {
	rewritten := make([]string, len(raw))
	for i, a := range raw {
		if negativeNumberRe.MatchString(a) {
			a = negPlaceholder + a
		}
		rewritten[i] = a
	}
	cmd.DisableFlagParsing = false
	err := cmd.ParseFlags(rewritten)
	cmd.DisableFlagParsing = true
	if err != nil {
		return nil, err
	}
	args := cmd.Flags().Args()
	for i, a := range args {
		args[i] = restoreNegative(a)
	}
	return args, nil
}

func restoreNegative(s string) string { return strings.TrimPrefix(s, negPlaceholder) }

// --- keys ---

func (c *gatewayCLI) keysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "keys",
		Aliases: []string{"key"},
		Short:   "Create, list, show, rename, update, disable, enable, delete and rotate API keys",
		Long: `API keys (sk-...) authenticate requests to the gateway; each belongs to one
account, which pays for its requests. The plaintext of a key is printed
once, by 'keys create' and 'keys rotate'; afterwards only its hint (such
as sk-…wxyz) is shown. Deleting a key takes effect on the next request.`,
		RunE: groupRunE,
	}
	cmd.AddCommand(c.keysCreate(), c.keysList(), c.keysShow(), c.keysRename(), c.keysUpdate(),
		c.keysSetDisabled(true), c.keysSetDisabled(false), c.keysDelete(), c.keysRotate())
	return cmd
}

func (c *gatewayCLI) keysCreate() *cobra.Command {
	var account, name, expiresIn, expiresAt string
	var pf policyFlags
	var rf rateFlags
	cmd := &cobra.Command{
		Use:   "create --account ID --name NAME [--expires-in 720h | --expires-at TIME] [--models GLOBS] [--limit AMOUNT [--limit-period day]] [--rpm N] [--tpm N] [--concurrency N] [--rpd N] [--tpd N]",
		Short: "Create an API key for an account (the key is printed once)",
		Long: `Creates an API key for an account and prints it. This is the only time the
key is shown: store it now. Without --expires-in or --expires-at the key
does not expire. --models restricts the key to models matching any of the
comma-separated globs (gpt-4o-mini,o3*); --limit caps what it may spend in
total, per day or per month (UTC). --rpm, --tpm, --concurrency, --rpd and
--tpd limit its requests and tokens (input + output) per minute (any 60 s
window) and per UTC day, and its requests in flight.`,
		Args: namedArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			pol, err := pf.read(cmd)
			if err != nil {
				return err
			}
			rl, _, err := rf.read(cmd, false)
			if err != nil {
				return err
			}
			at, err := expiryTime(cmd, expiresAt)
			if err != nil {
				return err
			}
			req := CreateKeyRequest{Account: account, Name: name, ExpiresIn: expiresIn, ExpiresAt: at,
				AllowedModels: pol.models, SpendLimit: pol.limit, RateLimits: rl}
			var nk SecretKeyView
			table, err := c.callInto(cmd, http.MethodPost, "/ai-gateway/keys", req, &nk)
			if err != nil || !table {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Created key %s (%q) for account %s, expires %s.\n",
				nk.ID, nk.Name, nk.AccountID, fmtTimePtr(nk.ExpiresAt, "never"))
			if len(nk.AllowedModels) > 0 || nk.SpendLimit != nil {
				fmt.Fprintf(w, "Models: %s; spend limit: %s.\n", models(nk.KeyView), limit(nk.KeyView))
			}
			if len(nk.RateLimits) > 0 {
				fmt.Fprintf(w, "Rate limits: %s.\n", rateLimits(nk.RateLimits))
			}
			printSecret(w, nk)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&account, "account", "", "Account the key belongs to (required)")
	f.StringVar(&name, "name", "", "Name of the key, e.g. the application using it (required)")
	f.StringVar(&expiresIn, "expires-in", "", "Expire the key after this duration (e.g. 720h or 30d)")
	f.StringVar(&expiresAt, "expires-at", "", "Expire the key at this RFC 3339 time")
	pf.register(cmd, false)
	rf.register(cmd, false)
	_ = cmd.MarkFlagRequired("account")
	_ = cmd.MarkFlagRequired("name")
	cmd.MarkFlagsMutuallyExclusive("expires-in", "expires-at")
	return cmd
}

func (c *gatewayCLI) keysList() *cobra.Command {
	var account string
	cmd := &cobra.Command{
		Use:     "list [--account ID]",
		Aliases: []string{"ls"},
		Short:   "List API keys (never their plaintext)",
		Args:    namedArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			uri := "/ai-gateway/keys"
			if account != "" {
				uri += "?" + url.Values{"account": {account}}.Encode()
			}
			var keys []KeyView
			table, err := c.callInto(cmd, http.MethodGet, uri, nil, &keys)
			if err != nil || !table {
				return err
			}
			return printKeys(cmd.OutOrStdout(), keys)
		},
	}
	cmd.Flags().StringVar(&account, "account", "", "Only list the keys of this account")
	return cmd
}

func (c *gatewayCLI) keysShow() *cobra.Command {
	return &cobra.Command{
		Use:   "show KEY_ID",
		Short: "Show one API key (never its plaintext)",
		Args:  keyIDArgs("KEY_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var k KeyView
			table, err := c.callInto(cmd, http.MethodGet, "/ai-gateway/keys/"+escape(args[0]), nil, &k)
			if err != nil || !table {
				return err
			}
			return printKey(cmd.OutOrStdout(), k)
		},
	}
}

func (c *gatewayCLI) keysRename() *cobra.Command {
	return &cobra.Command{
		Use:   "rename KEY_ID NAME",
		Short: "Rename an API key",
		Args:  keyIDArgs("KEY_ID", "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var k KeyView
			table, err := c.callInto(cmd, http.MethodPatch, "/ai-gateway/keys/"+escape(args[0]),
				UpdateKeyRequest{Name: &args[1]}, &k)
			if err != nil || !table {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Renamed key %s to %q.\n", k.ID, k.Name)
			return err
		},
	}
}

// expiryTime reads --expires-at (checked here, so that a malformed time is
// refused before anything is sent); nil when it is not set.
func expiryTime(cmd *cobra.Command, at string) (*time.Time, error) {
	if at == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, at)
	if err != nil {
		return nil, usageError(cmd, fmt.Errorf("--expires-at must be an RFC 3339 time such as 2030-01-02T15:04:05Z: %w", err))
	}
	return &t, nil
}

// policyFlags are the key policy flags of keys create and keys update.
type policyFlags struct {
	models      string
	anyModel    bool
	limit       string
	limitPeriod string
	noLimit     bool
}

func (p *policyFlags) register(cmd *cobra.Command, update bool) {
	f := cmd.Flags()
	f.StringVar(&p.models, "models", "", "Only allow models matching these comma-separated globs (e.g. gpt-4o-mini,o3*)")
	f.StringVar(&p.limit, "limit", "", "Spend limit of the key, a decimal amount (e.g. 5.00)")
	f.StringVar(&p.limitPeriod, "limit-period", "total", "Period of the spend limit: total, day or month (UTC)")
	if update {
		f.BoolVar(&p.anyModel, "any-model", false, "Remove the model allowlist")
		f.BoolVar(&p.noLimit, "no-limit", false, "Remove the spend limit")
		cmd.MarkFlagsMutuallyExclusive("models", "any-model")
		cmd.MarkFlagsMutuallyExclusive("limit", "no-limit")
	}
}

// keyPolicy is what the policy flags ask for.
type keyPolicy struct {
	models      []string      // set by --models
	clearModels bool          // --any-model
	limit       *LimitRequest // set by --limit
	clearLimit  bool          // --no-limit
}

// read checks the policy flags and returns what they set.
func (p *policyFlags) read(cmd *cobra.Command) (keyPolicy, error) {
	var out keyPolicy
	if cmd.Flags().Changed("models") {
		for _, m := range strings.Split(p.models, ",") {
			if m = strings.TrimSpace(m); m != "" {
				out.models = append(out.models, m)
			}
		}
		if len(out.models) == 0 {
			return out, usageError(cmd, errors.New("--models needs at least one model pattern (use --any-model to remove the allowlist)"))
		}
	}
	out.clearModels = p.anyModel
	if cmd.Flags().Changed("limit") {
		if n, err := keystore.ParseAmount(p.limit); err != nil || n <= 0 {
			msg := fmt.Sprintf("--limit %q must be a decimal amount greater than zero, such as 5.00", p.limit)
			if err != nil {
				msg += ": " + err.Error()
			}
			return out, usageError(cmd, errors.New(msg))
		}
		amount, _ := json.Marshal(p.limit)
		out.limit = &LimitRequest{Amount: amount, Period: p.limitPeriod}
	} else if cmd.Flags().Changed("limit-period") {
		return out, usageError(cmd, errors.New("--limit-period goes with --limit"))
	}
	out.clearLimit = p.noLimit
	return out, nil
}

// rawOrNull is v as JSON, "null" when clear is set, and absent otherwise.
func rawOrNull(v any, set, clear bool) json.RawMessage {
	switch {
	case clear:
		return json.RawMessage("null")
	case set:
		b, _ := json.Marshal(v)
		return b
	}
	return nil
}

func (c *gatewayCLI) keysUpdate() *cobra.Command {
	var name, expiresIn, expiresAt string
	var noExpiry bool
	var pf policyFlags
	var rf rateFlags
	cmd := &cobra.Command{
		Use:   "update KEY_ID [--name NAME] [--models GLOBS | --any-model] [--limit AMOUNT [--limit-period day] | --no-limit] [--expires-in 720h | --expires-at TIME | --no-expiry] [--rpm N] [--tpm N] [--concurrency N] [--rpd N] [--tpd N] [--no-rate-limits]",
		Short: "Change an API key's name, allowed models, spend limit, rate limits or expiry",
		Long: `Changes an API key. The change holds from the very next request. Allowed
models, the spend limit and the rate limits apply to the key together with
the keys it replaced or that replace it by rotation, which share one spend
counter and one count per rate limit; a new spend limit counts what they
already spent in the current period. A rate limit flag sets that limit and
leaves the others as they are; 0 removes one, --no-rate-limits all.`,
		Args: keyIDArgs("KEY_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pol, err := pf.read(cmd)
			if err != nil {
				return err
			}
			rl, clearRates, err := rf.read(cmd, true)
			if err != nil {
				return err
			}
			at, err := expiryTime(cmd, expiresAt)
			if err != nil {
				return err
			}
			req := UpdateKeyRequest{
				ExpiresIn:     expiresIn,
				ExpiresAt:     rawOrNull(at, at != nil, noExpiry),
				AllowedModels: rawOrNull(pol.models, pol.models != nil, pol.clearModels),
				SpendLimit:    rawOrNull(pol.limit, pol.limit != nil, pol.clearLimit),
				RateLimits:    rawOrNull(rl, rl != nil, clearRates),
			}
			if cmd.Flags().Changed("name") {
				req.Name = &name
			}
			if req.Name == nil && req.ExpiresIn == "" && req.ExpiresAt == nil && req.AllowedModels == nil && req.SpendLimit == nil && req.RateLimits == nil {
				return usageError(cmd, errors.New("nothing to change: give at least one flag"))
			}
			var k KeyView
			table, err := c.callInto(cmd, http.MethodPatch, "/ai-gateway/keys/"+escape(args[0]), req, &k)
			if err != nil || !table {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Updated key %s.\n", k.ID)
			return printKey(cmd.OutOrStdout(), k)
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "New name of the key")
	f.StringVar(&expiresIn, "expires-in", "", "Expire the key after this duration from now (e.g. 720h)")
	f.StringVar(&expiresAt, "expires-at", "", "Expire the key at this RFC 3339 time")
	f.BoolVar(&noExpiry, "no-expiry", false, "Remove the key's expiry")
	pf.register(cmd, true)
	rf.register(cmd, true)
	cmd.MarkFlagsMutuallyExclusive("expires-in", "expires-at", "no-expiry")
	return cmd
}

// keysSetDisabled builds `keys disable KEY_ID` (disabled true) or `keys
// enable KEY_ID`.
func (c *gatewayCLI) keysSetDisabled(disabled bool) *cobra.Command {
	use, short, done := "enable", "Let a disabled API key be used again", "enabled; it works again from the next request on"
	if disabled {
		use, short, done = "disable", "Refuse an API key (401 key_disabled) without deleting it",
			"disabled; it gets 401 key_disabled from the next request on"
	}
	return &cobra.Command{
		Use:   use + " KEY_ID",
		Short: short,
		Long: short + `. Only this key is affected, not the keys that replaced it
by rotation; its name, policy and usage are kept. A key an operator
disabled can only be enabled by an operator (the admin API, this CLI or
an admin of the dashboard).`,
		Args: keyIDArgs("KEY_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var k KeyView
			table, err := c.callInto(cmd, http.MethodPatch, "/ai-gateway/keys/"+escape(args[0]),
				UpdateKeyRequest{Disabled: &disabled}, &k)
			if err != nil || !table {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Key %s (%q) is %s.\n", k.ID, k.Name, done)
			return err
		},
	}
}

func (c *gatewayCLI) keysDelete() *cobra.Command {
	return &cobra.Command{
		Use:     "delete KEY_ID",
		Aliases: []string{"revoke", "rm"},
		Short:   "Delete (revoke) an API key; it stops working at once",
		Args:    keyIDArgs("KEY_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res DeletedKeyView
			table, err := c.callInto(cmd, http.MethodDelete, "/ai-gateway/keys/"+escape(args[0]), nil, &res)
			if err != nil || !table {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Deleted key %s; it no longer works.\n", res.ID)
			return err
		},
	}
}

func (c *gatewayCLI) keysRotate() *cobra.Command {
	var grace string
	cmd := &cobra.Command{
		Use:   "rotate KEY_ID [--grace 24h]",
		Short: "Replace an API key with a new one (the new key is printed once)",
		Long: `Creates a replacement for an API key, with the same name, account and
expiry, and prints it once. The old key stops working at once or, with
--grace, when the grace period is over (or at its own earlier expiry).`,
		Args: keyIDArgs("KEY_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := RotateKeyRequest{Grace: grace}
			var res RotatedKeyView
			table, err := c.callInto(cmd, http.MethodPost, "/ai-gateway/keys/"+escape(args[0])+"/rotate", req, &res)
			if err != nil || !table {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Rotated key %s (%q) of account %s: the new key is %s.\n",
				res.Old.ID, res.Old.Name, res.Old.AccountID, res.New.ID)
			printSecret(w, res.New)
			if grace == "" || res.Old.Status == "deleted" || res.Old.ExpiresAt == nil {
				fmt.Fprintf(w, "The old key %s stopped working now.\n", res.Old.ID)
			} else {
				fmt.Fprintf(w, "The old key %s keeps working until %s.\n", res.Old.ID, fmtTime(*res.Old.ExpiresAt))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&grace, "grace", "", "Keep the old key working for this long (e.g. 24h); default: revoke it now")
	return cmd
}
