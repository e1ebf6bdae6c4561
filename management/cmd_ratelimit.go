package management

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"
)

// rateFlags are the rate limit flags of keys create/update and accounts
// update: --rpm, --tpm, --concurrency, --rpd, --tpd (0 removes one on
// update) and, on update, --no-rate-limits.
type rateFlags struct {
	values [5]int64
	clear  bool
}

var rateFlagNames = [5]string{"rpm", "tpm", "concurrency", "rpd", "tpd"}

var rateFlagHelp = [5]string{
	"Requests per minute (any 60 s window)",
	"Tokens per minute, input + output (any 60 s window)",
	"Requests in flight at once",
	"Requests per UTC day",
	"Tokens per UTC day",
}

func (p *rateFlags) register(cmd *cobra.Command, update bool) {
	f := cmd.Flags()
	for i, n := range rateFlagNames {
		help := rateFlagHelp[i]
		if update {
			help += "; 0 removes the limit"
		}
		decimalVar(f, &p.values[i], n, help)
	}
	if update {
		f.BoolVar(&p.clear, "no-rate-limits", false, "Remove all its own rate limits")
		for _, n := range rateFlagNames {
			cmd.MarkFlagsMutuallyExclusive(n, "no-rate-limits")
		}
	}
}

// read returns the rate limits the flags set (nil: none given) and whether
// --no-rate-limits was given.
func (p *rateFlags) read(cmd *cobra.Command, update bool) (*RateLimitsRequest, bool, error) {
	var req RateLimitsRequest
	dst := [5]**int64{&req.RPM, &req.TPM, &req.Concurrency, &req.RPD, &req.TPD}
	given := false
	for i, n := range rateFlagNames {
		if !cmd.Flags().Changed(n) {
			continue
		}
		v := p.values[i]
		if v < 0 || (v == 0 && !update) {
			return nil, false, usageError(cmd, fmt.Errorf("--%s must be a positive integer%s", n, map[bool]string{true: " (0 removes the limit)"}[update]))
		}
		*dst[i] = &v
		given = true
	}
	if !given {
		return nil, p.clear, nil
	}
	return &req, false, nil
}

// rateLimits renders the rate limits of a key or account with their use:
// "rpm 3/60 (key), tpm 1,200/100,000 (account, default)".
func rateLimits(ls []RateLimitView) string {
	if len(ls) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(ls))
	for _, l := range ls {
		scope := l.Scope
		if l.Name != "" {
			scope += " " + l.Name
		}
		if l.Default {
			scope += ", default"
		}
		s := fmt.Sprintf("%s %d/%d (%s", l.Kind, l.Used, l.Limit, scope)
		if l.ResetsAt != nil && l.Used > 0 {
			s += ", resets " + fmtTime(*l.ResetsAt)
		}
		parts = append(parts, s+")")
	}
	return strings.Join(parts, ", ")
}

func (c *gatewayCLI) accountsUpdate() *cobra.Command {
	var name string
	var rf rateFlags
	cmd := &cobra.Command{
		Use:   "update ID [--name NAME] [--rpm N] [--tpm N] [--concurrency N] [--rpd N] [--tpd N] [--no-rate-limits]",
		Short: "Change an account's name or rate limits",
		Long: `Changes an account. The rate limits apply across all the account's keys,
from the next request on: requests and tokens (input + output) per minute
(any 60 s window) and per UTC day, and requests in flight. A flag sets its
limit and leaves the others as they are; 0 removes one, --no-rate-limits
all of them.`,
		Example: `  $ caddy ai-gateway accounts update acme --rpm 600 --tpm 1000000 --concurrency 20`,
		Args:    namedArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rl, clear, err := rf.read(cmd, true)
			if err != nil {
				return err
			}
			req := UpdateAccountRequest{RateLimits: rawOrNull(rl, rl != nil, clear)}
			if cmd.Flags().Changed("name") {
				req.Name = &name
			}
			if req.Name == nil && req.RateLimits == nil {
				return usageError(cmd, errors.New("nothing to change: give at least one flag"))
			}
			var a AccountView
			table, err := c.callInto(cmd, http.MethodPatch, "/ai-gateway/accounts/"+escape(args[0]), req, &a)
			if err != nil || !table {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Updated account %s.\n", a.ID)
			return printAccount(cmd.OutOrStdout(), a)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "New name of the account")
	rf.register(cmd, true)
	return cmd
}
