package dashboard

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
	"github.com/metask/caddy-ai-gateway/keystore"
	"github.com/metask/caddy-ai-gateway/management"
)

// The dashboard's JSON API, relative to where the handler is mounted:
//
//	GET    api/session                       who is signed in, the account shown, (admins) all accounts
//	GET    api/accounts                      (admins) all accounts
//	POST   api/accounts                      (admins) {"id","name"}
//	POST   api/balance                       (admins) {"amount":"10.50","note"}
//	GET    api/keys                          keys of the account
//	POST   api/keys                          {"name","expires_in"}: the new key, shown this once
//	PATCH  api/keys/{id}                     {"name"}
//	DELETE api/keys/{id}
//	POST   api/keys/{id}/rotate              {"grace"}: the replacement key, shown this once
//	GET    api/usage?days=30                 balance, spend by day, model and key, recent ledger rows
//
// The account is never taken from a user who is not an admin: it is the
// one the signed-in user maps to. Admins choose it with ?account=ID (on
// every account-scoped route). A key of another account is answered as if
// it did not exist (404). Every answer has Cache-Control: no-store; errors
// are {"error":{"message","type","param":null,"code"}}.

// apiError is an error answer of the dashboard API, in the gateway's
// OpenAI-shaped error format.
type apiError struct {
	status  int
	typ     string
	code    string
	message string
}

func (e *apiError) Error() string { return e.message }

var (
	errNotSignedIn = &apiError{http.StatusUnauthorized, "authentication_error", "not_signed_in",
		"The server did not identify you. Sign in again; if you run this server, put an authenticator such as basic_auth before ai_dashboard."}
	errForeignOrigin = &apiError{http.StatusForbidden, "permission_error", "csrf_origin",
		"This request did not come from a page of this dashboard (Origin / Sec-Fetch-Site), so it was refused."}
	errBadToken = &apiError{http.StatusForbidden, "permission_error", "csrf_token",
		"The request's X-CSRF-Token is missing or wrong. Reload the page and try again."}
	errNotAdmin = &apiError{http.StatusForbidden, "permission_error", "admin_only",
		"Only the operators listed as admins of this dashboard can do this."}
	errAccountParam = &apiError{http.StatusForbidden, "permission_error", "admin_only",
		"Only the operators listed as admins of this dashboard can choose the account; leave out the account parameter."}
	errNoAccountChosen = &apiError{http.StatusBadRequest, "invalid_request_error", "account_required",
		"Choose an account (?account=ID) or create one first."}
	errKeyNotFound = &apiError{http.StatusNotFound, "invalid_request_error", "key_not_found",
		"There is no such key in this account. It may have been deleted; reload the list."}
)

// errStoreUnavailable: the key store this dashboard was started with is
// closed or is no longer the gateway's (a reload switched the database), so
// a missing account proves nothing about the user.
var errStoreUnavailable = &apiError{http.StatusServiceUnavailable, "server_error", "store_unavailable",
	"The gateway's key store is not available to this dashboard: it was closed or changed by a configuration reload. " +
		"Reload the page in a moment; if this persists, tell the operator of this gateway."}

// storeProblem tells whether the dashboard's store can be trusted to say
// that an account does not exist: it must answer and still be the store of
// the running config.
func (d *Dashboard) storeProblem(ctx context.Context) *apiError {
	st := d.st()
	if st == nil || st.Ping(ctx) != nil {
		return errStoreUnavailable
	}
	if cur, err := management.RunningStore(); err == nil && cur != st {
		return errStoreUnavailable
	}
	return nil
}

func noAccount(user, account string) *apiError {
	return &apiError{http.StatusForbidden, "permission_error", "no_account",
		fmt.Sprintf("You are signed in as %q, but there is no gateway account %q for you. Ask the operator of this gateway to create it.", user, account)}
}

func badRequest(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "invalid_request_error", "invalid_request", fmt.Sprintf(format, args...)}
}

