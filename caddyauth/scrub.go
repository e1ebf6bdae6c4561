package caddyauth

import (
	"net/http"
	"strings"
)

// credentialHeaders are the other places clients put an API key (Azure's
// api-key, Anthropic-style X-Api-Key). The gateway only accepts Bearer keys,
// but a key sent in one of these must still never reach the provider.
var credentialHeaders = [...]string{"X-Api-Key", "Api-Key"}

// credentialParams are query parameters that carry keys (?key=…).
var credentialParams = [...]string{"key", "api_key", "api-key"}

// scrubCredentials removes every copy of a client credential the gateway
// does not use from the request before anything else sees it: the headers
// above and the query parameters above. The Authorization header itself is
// removed once it has been checked (admit). It runs for refused requests
// too, so a handler after a refusal (handle_errors) never sees them either.
//
// Caddy's access and error logs record a copy of the request taken before
// any handler runs, so they are filtered by the log configuration instead
// (see docs/operations.md, "Keys in logs").
//
// It returns where it found a credential ("the X-Api-Key header", "the
// query parameter key"), or "" when there was none, so that a 401 can say
// where the key must go instead.
func scrubCredentials(r *http.Request) (found string) {
	for _, h := range credentialHeaders {
		if _, ok := r.Header[h]; ok {
			r.Header.Del(h)
			if found == "" {
				found = "the " + h + " header"
			}
		}
	}
	if r.URL == nil || r.URL.RawQuery == "" || !hasCredentialParam(r.URL.RawQuery) {
		return found
	}
	q := r.URL.Query()
	for name := range q {
		for _, p := range credentialParams {
			if strings.EqualFold(name, p) {
				q.Del(name)
				if found == "" {
					found = "the query parameter " + p
				}
			}
		}
	}
	r.URL.RawQuery = q.Encode()
	r.RequestURI = r.URL.RequestURI()
	return found
}

// hasCredentialParam is a cheap test that spares the common request the
// parsing of its query.
func hasCredentialParam(rawQuery string) bool {
	lower := strings.ToLower(rawQuery)
	for _, p := range credentialParams {
		if strings.HasPrefix(lower, p+"=") || strings.Contains(lower, "&"+p+"=") {
			return true
		}
	}
	return false
}
