package management

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/metask/caddy-ai-gateway/keystore"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the management API under /ai-gateway/ on Caddy's admin
// endpoint. Routes (JSON in, JSON out):
//
//	GET    /ai-gateway/accounts
//	POST   /ai-gateway/accounts                 {"id","name"}
//	GET    /ai-gateway/accounts/{id}
//	PATCH  /ai-gateway/accounts/{id}            {"name","disabled","rate_limits"}
//	POST   /ai-gateway/accounts/{id}/balance    {"amount":"10.50","note"}
//	GET    /ai-gateway/keys[?account=ID]
//	POST   /ai-gateway/keys                     {"account","name","expires_at"|"expires_in"}
//	GET    /ai-gateway/keys/{id}
//	PATCH  /ai-gateway/keys/{id}                {"name","disabled","expires_at"|"expires_in","allowed_models","spend_limit","rate_limits"}
//	DELETE /ai-gateway/keys/{id}
//	POST   /ai-gateway/keys/{id}/rotate         {"grace":"24h"}
//	GET    /ai-gateway/usage?account=&key=&model=&status=&since=&until=&by=
//	GET    /ai-gateway/audit?account=&target=&action=&actor=&since=&until=&limit=&before=
//	GET    /ai-gateway/usage/export?format=csv|jsonl&account=&key=&model=&kind=&since=&until=
//	       (streamed; see export.go)
//
// The routes find the store of the running config at request time, so they
// follow config reloads. Every change is recorded in the audit log with the
// actor "admin API <remote address>", or "cli (<user>) via <remote address>"
// when the request names its CLI user in the X-Ai-Gateway-Actor header.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.ai_gateway",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

const adminPrefix = "/ai-gateway/"

// Routes implements caddy.AdminRouter.
func (a adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: adminPrefix, Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// currentApp returns the ai_gateway app of the running config.
func currentApp() (*App, error) {
	ctx := caddy.ActiveContext()
	if ctx.Context == nil {
		return nil, errors.New("no config is running")
	}
	app, err := ctx.AppIfConfigured("ai_gateway")
	if err != nil {
		return nil, errors.New("the running config uses no ai_gateway module; add the ai_gateway global option or an api_key_auth handler")
	}
	ga, ok := app.(*App)
	if !ok || ga.Store() == nil {
		return nil, errors.New("the ai_gateway app is not ready")
	}
	return ga, nil
}

func apiErr(status int, err error) error {
	return caddy.APIError{HTTPStatus: status, Err: err}
}

// storeErr maps keystore errors to HTTP statuses.
func storeErr(err error) error {
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return apiErr(http.StatusNotFound, err)
	case errors.Is(err, keystore.ErrExists):
		return apiErr(http.StatusConflict, err)
	case errors.Is(err, keystore.ErrInvalid):
		return apiErr(http.StatusBadRequest, err)
	case errors.Is(err, keystore.ErrNotAllowed):
		return apiErr(http.StatusForbidden, err)
	case keystore.IsUnavailable(err):
		// The database is down or failing (nothing was changed): the
		// same call may succeed once it is back.
		return apiErr(http.StatusServiceUnavailable, err)
	default:
		return apiErr(http.StatusInternalServerError, err)
	}
}

func (a adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	app, err := currentApp()
	if err != nil {
		return apiErr(http.StatusServiceUnavailable, err)
	}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, adminPrefix), "/"), "/")
	if err := refuseKeysInRequest(parts, r.URL.Query()); err != nil {
		return apiErr(http.StatusBadRequest, err)
	}
	h := adminHandler{app: app, store: app.Store()}
	r = r.WithContext(keystore.WithActor(r.Context(), adminActor(r)))
	switch {
	case len(parts) == 1 && parts[0] == "accounts":
		return h.method(w, r, map[string]func() error{
			http.MethodGet:  func() error { return h.listAccounts(w, r) },
			http.MethodPost: func() error { return h.createAccount(w, r) },
		})
	case len(parts) == 2 && parts[0] == "accounts":
		return h.method(w, r, map[string]func() error{
			http.MethodGet:   func() error { return h.getAccount(w, r, parts[1]) },
			http.MethodPatch: func() error { return h.updateAccount(w, r, parts[1]) },
		})
	case len(parts) == 3 && parts[0] == "accounts" && parts[2] == "balance":
		return h.method(w, r, map[string]func() error{
			http.MethodPost: func() error { return h.adjustBalance(w, r, parts[1]) },
		})
	case len(parts) == 1 && parts[0] == "keys":
		return h.method(w, r, map[string]func() error{
			http.MethodGet:  func() error { return h.listKeys(w, r) },
			http.MethodPost: func() error { return h.createKey(w, r) },
		})
	case len(parts) == 2 && parts[0] == "keys":
		return h.method(w, r, map[string]func() error{
			http.MethodGet:    func() error { return h.getKey(w, r, parts[1]) },
			http.MethodPatch:  func() error { return h.updateKey(w, r, parts[1]) },
			http.MethodDelete: func() error { return h.deleteKey(w, r, parts[1]) },
		})
	case len(parts) == 3 && parts[0] == "keys" && parts[2] == "rotate":
		return h.method(w, r, map[string]func() error{
			http.MethodPost: func() error { return h.rotateKey(w, r, parts[1]) },
		})
	case len(parts) == 1 && parts[0] == "backup":
		return h.method(w, r, map[string]func() error{
			http.MethodPost: func() error { return h.backup(w, r) },
		})
	case len(parts) == 1 && parts[0] == "usage":
		return h.method(w, r, map[string]func() error{
			http.MethodGet: func() error { return h.usage(w, r) },
		})
	case len(parts) == 1 && parts[0] == "audit":
		return h.method(w, r, map[string]func() error{
			http.MethodGet: func() error { return h.audit(w, r) },
		})
	case len(parts) == 2 && parts[0] == "usage" && parts[1] == "export":
		return h.method(w, r, map[string]func() error{
			http.MethodGet: func() error { return h.export(w, r) },
		})
	}
	return apiErr(http.StatusNotFound, fmt.Errorf("no such ai-gateway route: %s %s", r.Method, r.URL.Path))
}

