package gwtest

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// SecretForms lists the representations of a key that must never be at
// rest or in a log: the plaintext, its random part (without
// keystore.KeyPrefix), and their base64 (four alphabets) and hex (lower and
// upper case) encodings.
func SecretForms(secret string) []string {
	var out []string
	for _, s := range []string{secret, strings.TrimPrefix(secret, keystore.KeyPrefix)} {
		b := []byte(s)
		out = append(out, s,
			base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
			base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
			hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b)))
	}
	return out
}

// ReadIfExists returns the content of a file, or nil if there is none.
func ReadIfExists(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return b
}
