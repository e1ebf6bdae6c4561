package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// Cross-site request forgery protection.
//
// A browser sends the Basic credentials (or the cookie of another
// authenticator) with any request to the dashboard's origin, including one
// that a foreign page makes it send. So every state-changing request (POST,
// PATCH, DELETE, …) must pass two independent checks:
//
//  1. Same origin. The Origin header, if present, must name this host
//     (scheme http or https); if there is no Origin, Sec-Fetch-Site must be
//     "same-origin". If Sec-Fetch-Site is present it must be "same-origin"
//     in any case. A request with neither header is refused.
//  2. Token. The X-CSRF-Token header must carry the user's token:
//     base64url(HMAC-SHA256(secret, "ai_dashboard csrf\x00" + user id)). The
//     page embeds it (the page is only readable by the same origin). The
//     secret is 32 random bytes kept in a Caddy usage pool, so tokens
//     survive config reloads and become invalid when Caddy restarts (the
//     page then asks the user to reload). A token is bound to the user: one user's
//     token is useless for another.
//
// Bodies must also be JSON (Content-Type: application/json), which an HTML
// form cannot send. The dashboard sets no cookies of its own.

// csrfHeader carries the token on state-changing requests.
const csrfHeader = "X-CSRF-Token"

// csrfSecrets holds the secret the tokens are made with, shared by every
// config that has a dashboard so that tokens survive config reloads; it is
// drawn anew once no config uses it any more.
var csrfSecrets = caddy.NewUsagePool()

const csrfSecretKey = "ai_dashboard.csrf_secret"

// csrfSecret is the HMAC key of the tokens. It never changes once drawn.
type csrfSecret []byte

// Destruct implements caddy.Destructor (nothing to release).
func (csrfSecret) Destruct() error { return nil }

// loadCSRFSecret takes a reference on the shared secret; release it with
// csrfSecrets.Delete(csrfSecretKey) in Cleanup.
func loadCSRFSecret() (csrfSecret, error) {
	v, _, err := csrfSecrets.LoadOrNew(csrfSecretKey, func() (caddy.Destructor, error) {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("drawing the csrf secret: %w", err)
		}
		return csrfSecret(b), nil
	})
	if err != nil {
		return nil, err
	}
	return v.(csrfSecret), nil
}

// token returns the token of a user.
func (k csrfSecret) token(user string) string {
	m := hmac.New(sha256.New, k)
	m.Write([]byte("ai_dashboard csrf\x00"))
	m.Write([]byte(user))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// valid reports whether got is the user's token.
func (k csrfSecret) valid(user, got string) bool {
	if got == "" || len(k) == 0 {
		return false
	}
	return hmac.Equal([]byte(k.token(user)), []byte(got))
}

// sameOrigin reports whether the request comes from a page of this origin,
// going by the headers browsers set and pages cannot forge.
func sameOrigin(r *http.Request) bool {
	sfs := r.Header.Get("Sec-Fetch-Site")
	if sfs != "" && sfs != "same-origin" {
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return sfs == "same-origin"
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.Path != "" || u.User != nil {
		return false
	}
	return strings.EqualFold(normalHost(u.Host, u.Scheme), normalHost(r.Host, u.Scheme))
}

// normalHost drops the default port of the scheme, so that
// "example.com:443" and "example.com" compare equal under https.
func normalHost(hostport, scheme string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return hostport
}

// checkStateChange applies the CSRF rules to a state-changing request.
func (k csrfSecret) checkStateChange(r *http.Request, user string) *apiError {
	if !sameOrigin(r) {
		return errForeignOrigin
	}
	if !k.valid(user, r.Header.Get(csrfHeader)) {
		return errBadToken
	}
	return nil
}

// safeMethod reports whether a method cannot change state.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}