// storeError turns a keystore error into an answer.
func storeError(err error) *apiError {
	msg := err.Error()
	switch {
	case errors.Is(err, keystore.ErrInvalid):
		return &apiError{http.StatusBadRequest, "invalid_request_error", "invalid_request",
			strings.TrimPrefix(msg, keystore.ErrInvalid.Error()+": ")}
	case errors.Is(err, keystore.ErrNotFound):
		return &apiError{http.StatusNotFound, "invalid_request_error", "not_found", msg}
	case errors.Is(err, keystore.ErrExists):
		return &apiError{http.StatusConflict, "invalid_request_error", "already_exists", msg}
	case errors.Is(err, keystore.ErrClosed):
		return &apiError{http.StatusServiceUnavailable, "server_error", "store_unavailable",
			"The key store is not available right now. Try again in a moment."}
	}
	return &apiError{http.StatusInternalServerError, "server_error", "internal_error",
		"Something went wrong on the server. Try again; if it persists, tell the operator."}
}

func writeError(w http.ResponseWriter, e *apiError) error {
	return writeJSON(w, e.status, openaiwire.ErrorBody{Error: openaiwire.ErrorFields{Message: e.message, Type: e.typ, Code: e.code}})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	return management.WriteJSON(w, status, v)
}

// decode reads a JSON request body strictly (management.ReadJSON): it must
// be declared JSON, unknown fields and trailing data are errors.
func decode(r *http.Request, v any) *apiError {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return &apiError{http.StatusUnsupportedMediaType, "invalid_request_error", "invalid_content_type",
			"The request body must be JSON (Content-Type: application/json)."}
	}
	switch err := management.ReadJSON(r.Body, 64<<10, v); {
	case err == nil:
		return nil
	case errors.Is(err, management.ErrEmptyBody):
		return badRequest("The request body must be a JSON object.")
	case errors.Is(err, management.ErrTrailingData):
		return badRequest("The request body has data after the JSON object.")
	default:
		return badRequest("The request body is not valid: %v.", err)
	}
}

// route is one API endpoint.
type route struct {
	// admin: only admins may call it.
	admin bool
	// account: it works on one account (chosen as described above).
	account bool
	serve   func(w http.ResponseWriter, r *http.Request, c *call) error
}

// call is one API request being served.
type call struct {
	s session
	// account is the account the call is about ("" for routes that are
	// not account-scoped).
	account string
	// keyID is the {id} of key routes.
	keyID string
}

