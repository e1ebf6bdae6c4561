package dashboard

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
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
//     secret is 32 random bytes drawn once and kept in Caddy's storage
//     (the same place as its TLS keys and certificates), so tokens survive
//     config reloads, restarts of Caddy and, with a shared storage, work on
//     every instance behind a load balancer. A page open across a restart
//     keeps working. A token is bound to the user: one user's token is
//     useless for another.
//
// Bodies must also be JSON (Content-Type: application/json), which an HTML
// form cannot send. The dashboard sets no cookies of its own.

// csrfHeader carries the token on state-changing requests.
const csrfHeader = "X-CSRF-Token"

// csrfSecrets holds the secret the tokens are made with, shared by every
// config that has a dashboard; it is read from Caddy's storage (or drawn
// and written there) when the first config needs it.
var csrfSecrets = caddy.NewUsagePool()

const csrfSecretKey = "ai_dashboard.csrf_secret"

// csrfSecret is the HMAC key of the tokens. It never changes once drawn.
type csrfSecret []byte

// Destruct implements caddy.Destructor (nothing to release).
func (csrfSecret) Destruct() error { return nil }

// csrfStorageKey is where the secret lives in Caddy's storage.
const csrfStorageKey = "ai_dashboard/csrf_secret"

// loadCSRFSecret takes a reference on the shared secret; release it with
// csrfSecrets.Delete(csrfSecretKey) in Cleanup. The secret comes from
// Caddy's storage, where the first instance to need it writes it (under
// the storage's lock, so instances sharing a storage agree). If the
// storage cannot be used, a secret is drawn for this process alone and
// the problem is logged: pages then have to fetch a new token after a
// restart (the page does that by itself).
func loadCSRFSecret(storage certmagic.Storage, logger *zap.Logger) (csrfSecret, error) {
	v, _, err := csrfSecrets.LoadOrNew(csrfSecretKey, func() (caddy.Destructor, error) {
		if storage != nil {
			s, err := storedCSRFSecret(storage)
			if err == nil {
				return s, nil
			}
			logger.Warn("ai_dashboard: cannot keep the CSRF secret in Caddy's storage; open pages will fetch a new token after a restart",
				zap.Error(err))
		}
		return drawCSRFSecret()
	})
	if err != nil {
		return nil, err
	}
	return v.(csrfSecret), nil
}

func drawCSRFSecret() (csrfSecret, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("drawing the csrf secret: %w", err)
	}
	return csrfSecret(b), nil
}

// storedCSRFSecret reads the secret from storage, or draws and stores it.
func storedCSRFSecret(storage certmagic.Storage) (csrfSecret, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := storage.Lock(ctx, csrfStorageKey); err != nil {
		return nil, fmt.Errorf("locking %s: %w", csrfStorageKey, err)
	}
	defer func() { _ = storage.Unlock(context.Background(), csrfStorageKey) }()
	b, err := storage.Load(ctx, csrfStorageKey)
	if err == nil {
		s, derr := base64.RawURLEncoding.DecodeString(strings.TrimSpace(string(b)))
		if derr == nil && len(s) == 32 {
			return csrfSecret(s), nil
		}
		// a damaged secret is replaced below
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %w", csrfStorageKey, err)
	}
	s, err := drawCSRFSecret()
	if err != nil {
		return nil, err
	}
	if err := storage.Store(ctx, csrfStorageKey, []byte(base64.RawURLEncoding.EncodeToString(s))); err != nil {
		return nil, fmt.Errorf("writing %s: %w", csrfStorageKey, err)
	}
	return s, nil
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
