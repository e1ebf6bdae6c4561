package dashboard

import (
	"errors"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/keystore"
	"github.com/metask/caddy-ai-gateway/management"
)

// listAccounts answers the admins' table of accounts: every account with
// its balance, holds, spend this month, live keys and status, filtered by
// q (a part of the id or name, any letter case) and status (active or
// disabled).
func (d *Dashboard) listAccounts(w http.ResponseWriter, r *http.Request, _ *call) error {
	q := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("q")))
	status := r.URL.Query().Get("status")
	switch status {
	case "", "active", "disabled":
	default:
		return writeError(w, badRequest("Status must be active or disabled."))
	}
	all, err := management.AccountSummaryViews(r.Context(), d.st(), d.currency)
	if err != nil {
		return writeError(w, storeError(err))
	}
	out := management.AccountListView{Accounts: make([]management.AccountView, 0, len(all))}
	for _, a := range all {
		if status != "" && a.Status != status {
			continue
		}
		if q != "" && !strings.Contains(strings.ToLower(a.ID), q) && !strings.Contains(strings.ToLower(a.Name), q) {
			continue
		}
		out.Accounts = append(out.Accounts, a)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (d *Dashboard) createAccount(w http.ResponseWriter, r *http.Request, c *call) error {
	var req management.CreateAccountRequest
	if e := decode(r, &req); e != nil {
		return writeError(w, e)
	}
	name := req.Name
	if strings.TrimSpace(name) == "" {
		name = req.ID
	}
	a, err := d.st().CreateAccount(r.Context(), req.ID, name)
	if err != nil {
		return writeError(w, storeError(err))
	}
	d.logger.Info("dashboard: account created", zap.String("user", c.s.user), zap.String("account", a.ID))
	return writeJSON(w, http.StatusCreated, d.view(a))
}

// errAccountNotFound answers a change of an account that does not exist.
var errAccountNotFound = &apiError{http.StatusNotFound, "invalid_request_error", "account_not_found",
	"There is no such account. It may have been removed; reload the list."}

// updateAccount renames, disables or enables an account, or sets its own
// rate limits (admins).
func (d *Dashboard) updateAccount(w http.ResponseWriter, r *http.Request, c *call) error {
	var req management.UpdateAccountRequest
	if e := decode(r, &req); e != nil {
		return writeError(w, e)
	}
	if req.Name == nil && req.Disabled == nil && req.RateLimits == nil {
		return writeError(w, badRequest("Nothing to change: give name, disabled and/or rate_limits."))
	}
	accountErr := func(err error) error {
		if errors.Is(err, keystore.ErrNotFound) {
			return writeError(w, errAccountNotFound)
		}
		return writeError(w, storeError(err))
	}
	var rl *keystore.RateLimits
	if req.RateLimits != nil {
		cur, err := d.st().Account(r.Context(), c.target)
		if err != nil {
			return accountErr(err)
		}
		var e *apiError
		if rl, e = patchRateLimits(cur.RateLimits, req.RateLimits); e != nil {
			return writeError(w, e)
		}
	}
	var (
		a   keystore.Account
		err error
	)
	if req.Name != nil || req.Disabled != nil {
		if a, err = d.st().UpdateAccount(r.Context(), c.target, req.Name, req.Disabled); err != nil {
			return accountErr(err)
		}
	}
	if req.RateLimits != nil {
		if a, err = d.st().SetAccountRateLimits(r.Context(), c.target, rl); err != nil {
			return accountErr(err)
		}
	}
	d.logger.Info("dashboard: account updated", zap.String("user", c.s.user), zap.String("account", a.ID),
		zap.Bool("disabled", a.Disabled))
	return writeJSON(w, http.StatusOK, d.view(a))
}

// adjustBalance tops up (a positive amount) or corrects (a negative one)
// the balance of the account chosen; a correction needs a note saying why,
// a top-up without a note is noted as made by the user.
func (d *Dashboard) adjustBalance(w http.ResponseWriter, r *http.Request, c *call) error {
	var req management.BalanceRequest
	if e := decode(r, &req); e != nil {
		return writeError(w, e)
	}
	amount, err := req.ParseAmount()
	if err != nil {
		return writeError(w, amountError("Amount", err))
	}
	if amount == 0 {
		return writeError(w, badRequest("Amount must not be zero: give a positive amount to top up or a negative one to correct."))
	}
	note := strings.TrimSpace(req.Note)
	if note == "" {
		if amount < 0 {
			return writeError(w, &apiError{http.StatusBadRequest, "invalid_request_error", "note_required",
				"A correction (a negative amount) needs a note saying why."})
		}
		note = "dashboard: adjusted by " + c.s.user
	}
	a, entry, err := d.st().AdjustBalance(r.Context(), c.account, amount, note)
	if err != nil {
		return writeError(w, storeError(err))
	}
	d.logger.Info("dashboard: balance adjusted", zap.String("user", c.s.user), zap.String("account", a.ID),
		zap.String("amount", keystore.FormatAmount(amount)), zap.Int64("ledger_entry", entry.ID))
	return writeJSON(w, http.StatusOK, management.BalanceAdjustedView{Account: d.view(a), EntryID: entry.ID})
}

// amountError says what is wrong with an amount (field names it: "Amount",
// "Spend limit") in words a person can act on.
func amountError(field string, err error) *apiError {
	msg := err.Error()
	switch {
	case strings.Contains(msg, ","):
		return badRequest("%s must be a number like 10.00, with a point and not a comma.", field)
	case strings.Contains(msg, "digits after"), strings.Contains(msg, "decimal places"), strings.Contains(msg, "precision"):
		return badRequest("%s must have at most nine digits after the point.", field)
	case strings.Contains(msg, "too large"), strings.Contains(msg, "out of range"):
		return badRequest("%s is too large.", field)
	}
	return badRequest("%s must be a number like 10.00.", field)
}
