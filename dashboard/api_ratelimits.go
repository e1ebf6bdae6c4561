package dashboard

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/metask/caddy-ai-gateway/keystore"
	"github.com/metask/caddy-ai-gateway/management"
)

// Rate limits in the dashboard: an admin sets a key lineage's and an
// account's own rate limits (keystore.RateLimits) with "rate_limits" in a
// PATCH, with the admin API's semantics: an object changes the kinds it
// gives (a positive whole number sets the kind, 0 or null removes it),
// kinds not given stay as they are; null removes them all. Account holders
// see their limits but do not set them.

// errRatesNotAdmin refuses rate limits from an account holder.
var errRatesNotAdmin = &apiError{http.StatusForbidden, "permission_error", "admin_only",
	"Only an operator can set rate limits."}

// maxRateLimit is the largest limit accepted (keystore's bound).
const maxRateLimit = 1_000_000_000_000

// patchRateLimits applies a rate_limits member of a PATCH to the current
// own limits cur. The result is nil when no limit is left.
func patchRateLimits(cur *keystore.RateLimits, raw json.RawMessage) (*keystore.RateLimits, *apiError) {
	if isNull(raw) {
		return nil, nil
	}
	var m map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, badRequest(`rate_limits must be an object such as {"rpm": 60, "tpm": 100000, "concurrency": 4, "rpd": 10000, "tpd": 1000000}, or null to remove them all.`)
	}
	var req management.RateLimitsRequest
	dst := map[string]**int64{keystore.RateRPM: &req.RPM, keystore.RateTPM: &req.TPM,
		keystore.RateConcurrency: &req.Concurrency, keystore.RateRPD: &req.RPD, keystore.RateTPD: &req.TPD}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, kind := range names {
		p, ok := dst[kind]
		if !ok {
			return nil, badRequest("%q is not a kind of rate limit: give rpm, tpm, concurrency, rpd and/or tpd.", kind)
		}
		var n int64
		if v := m[kind]; !isNull(v) {
			s := strings.TrimSpace(string(v))
			var err error
			n, err = strconv.ParseInt(s, 10, 64)
			switch {
			case err != nil && isDigits(strings.TrimPrefix(s, "-")):
				return nil, badRequest("The %s limit is too large: at most %d.", kind, int64(maxRateLimit))
			case err != nil:
				return nil, badRequest("The %s limit must be a whole number (0 or null removes it), not %s.", kind, s)
			case n < 0:
				return nil, badRequest("The %s limit must not be negative (0 or null removes it).", kind)
			case n > maxRateLimit:
				return nil, badRequest("The %s limit is too large: at most %d.", kind, int64(maxRateLimit))
			}
		}
		*p = &n
	}
	var base keystore.RateLimits
	if cur != nil {
		base = *cur
	}
	l := req.Apply(base)
	if err := l.Validate(); err != nil {
		return nil, storeError(err)
	}
	if l.IsZero() {
		return nil, nil
	}
	return &l, nil
}

// isDigits reports whether s is a non-empty run of ASCII digits.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