func (d *Dashboard) serveAPI(w http.ResponseWriter, r *http.Request, s session, rest string) error {
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	var methods map[string]route
	c := &call{s: s}
	switch {
	case len(parts) == 1 && parts[0] == "session":
		methods = map[string]route{http.MethodGet: {serve: d.getSession}}
	case len(parts) == 1 && parts[0] == "accounts":
		methods = map[string]route{
			http.MethodGet:  {admin: true, serve: d.listAccounts},
			http.MethodPost: {admin: true, serve: d.createAccount},
		}
	case len(parts) == 1 && parts[0] == "balance":
		methods = map[string]route{http.MethodPost: {admin: true, account: true, serve: d.adjustBalance}}
	case len(parts) == 1 && parts[0] == "keys":
		methods = map[string]route{
			http.MethodGet:  {account: true, serve: d.listKeys},
			http.MethodPost: {account: true, serve: d.createKey},
		}
	case len(parts) == 2 && parts[0] == "keys" && parts[1] != "":
		c.keyID = parts[1]
		methods = map[string]route{
			http.MethodPatch:  {account: true, serve: d.renameKey},
			http.MethodDelete: {account: true, serve: d.deleteKey},
		}
	case len(parts) == 3 && parts[0] == "keys" && parts[1] != "" && parts[2] == "rotate":
		c.keyID = parts[1]
		methods = map[string]route{http.MethodPost: {account: true, serve: d.rotateKey}}
	case len(parts) == 1 && parts[0] == "usage":
		methods = map[string]route{http.MethodGet: {account: true, serve: d.usage}}
	default:
		return writeError(w, &apiError{http.StatusNotFound, "invalid_request_error", "unknown_route",
			fmt.Sprintf("The dashboard API has no route %s %s.", r.Method, rest)})
	}
	rt, ok := methods[r.Method]
	if !ok {
		allowed := make([]string, 0, len(methods))
		for m := range methods {
			allowed = append(allowed, m)
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		return writeError(w, &apiError{http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed",
			fmt.Sprintf("Method %s is not allowed here.", r.Method)})
	}
	// CSRF first: a forged request learns nothing, not even whether the
	// user is an admin.
	if !safeMethod(r.Method) {
		if e := d.csrf.checkStateChange(r, s.user); e != nil {
			d.logger.Warn("dashboard request refused by the CSRF check",
				zap.String("user", s.user), zap.String("method", r.Method), zap.String("path", r.URL.Path),
				zap.String("code", e.code), zap.String("origin", r.Header.Get("Origin")))
			return writeError(w, e)
		}
	}
	if rt.admin && !s.admin {
		return writeError(w, errNotAdmin)
	}
	if rt.account {
		acct, e := d.accountOf(r, s)
		if e != nil {
			return writeError(w, e)
		}
		c.account = acct
	}
	return rt.serve(w, r, c)
}

// accountOf returns the account an account-scoped call is about.
func (d *Dashboard) accountOf(r *http.Request, s session) (string, *apiError) {
	param := r.URL.Query().Get("account")
	if !s.admin {
		if param != "" && param != s.own {
			return "", errAccountParam
		}
		if _, err := d.st().Account(r.Context(), s.own); err != nil {
			if errors.Is(err, keystore.ErrNotFound) {
				if e := d.storeProblem(r.Context()); e != nil {
					return "", e
				}
				return "", noAccount(s.user, s.own)
			}
			return "", storeError(err)
		}
		return s.own, nil
	}
	acct := param
	if acct == "" {
		acct = s.own
	}
	if acct == "" {
		return "", errNoAccountChosen
	}
	if _, err := d.st().Account(r.Context(), acct); err != nil {
		if errors.Is(err, keystore.ErrNotFound) {
			if e := d.storeProblem(r.Context()); e != nil {
				return "", e
			}
		}
		if errors.Is(err, keystore.ErrNotFound) && param == "" {
			return "", errNoAccountChosen
		}
		return "", storeError(err)
	}
	return acct, nil
}

func (d *Dashboard) view(a keystore.Account) management.AccountView {
	return management.NewAccountView(d.st(), a, d.currency)
}

func (d *Dashboard) getSession(w http.ResponseWriter, r *http.Request, c *call) error {
	out := management.SessionView{User: c.s.user, Admin: c.s.admin, Currency: d.currency, GatewayURL: d.GatewayURL}
	acct, e := d.accountOf(r, c.s)
	switch {
	case e == nil:
		a, err := d.st().Account(r.Context(), acct)
		if err != nil {
			return writeError(w, storeError(err))
		}
		v := d.view(a)
		out.Account = &v
	case c.s.admin && e == errNoAccountChosen:
		// an admin without an own account: the page offers the list
	default:
		return writeError(w, e)
	}
	if c.s.admin {
		out.Accounts = management.AccountViews(r.Context(), d.st(), d.currency)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (d *Dashboard) listAccounts(w http.ResponseWriter, r *http.Request, _ *call) error {
	return writeJSON(w, http.StatusOK, management.AccountViews(r.Context(), d.st(), d.currency))
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

func (d *Dashboard) adjustBalance(w http.ResponseWriter, r *http.Request, c *call) error {
	var req management.BalanceRequest
	if e := decode(r, &req); e != nil {
		return writeError(w, e)
	}
	amount, err := req.ParseAmount()
	if err != nil {
		if !errors.Is(err, keystore.ErrInvalid) {
			return writeError(w, badRequest(`The amount must be a decimal string such as "10.50".`))
		}
		return writeError(w, storeError(err))
	}
	note := strings.TrimSpace(req.Note)
	if note == "" {
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

func (d *Dashboard) listKeys(w http.ResponseWriter, r *http.Request, c *call) error {
	keys, err := d.st().Keys(r.Context(), c.account)
	if err != nil {
		return writeError(w, storeError(err))
	}
	out := management.KeyListView{Keys: make([]management.KeyView, 0, len(keys))}
	for _, k := range keys {
		out.Keys = append(out.Keys, management.NewKeyView(k))
	}
	return writeJSON(w, http.StatusOK, out)
}

// maxDuration bounds expiries and grace periods (ten years).
const maxDuration = 10 * 365 * 24 * time.Hour

func parseDuration(what, s string, allowZero bool) (time.Duration, *apiError) {
	if s == "" {
		return 0, nil
	}
	d, err := caddy.ParseDuration(s)
	if err != nil || d < 0 || (d == 0 && !allowZero) || d > maxDuration {
		return 0, badRequest("%s %q is not a valid duration (for example 24h or 30d).", what, s)
	}
	return d, nil
}

func (d *Dashboard) createKey(w http.ResponseWriter, r *http.Request, c *call) error {
	var req management.DashboardKeyRequest
	if e := decode(r, &req); e != nil {
		return writeError(w, e)
	}
	dur, e := parseDuration("expires_in", req.ExpiresIn, false)
	if e != nil {
		return writeError(w, e)
	}
	var expires *time.Time
	if dur > 0 {
		t := time.Now().Add(dur)
		expires = &t
	}
	k, plaintext, err := d.st().CreateKey(r.Context(), c.account, req.Name, keystore.KeyPolicy{ExpiresAt: expires})
	if err != nil {
		return writeError(w, storeError(err))
	}
	d.logger.Info("dashboard: key created", zap.String("user", c.s.user), zap.String("account", c.account),
		zap.String("key_id", k.ID))
	return writeJSON(w, http.StatusCreated, management.NewSecretKeyView(management.NewKeyView(k), plaintext))
}

// ownKey returns the key of a key route if it belongs to the call's
// account; any other key is reported as not found, so that the answer
// does not reveal whether a key id exists in another account.
func (d *Dashboard) ownKey(ctx context.Context, c *call) (keystore.Key, *apiError) {
	k, err := d.st().Key(ctx, c.keyID)
	if err != nil {
		if errors.Is(err, keystore.ErrNotFound) {
			return keystore.Key{}, errKeyNotFound
		}
		return keystore.Key{}, storeError(err)
	}
	if k.AccountID != c.account {
		d.logger.Warn("dashboard: key of another account refused",
			zap.String("user", c.s.user), zap.String("account", c.account), zap.String("key_id", c.keyID))
		return keystore.Key{}, errKeyNotFound
	}
	return k, nil
}

func (d *Dashboard) renameKey(w http.ResponseWriter, r *http.Request, c *call) error {
	var req management.RenameKeyRequest
	if e := decode(r, &req); e != nil {
		return writeError(w, e)
	}
	if _, e := d.ownKey(r.Context(), c); e != nil {
		return writeError(w, e)
	}
	k, err := d.st().UpdateKey(r.Context(), c.keyID, keystore.KeyUpdate{Name: &req.Name})
	if err != nil {
		if errors.Is(err, keystore.ErrNotFound) {
			return writeError(w, errKeyNotFound)
		}
		return writeError(w, storeError(err))
	}
	return writeJSON(w, http.StatusOK, management.NewKeyView(k))
}

func (d *Dashboard) deleteKey(w http.ResponseWriter, r *http.Request, c *call) error {
	if _, e := d.ownKey(r.Context(), c); e != nil {
		return writeError(w, e)
	}
	if err := d.st().DeleteKey(r.Context(), c.keyID); err != nil {
		if errors.Is(err, keystore.ErrNotFound) {
			return writeError(w, errKeyNotFound)
		}
		return writeError(w, storeError(err))
	}
	d.logger.Info("dashboard: key deleted", zap.String("user", c.s.user), zap.String("account", c.account),
		zap.String("key_id", c.keyID))
	return writeJSON(w, http.StatusOK, management.DeletedKeyView{ID: c.keyID, Deleted: true})
}

func (d *Dashboard) rotateKey(w http.ResponseWriter, r *http.Request, c *call) error {
	var req management.RotateKeyRequest
	if e := decode(r, &req); e != nil {
		return writeError(w, e)
	}
	grace, e := parseDuration("grace", req.Grace, true)
	if e != nil {
		return writeError(w, e)
	}
	if _, e := d.ownKey(r.Context(), c); e != nil {
		return writeError(w, e)
	}
	nk, plaintext, old, err := d.st().RotateKey(r.Context(), c.keyID, grace)
	if err != nil {
		if errors.Is(err, keystore.ErrNotFound) {
			return writeError(w, errKeyNotFound)
		}
		return writeError(w, storeError(err))
	}
	d.logger.Info("dashboard: key rotated", zap.String("user", c.s.user), zap.String("account", c.account),
		zap.String("old_key_id", old.ID), zap.String("new_key_id", nk.ID), zap.Duration("grace", grace))
	return writeJSON(w, http.StatusOK, management.RotatedKeyView{
		New: management.NewSecretKeyView(management.NewKeyView(nk), plaintext),
		Old: management.NewKeyView(old),
	})
}

// usageDays is the default period of the usage page; maxUsageDays bounds it.
const (
	usageDays    = 30
	maxUsageDays = 366
	recentRows   = 25
)

func (d *Dashboard) usage(w http.ResponseWriter, r *http.Request, c *call) error {
	days := usageDays
	if s := r.URL.Query().Get("days"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxUsageDays {
			return writeError(w, badRequest("days must be a whole number from 1 to %d.", maxUsageDays))
		}
		days = n
	}
	ctx := r.Context()
	a, err := d.st().Account(ctx, c.account)
	if err != nil {
		return writeError(w, storeError(err))
	}
	now := time.Now().UTC()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	since := today.AddDate(0, 0, -(days - 1))
	f := keystore.LedgerFilter{AccountID: c.account, Since: since}

	byDay, err := d.st().UsageTotals(ctx, f, "day")
	if err != nil {
		return writeError(w, storeError(err))
	}
	byModel, err := d.st().UsageTotals(ctx, f, "model")
	if err != nil {
		return writeError(w, storeError(err))
	}
	byKey, err := d.st().UsageTotals(ctx, f, "key")
	if err != nil {
		return writeError(w, storeError(err))
	}
	total, err := d.st().UsageTotals(ctx, f, "")
	if err != nil {
		return writeError(w, storeError(err))
	}
	rows, err := d.st().Ledger(ctx, keystore.LedgerFilter{AccountID: c.account, Limit: recentRows})
	if err != nil {
		return writeError(w, storeError(err))
	}
	keys, err := d.st().Keys(ctx, c.account)
	if err != nil {
		return writeError(w, storeError(err))
	}
	names := make(map[string]string, len(keys))
	for _, k := range keys {
		names[k.ID] = k.Name
	}

	// every day of the period, zeros included, oldest first
	dayTotals := make(map[string]keystore.UsageTotal, len(byDay))
	for _, t := range byDay {
		dayTotals[t.Group] = t
	}
	dayViews := make([]management.UsageTotalView, 0, days)
	for i := 0; i < days; i++ {
		day := since.AddDate(0, 0, i).Format("2006-01-02")
		t := dayTotals[day]
		t.Group = day
		dayViews = append(dayViews, management.NewAccountUsageTotalView(t))
	}
	modelViews := make([]management.UsageTotalView, 0, len(byModel))
	for _, t := range byModel {
		modelViews = append(modelViews, management.NewAccountUsageTotalView(t))
	}
	keyViews := make([]management.UsageTotalView, 0, len(byKey))
	for _, t := range byKey {
		v := management.NewAccountUsageTotalView(t)
		if name, ok := names[t.Group]; ok {
			v.Name = name
		} else {
			v.Deleted = true
		}
		keyViews = append(keyViews, v)
	}
	rowViews := make([]management.LedgerRowView, 0, len(rows))
	for _, e := range rows {
		rowViews = append(rowViews, management.NewAccountLedgerRowView(e, names[e.KeyID]))
	}
	var tv management.UsageTotalView
	if len(total) > 0 {
		tv = management.NewAccountUsageTotalView(total[0])
	}
	return writeJSON(w, http.StatusOK, management.AccountUsageView{Account: d.view(a), Days: days,
		Since: since.Format("2006-01-02"), Total: tv, ByDay: dayViews, ByModel: modelViews, ByKey: keyViews, Recent: rowViews})
}
