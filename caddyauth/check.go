package caddyauth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// keyChecker holds what api_key_auth and the api_key provider share: the
// store and the wording of their 401s.
type keyChecker struct {
	store   *keystore.Store
	keysURL string
}

// Failure reasons, used as bounded labels in logs.
const (
	reasonMissing   = "missing"
	reasonMalformed = "malformed"
	reasonUnknown   = "unknown_key"
	reasonExpired   = "expired_key"
	reasonDisabled  = "account_disabled"
	reasonStore     = "store_unavailable"
)

func (c *keyChecker) where() string {
	if c.keysURL == "" {
		return "Ask the operator of this gateway for an API key."
	}
	return "You can find your API key at " + c.keysURL + "."
}

// check authenticates the request's Bearer key. It returns the identity, or
// the error to answer with. It fails closed: when the store cannot answer,
// the request is refused.
func (c *keyChecker) check(r *http.Request) (keystore.Identity, *apiError) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 || (len(values) == 1 && strings.TrimSpace(values[0]) == "") {
		return keystore.Identity{}, &apiError{
			status: http.StatusUnauthorized, typ: typeInvalidRequest, code: codeInvalidAPIKey, reason: reasonMissing,
			message: "You didn't provide an API key. Send it in an Authorization header using Bearer auth " +
				"(Authorization: Bearer YOUR_API_KEY). " + c.where(),
		}
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	if len(values) > 1 || !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t") {
		return keystore.Identity{}, &apiError{
			status: http.StatusUnauthorized, typ: typeInvalidRequest, code: codeInvalidAPIKey, reason: reasonMalformed,
			message: "The Authorization header is malformed: it must be exactly 'Bearer YOUR_API_KEY'. " + c.where(),
		}
	}
	id, err := c.store.Authenticate(r.Context(), token)
	switch {
	case err == nil:
	case errors.Is(err, keystore.ErrUnknownKey):
		return keystore.Identity{}, &apiError{
			status: http.StatusUnauthorized, typ: typeInvalidRequest, code: codeInvalidAPIKey, reason: reasonUnknown,
			message: fmt.Sprintf("Incorrect API key provided: %s. The key does not exist or was deleted. %s",
				keystore.MaskKey(token), c.where()),
		}
	case errors.Is(err, keystore.ErrExpiredKey):
		return keystore.Identity{}, &apiError{
			status: http.StatusUnauthorized, typ: typeInvalidRequest, code: codeInvalidAPIKey, reason: reasonExpired,
			message: fmt.Sprintf("The API key %s has expired. Use its replacement or create a new key. %s",
				keystore.MaskKey(token), c.where()),
		}
	default:
		return keystore.Identity{}, storeUnavailable()
	}
	_, disabled, err := c.store.Balance(id.AccountID)
	if err != nil {
		return keystore.Identity{}, storeUnavailable()
	}
	if disabled {
		return keystore.Identity{}, accountDisabled(id.AccountID)
	}
	return id, nil
}

func storeUnavailable() *apiError {
	return &apiError{
		status: http.StatusServiceUnavailable, typ: typeServerError, code: codeStoreUnavailable, reason: reasonStore,
		message: "The gateway's key store is unavailable, so the request was not sent to the provider. Try again shortly.",
	}
}

func accountDisabled(accountID string) *apiError {
	return &apiError{
		status: http.StatusForbidden, typ: typeInvalidRequest, code: codeAccountDisabled, reason: reasonDisabled,
		message: fmt.Sprintf("The account %q that owns this API key is disabled. Contact the operator of this gateway.", accountID),
	}
}
