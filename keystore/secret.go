package keystore

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"strings"
)

// KeyPrefix starts every API key the store issues.
const KeyPrefix = "sk-"

// keyRandomLen is the number of base62 characters after the prefix:
// 48 characters carry about 285 bits of entropy (the key format promises at least 43).
const keyRandomLen = 48

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// randomBase62 returns n characters drawn uniformly from the base62 alphabet
// using crypto/rand. Bytes >= 248 are rejected so that the modulo does not
// bias the distribution.
func randomBase62(n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/4+8)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("reading random bytes: %w", err)
		}
		for _, c := range buf {
			if c >= 248 {
				continue
			}
			out = append(out, base62[c%62])
			if len(out) == n {
				break
			}
		}
	}
	return string(out), nil
}

// newPlaintextKey returns a fresh API key: "sk-" and 48 base62 characters.
func newPlaintextKey() (string, error) {
	r, err := randomBase62(keyRandomLen)
	if err != nil {
		return "", err
	}
	return KeyPrefix + r, nil
}

// HashKey returns the SHA-256 of a plaintext key, the only form in which a
// key is stored. A fast hash is right here: keys carry ~285 bits of entropy
// from crypto/rand, so there is nothing for a slow password hash to protect.
func HashKey(plaintext string) [32]byte {
	return sha256.Sum256([]byte(plaintext))
}

// keyHint is the display hint stored with a key: "sk-…wxyz".
func keyHint(plaintext string) string {
	if len(plaintext) < 8 {
		return KeyPrefix + "…"
	}
	return KeyPrefix + "…" + plaintext[len(plaintext)-4:]
}

// MaskKey renders an untrusted key-like string for an error message or a log
// line without revealing it: "sk-ab…wxyz". Short or odd input is masked
// completely. Only printable ASCII survives, so a masked value can be placed
// in JSON or a log safely.
func MaskKey(s string) string {
	clean := strings.Map(func(r rune) rune {
		if r < 0x21 || r > 0x7e {
			return -1
		}
		return r
	}, s)
	if len(clean) < 12 {
		return "***"
	}
	head := 5
	if !strings.HasPrefix(clean, KeyPrefix) {
		head = 2
	}
	return clean[:head] + "…" + clean[len(clean)-4:]
}

// LooksLikeKey reports whether s has the shape of a key the store issues.
// It lets the hot path reject garbage without touching the database.
func LooksLikeKey(s string) bool {
	if !strings.HasPrefix(s, KeyPrefix) {
		return false
	}
	r := s[len(KeyPrefix):]
	if len(r) < 43 || len(r) > 128 {
		return false
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