// adminActor names who makes a request of the admin API, for the audit
// log: its remote address, and the user the CLI names in ActorHeader.
func adminActor(r *http.Request) string {
	if u := strings.TrimSpace(r.Header.Get(ActorHeader)); u != "" {
		if len(u) > 100 {
			u = u[:100]
		}
		return "cli (" + u + ") via " + r.RemoteAddr
	}
	return "admin API " + r.RemoteAddr
}

// writeJSON answers the admin API's JSON, indented for people reading it.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	return WriteIndentedJSON(w, status, v)
}

// refuseKeysInRequest refuses a plaintext API key where the route wants an
// id (path or query), before the key is looked up and echoed in a "not
// found"; the error shows it only masked.
func refuseKeysInRequest(parts []string, q url.Values) error {
	// No id, filter or name holds a NUL byte; PostgreSQL could not even
	// look one up.
	for _, p := range parts {
		if strings.IndexByte(p, 0) >= 0 {
			return fmt.Errorf("the path holds a NUL byte")
		}
	}
	if len(parts) >= 2 {
		switch parts[0] {
		case "keys":
			if err := keyWhereKeyIDBelongs("key id", parts[1]); err != nil {
				return err
			}
		case "accounts":
			if err := keyWhereIDBelongs("account id", parts[1]); err != nil {
				return err
			}
		}
	}
	for name, vals := range q {
		for _, v := range vals {
			if strings.IndexByte(name, 0) >= 0 || strings.IndexByte(v, 0) >= 0 {
				return fmt.Errorf("query parameter %q holds a NUL byte", strings.ReplaceAll(name, "\x00", ""))
			}
			check := keyWhereIDBelongs
			if name == "key" {
				check = keyWhereKeyIDBelongs
			}
			if err := check("query parameter "+name, v); err != nil {
				return err
			}
		}
	}
	return nil
}

type adminHandler struct {
	app   *App
	store *keystore.Store
}

func (h adminHandler) method(w http.ResponseWriter, r *http.Request, m map[string]func() error) error {
	if f, ok := m[r.Method]; ok {
		return f()
	}
	allowed := make([]string, 0, len(m))
	for k := range m {
		allowed = append(allowed, k)
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	return apiErr(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed on %s", r.Method, r.URL.Path))
}

// decode reads a JSON request body strictly (ReadJSON): unknown fields
// and trailing data are errors, so a typo never silently does nothing.
func decode(r *http.Request, v any) error {
	err := ReadJSON(r.Body, 1<<20, v)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrBodyTooLarge):
		return apiErr(http.StatusRequestEntityTooLarge, err)
	case errors.Is(err, ErrEmptyBody), errors.Is(err, ErrTrailingData), errors.Is(err, ErrRepeatedMember):
		return apiErr(http.StatusBadRequest, err)
	}
	return apiErr(http.StatusBadRequest, fmt.Errorf("decoding request body: %w", err))
}

func (h adminHandler) view(a keystore.Account) AccountView {
	return NewAccountView(h.store, a, h.app.Currency)
}

func (h adminHandler) keyView(ctx context.Context, k keystore.Key) KeyView {
	return KeyViewWithUse(ctx, h.store, k)
}

func (h adminHandler) listAccounts(w http.ResponseWriter, r *http.Request) error {
	accts, err := AccountSummaryViews(r.Context(), h.store, h.app.Currency)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, accts)
}

