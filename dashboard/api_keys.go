package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/keystore"
	"github.com/metask/caddy-ai-gateway/management"
)

// Keys in the dashboard. An account holder sets the policy of their own
// keys: at creation anything (the key is theirs), on a key an operator
// set a policy on only within it (keystore.AdminPolicy: fewer models, a
// lower limit; clearing goes back to the operator's). An admin of the
// dashboard is an operator: what they set is the key's AdminPolicy.

// keyView shows a key with what it spent of its limit.
func (d *Dashboard) keyView(ctx context.Context, k keystore.Key) management.KeyView {
	return management.KeyViewWithUse(ctx, d.st(), k)
}

func (d *Dashboard) listKeys(w http.ResponseWriter, r *http.Request, c *call) error {
	keys, err := d.st().Keys(r.Context(), c.account)
	if err != nil {
		return writeError(w, storeError(err))
	}
	out := management.KeyListView{Keys: make([]management.KeyView, 0, len(keys))}
	for _, k := range keys {
		out.Keys = append(out.Keys, d.keyView(r.Context(), k))
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

// parseLimit reads a spend limit of a request.
func parseLimit(l management.LimitRequest) (*keystore.SpendLimit, *apiError) {
	sl, err := l.Parse()
	if err != nil {
		return nil, amountError("Spend limit", err)
	}
	switch sl.Period {
	case keystore.PeriodTotal, keystore.PeriodDay, keystore.PeriodMonth:
	default:
		return nil, badRequest("The spend limit's period must be total, day or month.")
	}
	if sl.Amount <= 0 {
		return nil, badRequest("Spend limit must be more than zero; to remove it, clear it.")
	}
	return sl, nil
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
	pol := keystore.KeyPolicy{AllowedModels: req.AllowedModels, ByHolder: !c.s.admin}
	if dur > 0 {
		t := time.Now().Add(dur)
		pol.ExpiresAt = &t
	}
	if req.SpendLimit != nil {
		if pol.SpendLimit, e = parseLimit(*req.SpendLimit); e != nil {
			return writeError(w, e)
		}
	}
	k, plaintext, err := d.st().CreateKey(r.Context(), c.account, req.Name, pol)
	if err != nil {
		return writeError(w, storeError(err))
	}
	d.logger.Info("dashboard: key created", zap.String("user", c.s.user), zap.String("account", c.account),
		zap.String("key_id", k.ID))
	return writeJSON(w, http.StatusCreated, management.NewSecretKeyView(d.keyView(r.Context(), k), plaintext))
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

// isNull reports whether a present JSON value is null.
func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

// updateKey renames a key, disables or enables it, or changes its policy.
func (d *Dashboard) updateKey(w http.ResponseWriter, r *http.Request, c *call) error {
	var req management.DashboardUpdateKeyRequest
	if e := decode(r, &req); e != nil {
		return writeError(w, e)
	}
	u := keystore.KeyUpdate{Name: req.Name, Disabled: req.Disabled, AsHolder: !c.s.admin}
	if req.AllowedModels != nil {
		u.SetAllowedModels = true
		if !isNull(req.AllowedModels) {
			if err := json.Unmarshal(req.AllowedModels, &u.AllowedModels); err != nil {
				return writeError(w, badRequest("allowed_models must be a list of model names or patterns, or null."))
			}
		}
	}
	if req.SpendLimit != nil {
		u.SetSpendLimit = true
		if !isNull(req.SpendLimit) {
			var l management.LimitRequest
			dec := json.NewDecoder(bytes.NewReader(req.SpendLimit))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&l); err != nil {
				return writeError(w, badRequest(`spend_limit must be {"amount": "5.00", "period": "total", "day" or "month"} or null.`))
			}
			var e *apiError
			if u.SpendLimit, e = parseLimit(l); e != nil {
				return writeError(w, e)
			}
		}
	}
	if req.RateLimits != nil && !c.s.admin {
		return writeError(w, errRatesNotAdmin)
	}
	if u.Name == nil && u.Disabled == nil && !u.SetAllowedModels && !u.SetSpendLimit && req.RateLimits == nil {
		return writeError(w, badRequest("Nothing to change: give name, disabled, allowed_models, spend_limit and/or rate_limits."))
	}
	cur, e := d.ownKey(r.Context(), c)
	if e != nil {
		return writeError(w, e)
	}
	if req.RateLimits != nil {
		u.SetRateLimits = true
		if u.RateLimits, e = patchRateLimits(cur.RateLimits, req.RateLimits); e != nil {
			return writeError(w, e)
		}
	}
	k, err := d.st().UpdateKey(r.Context(), c.keyID, u)
	if err != nil {
		if errors.Is(err, keystore.ErrNotFound) {
			return writeError(w, errKeyNotFound)
		}
		return writeError(w, storeError(err))
	}
	d.logger.Info("dashboard: key updated", zap.String("user", c.s.user), zap.String("account", c.account),
		zap.String("key_id", k.ID), zap.Bool("disabled", k.Disabled))
	return writeJSON(w, http.StatusOK, d.keyView(r.Context(), k))
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
		New: management.NewSecretKeyView(d.keyView(r.Context(), nk), plaintext),
		Old: management.NewKeyView(old),
	})
}
