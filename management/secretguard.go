package management

import (
	"fmt"
	"strings"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// A plaintext API key must never travel where an id belongs: the admin API
// would echo it in its error ("key ... not found") and Caddy logs request
// URIs. Key ids look like key_0123456789abcdef (keystore's newKeyID), never
// like sk-…, so a key id that starts with the key prefix is a key; an
// account id may start with "sk-", so there only the full shape of a key
// (keystore.LooksLikeKey) counts.

// keyHint is how `caddy ai-gateway keys list` shows a key in its HINT
// column ("sk-…wxyz"), computed like the store computes it.
func keyHint(s string) string {
	if len(s) < 8 {
		return keystore.KeyPrefix + "…"
	}
	return keystore.KeyPrefix + "…" + s[len(s)-4:]
}

// findKeyIDHint tells the holder of a plaintext key how to find its id.
func findKeyIDHint(s string) string {
	hint := "find its id (key_…) with 'caddy ai-gateway keys list'"
	if keystore.LooksLikeKey(s) {
		hint += fmt.Sprintf(", in the row whose HINT is %s", keyHint(s))
	}
	return hint
}

// keyWhereKeyIDBelongs returns an error, showing the value only masked,
// when s, given as the key id `what`, is a plaintext key (or the start of
// one).
func keyWhereKeyIDBelongs(what, s string) error {
	t := strings.TrimSpace(s)
	if !strings.HasPrefix(t, keystore.KeyPrefix) {
		return nil
	}
	return fmt.Errorf("%s %s is an API key itself, not a key id; never pass the key: %s", what, keystore.MaskKey(t), findKeyIDHint(t))
}

// keyWhereIDBelongs returns an error, showing the value only masked, when
// s, given as `what` (an account id, a name, a note, …), has the shape of
// a plaintext key.
func keyWhereIDBelongs(what, s string) error {
	t := strings.TrimSpace(s)
	if !keystore.LooksLikeKey(t) {
		return nil
	}
	return fmt.Errorf("%s %s is an API key; never pass the key itself: to act on the key, %s", what, keystore.MaskKey(t), findKeyIDHint(t))
}