func (h adminHandler) createAccount(w http.ResponseWriter, r *http.Request) error {
	var req CreateAccountRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	a, err := h.store.CreateAccount(r.Context(), req.ID, req.Name)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusCreated, h.view(a))
}

func (h adminHandler) getAccount(w http.ResponseWriter, r *http.Request, id string) error {
	a, err := h.store.Account(r.Context(), id)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, h.view(a))
}

func (h adminHandler) updateAccount(w http.ResponseWriter, r *http.Request, id string) error {
	var req UpdateAccountRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Name == nil && req.Disabled == nil && req.RateLimits == nil {
		return apiErr(http.StatusBadRequest, errors.New("nothing to change: give name, disabled and/or rate_limits"))
	}
	var rl *keystore.RateLimits
	if req.RateLimits != nil {
		a, err := h.store.Account(r.Context(), id)
		if err != nil {
			return storeErr(err)
		}
		if rl, err = patchRateLimits(a.RateLimits, req.RateLimits); err != nil {
			return err
		}
	}
	var (
		a   keystore.Account
		err error
	)
	if req.Name != nil || req.Disabled != nil {
		if a, err = h.store.UpdateAccount(r.Context(), id, req.Name, req.Disabled); err != nil {
			return storeErr(err)
		}
	}
	if req.RateLimits != nil {
		if a, err = h.store.SetAccountRateLimits(r.Context(), id, rl); err != nil {
			return storeErr(err)
		}
	}
	return writeJSON(w, http.StatusOK, h.view(a))
}

func (h adminHandler) adjustBalance(w http.ResponseWriter, r *http.Request, id string) error {
	var req BalanceRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	amount, err := req.ParseAmount()
	if errors.Is(err, errAmountNotString) {
		return apiErr(http.StatusBadRequest, err)
	}
	if err != nil {
		return storeErr(err)
	}
	a, entry, err := h.store.AdjustBalance(r.Context(), id, amount, req.Note)
	if err != nil {
		return storeErr(err)
	}
	row := NewLedgerRowView(entry)
	return writeJSON(w, http.StatusOK, BalanceAdjustedView{Account: h.view(a), Entry: &row})
}

func (h adminHandler) listKeys(w http.ResponseWriter, r *http.Request) error {
	keys, err := h.store.Keys(r.Context(), r.URL.Query().Get("account"))
	if err != nil {
		return storeErr(err)
	}
	out := make([]KeyView, 0, len(keys))
	for _, k := range keys {
		out = append(out, h.keyView(r.Context(), k))
	}
	return writeJSON(w, http.StatusOK, out)
}

// parseLimit reads a spend limit of a request.
func parseLimit(l LimitRequest) (*keystore.SpendLimit, error) {
	sl, err := l.Parse()
	if errors.Is(err, errLimitNotString) {
		return nil, apiErr(http.StatusBadRequest, err)
	}
	if err != nil {
		return nil, storeErr(err)
	}
	return sl, nil
}

// patchRateLimits applies a rate_limits member of a PATCH to the current
// own limits cur: null removes them all, an object changes the kinds it
// gives (0 removes one). The result is nil when no limit is left.
func patchRateLimits(cur *keystore.RateLimits, raw json.RawMessage) (*keystore.RateLimits, error) {
	if isNull(raw) {
		return nil, nil
	}
	var req RateLimitsRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, apiErr(http.StatusBadRequest, fmt.Errorf(`rate_limits must be an object such as {"rpm": 60, "tpm": 100000, "concurrency": 4, "rpd": 10000, "tpd": 1000000} or null: %w`, err))
	}
	var base keystore.RateLimits
	if cur != nil {
		base = *cur
	}
	l := req.Apply(base)
	if err := l.Validate(); err != nil {
		return nil, storeErr(err)
	}
	if l.IsZero() {
		return nil, nil
	}
	return &l, nil
}

// expiry resolves expires_at / expires_in of a request.
func expiry(at *time.Time, in string) (*time.Time, error) {
	if in == "" {
		return at, nil
	}
	if at != nil {
		return nil, apiErr(http.StatusBadRequest, errors.New("give expires_at or expires_in, not both"))
	}
	d, err := caddy.ParseDuration(in)
	if err != nil || d <= 0 {
		return nil, apiErr(http.StatusBadRequest, fmt.Errorf("expires_in %q is not a positive duration", in))
	}
	t := time.Now().Add(d)
	return &t, nil
}

