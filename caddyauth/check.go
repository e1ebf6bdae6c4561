package caddyauth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"

	"github.com/metask/caddy-ai-gateway/keystore"
	"github.com/metask/caddy-ai-gateway/management"
)

// keyChecker holds what api_key_auth and the api_key provider share: the
// store and the wording of their 401s.
type keyChecker struct {
	app     *management.App
	keysURL string
}

// Failure reasons, used as bounded labels in logs.
const (
	reasonMissing   = "missing"
	reasonMalformed = "malformed"
	reasonUnknown   = "unknown_key"
	reasonExpired   = "expired_key"
	reasonKeyOff    = "key_disabled"
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
// the error to answer with. Credentials in other headers or the query are
// removed first (scrubCredentials). It fails closed: when the store cannot answer,
// the request is refused.
func (c *keyChecker) check(r *http.Request) (keystore.Identity, *openaiwire.APIError) {
	misplaced := scrubCredentials(r)
	values := r.Header.Values("Authorization")
	if len(values) == 0 || (len(values) == 1 && strings.TrimSpace(values[0]) == "") {
		msg := "You didn't provide an API key. Send it in an Authorization header using Bearer auth " +
			"(Authorization: Bearer YOUR_API_KEY). "
		if misplaced != "" {
			msg += "This gateway ignores keys sent in " + misplaced + ". "
		}
		return keystore.Identity{}, &openaiwire.APIError{
			Status: http.StatusUnauthorized, Type: openaiwire.TypeInvalidRequest, Code: openaiwire.CodeInvalidAPIKey, Reason: reasonMissing,
			Message: msg + c.where(),
		}
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	if len(values) > 1 || !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t") {
		return keystore.Identity{}, &openaiwire.APIError{
			Status: http.StatusUnauthorized, Type: openaiwire.TypeInvalidRequest, Code: openaiwire.CodeInvalidAPIKey, Reason: reasonMalformed,
			Message: "The Authorization header is malformed: it must be exactly 'Bearer YOUR_API_KEY'. " + c.where(),
		}
	}
	store, err := c.app.WaitStore(r.Context())
	if err != nil {
		return keystore.Identity{}, openaiwire.StoreUnavailable()
	}
	id, err := store.Authenticate(r.Context(), token)
	switch {
	case err == nil:
	case errors.Is(err, keystore.ErrUnknownKey):
		return keystore.Identity{}, &openaiwire.APIError{
			Status: http.StatusUnauthorized, Type: openaiwire.TypeInvalidRequest, Code: openaiwire.CodeInvalidAPIKey, Reason: reasonUnknown,
			Message: fmt.Sprintf("Incorrect API key provided: %s. The key does not exist or was deleted. %s",
				keystore.MaskKey(token), c.where()),
		}
	case errors.Is(err, keystore.ErrKeyDisabled):
		return keystore.Identity{}, &openaiwire.APIError{
			Status: http.StatusUnauthorized, Type: openaiwire.TypeInvalidRequest, Code: openaiwire.CodeKeyDisabled, Reason: reasonKeyOff,
			Message: fmt.Sprintf("The API key %s is disabled. Enable it again where you manage your keys, or use another key. %s",
				keystore.MaskKey(token), c.where()),
		}
	case errors.Is(err, keystore.ErrExpiredKey):
		return keystore.Identity{}, &openaiwire.APIError{
			Status: http.StatusUnauthorized, Type: openaiwire.TypeInvalidRequest, Code: openaiwire.CodeInvalidAPIKey, Reason: reasonExpired,
			Message: fmt.Sprintf("The API key %s has expired. Use its replacement or create a new key. %s",
				keystore.MaskKey(token), c.where()),
		}
	default:
		return keystore.Identity{}, openaiwire.StoreUnavailable()
	}
	_, disabled, err := store.Balance(id.AccountID)
	if err != nil {
		return keystore.Identity{}, openaiwire.StoreUnavailable()
	}
	if disabled {
		return keystore.Identity{}, openaiwire.AccountDisabled(id.AccountID)
	}
	return id, nil
}
