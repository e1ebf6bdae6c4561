package dashboard

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
	"github.com/metask/caddy-ai-gateway/keystore"
	"github.com/metask/caddy-ai-gateway/management"
)

// The dashboard's JSON API, relative to where the handler is mounted:
//
//	GET    api/session                       who is signed in, the account shown, (admins) all accounts
//	GET    api/accounts?q=&status=           (admins) accounts with spend this month, keys, status
//	POST   api/accounts                      (admins) {"id","name"}
//	PATCH  api/accounts/{id}                 (admins) {"name","disabled","rate_limits"}
//	POST   api/balance                       (admins) {"amount":"10.50","note"} (a correction needs a note)
//	GET    api/keys                          keys of the account, with status, policy and spend
//	POST   api/keys                          {"name","expires_in","allowed_models","spend_limit"}: the new key, shown this once
//	PATCH  api/keys/{id}                     {"name","disabled","allowed_models","spend_limit","rate_limits" (admins)}
//	DELETE api/keys/{id}
//	POST   api/keys/{id}/rotate              {"grace"}: the replacement key, shown this once
//	GET    api/usage?days=30                 balance, spend by day, model and key, recent ledger rows
//	GET    api/usage/log?from=&to=&key=&model=&status=&kind=&cursor=&limit=
//	                                         ledger rows, newest first, paged, with totals
//	GET    api/usage/log.csv?(same filters)  every selected row as CSV
//	GET    api/audit?account=&action=&actor=&target=&from=&to=&cursor=&limit=
//	                                         audit entries (an account holder: their account's only)
//
// Every change is recorded in the audit log with the actor
// "dashboard:<user>".
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
			sentence(afterSentinel(msg, keystore.ErrInvalid))}
	case errors.Is(err, keystore.ErrNotFound):
		return &apiError{http.StatusNotFound, "invalid_request_error", "not_found", msg}
	case errors.Is(err, keystore.ErrExists):
		return &apiError{http.StatusConflict, "invalid_request_error", "already_exists", msg}
	case errors.Is(err, keystore.ErrNotAllowed):
		return &apiError{http.StatusForbidden, "permission_error", "not_allowed", sentence(afterSentinel(msg, keystore.ErrNotAllowed))}
	case keystore.IsUnavailable(err):
		return &apiError{http.StatusServiceUnavailable, "server_error", "store_unavailable",
			"The key store is not available right now. Try again in a moment."}
	}
	return &apiError{http.StatusInternalServerError, "server_error", "internal_error",
		"Something went wrong on the server. Try again; if it persists, tell the operator."}
}

// afterSentinel is the part of a store error's message after its
// sentinel ("updating key \"k\": not allowed: the operator …" → "the
// operator …"), or the whole message.
func afterSentinel(msg string, sentinel error) string {
	if _, after, ok := strings.Cut(msg, sentinel.Error()+": "); ok {
		return after
	}
	return msg
}

// sentence makes a message a sentence for the page: a capital first
// letter and a final period.
func sentence(msg string) string {
	if msg == "" {
		return msg
	}
	r, n := utf8.DecodeRuneInString(msg)
	msg = string(unicode.ToUpper(r)) + msg[n:]
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
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
	case errors.Is(err, management.ErrBodyTooLarge):
		return &apiError{http.StatusRequestEntityTooLarge, "invalid_request_error", "body_too_large",
			"The request is too large: the dashboard accepts at most 64 KB."}
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
	// target is the {id} of account routes.
	target string
}

func (d *Dashboard) serveAPI(w http.ResponseWriter, r *http.Request, s session, rest string) error {
	// No id or filter holds a NUL byte (PostgreSQL could not look one up).
	if strings.IndexByte(rest, 0) >= 0 || strings.IndexByte(r.URL.RawQuery, 0) >= 0 || strings.Contains(r.URL.RawQuery, "%00") {
		return writeError(w, badRequest("The address holds a NUL character (%%00), which no id or filter can contain."))
	}
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
	case len(parts) == 2 && parts[0] == "accounts" && parts[1] != "":
		c.target = parts[1]
		methods = map[string]route{http.MethodPatch: {admin: true, serve: d.updateAccount}}
	case len(parts) == 1 && parts[0] == "audit":
		methods = map[string]route{http.MethodGet: {serve: d.audit}}
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
			http.MethodPatch:  {account: true, serve: d.updateKey},
			http.MethodDelete: {account: true, serve: d.deleteKey},
		}
	case len(parts) == 3 && parts[0] == "keys" && parts[1] != "" && parts[2] == "rotate":
		c.keyID = parts[1]
		methods = map[string]route{http.MethodPost: {account: true, serve: d.rotateKey}}
	case len(parts) == 1 && parts[0] == "usage":
		methods = map[string]route{http.MethodGet: {account: true, serve: d.usage}}
	case len(parts) == 2 && parts[0] == "usage" && parts[1] == "log":
		methods = map[string]route{http.MethodGet: {account: true, serve: d.usageLog}}
	case len(parts) == 2 && parts[0] == "usage" && parts[1] == "log.csv":
		methods = map[string]route{http.MethodGet: {account: true, serve: d.usageLogCSV}}
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
	if e := d.storeProblem(r.Context()); e != nil {
		return writeError(w, e)
	}
	r = r.WithContext(keystore.WithActor(r.Context(), "dashboard:"+s.user))
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