func (h adminHandler) createKey(w http.ResponseWriter, r *http.Request) error {
	var req CreateKeyRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Account == "" {
		return apiErr(http.StatusBadRequest, errors.New("account is required"))
	}
	pol := keystore.KeyPolicy{AllowedModels: req.AllowedModels}
	var err error
	if pol.ExpiresAt, err = expiry(req.ExpiresAt, req.ExpiresIn); err != nil {
		return err
	}
	if req.SpendLimit != nil {
		if pol.SpendLimit, err = parseLimit(*req.SpendLimit); err != nil {
			return err
		}
	}
	if req.RateLimits != nil {
		l := req.RateLimits.Apply(keystore.RateLimits{})
		pol.RateLimits = &l
	}
	k, plaintext, err := h.store.CreateKey(r.Context(), req.Account, req.Name, pol)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusCreated, NewSecretKeyView(h.keyView(r.Context(), k), plaintext))
}

func (h adminHandler) getKey(w http.ResponseWriter, r *http.Request, id string) error {
	k, err := h.store.Key(r.Context(), id)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, h.keyView(r.Context(), k))
}

// isNull reports whether a present JSON value is null.
func isNull(v json.RawMessage) bool { return string(v) == "null" }

// updateKey changes a key's name and policy. Absent fields are unchanged;
// expires_at, allowed_models and spend_limit set to null remove that part
// of the policy.
func (h adminHandler) updateKey(w http.ResponseWriter, r *http.Request, id string) error {
	var req UpdateKeyRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	u := keystore.KeyUpdate{Name: req.Name, Disabled: req.Disabled}
	if req.ExpiresAt != nil || req.ExpiresIn != "" {
		u.SetExpiry = true
		var at *time.Time
		if req.ExpiresAt != nil && !isNull(req.ExpiresAt) {
			if err := json.Unmarshal(req.ExpiresAt, &at); err != nil {
				return apiErr(http.StatusBadRequest, fmt.Errorf("expires_at must be an RFC 3339 time or null: %w", err))
			}
		}
		var err error
		if u.ExpiresAt, err = expiry(at, req.ExpiresIn); err != nil {
			return err
		}
	}
	if req.AllowedModels != nil {
		u.SetAllowedModels = true
		if !isNull(req.AllowedModels) {
			if err := json.Unmarshal(req.AllowedModels, &u.AllowedModels); err != nil {
				return apiErr(http.StatusBadRequest, errors.New("allowed_models must be an array of model patterns or null"))
			}
		}
	}
	if req.SpendLimit != nil {
		u.SetSpendLimit = true
		if !isNull(req.SpendLimit) {
			var l LimitRequest
			dec := json.NewDecoder(bytes.NewReader(req.SpendLimit))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&l); err != nil {
				return apiErr(http.StatusBadRequest, fmt.Errorf(`spend_limit must be {"amount": "5.00", "period": "total|day|month"} or null: %w`, err))
			}
			var err error
			if u.SpendLimit, err = parseLimit(l); err != nil {
				return err
			}
		}
	}
	if req.RateLimits != nil {
		cur, err := h.store.Key(r.Context(), id)
		if err != nil {
			return storeErr(err)
		}
		u.SetRateLimits = true
		if u.RateLimits, err = patchRateLimits(cur.RateLimits, req.RateLimits); err != nil {
			return err
		}
	}
	if u.Name == nil && u.Disabled == nil && !u.SetExpiry && !u.SetAllowedModels && !u.SetSpendLimit && !u.SetRateLimits {
		return apiErr(http.StatusBadRequest, errors.New("nothing to change: give name, disabled, expires_at, expires_in, allowed_models, spend_limit and/or rate_limits"))
	}
	k, err := h.store.UpdateKey(r.Context(), id, u)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, h.keyView(r.Context(), k))
}

func (h adminHandler) deleteKey(w http.ResponseWriter, r *http.Request, id string) error {
	if err := h.store.DeleteKey(r.Context(), id); err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, DeletedKeyView{ID: id, Deleted: true})
}

func (h adminHandler) rotateKey(w http.ResponseWriter, r *http.Request, id string) error {
	var req RotateKeyRequest
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			return err
		}
	}
	var grace time.Duration
	if req.Grace != "" {
		d, err := caddy.ParseDuration(req.Grace)
		switch {
		case err != nil:
			return apiErr(http.StatusBadRequest, fmt.Errorf("grace %q is not a duration such as 24h or 7d: %w", req.Grace, err))
		case d < 0:
			return apiErr(http.StatusBadRequest, fmt.Errorf("grace %q must not be negative", req.Grace))
		}
		grace = d
	}
	nk, plaintext, old, err := h.store.RotateKey(r.Context(), id, grace)
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, RotatedKeyView{
		New: NewSecretKeyView(h.keyView(r.Context(), nk), plaintext),
		Old: h.keyView(r.Context(), old),
	})
}

// Interface guard
var _ caddy.AdminRouter = adminAPI{}
