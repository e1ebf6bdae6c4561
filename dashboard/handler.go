// Package dashboard is the ai_dashboard handler: a web dashboard where the
// holders of gateway accounts manage their API keys and see their balance
// and usage, and where operators listed as admins manage every account.
//
// The page, its script and its style sheet are embedded in the binary and
// served by the handler itself (no CDN; it works offline). Who the user is
// comes from Caddy's authentication ahead of the handler ({http.auth.user.id},
// set by basic_auth or any other authenticator); the handler maps that user
// to an account and never lets a user who is not an admin see or touch
// another account.
package dashboard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/metask/caddy-ai-gateway/keystore"
	"github.com/metask/caddy-ai-gateway/management"
)

func init() {
	caddy.RegisterModule(Dashboard{})
}

//go:embed assets
var assetsFS embed.FS

// Dashboard serves the account dashboard: an HTML page at the root of the
// path it is mounted on (use handle_path to mount it under a prefix), its
// assets under assets/, and a JSON API under api/ that the page calls.
//
// Every request must come authenticated by a handler ahead of this one
// (basic_auth, forward_auth that sets the user, …): the user id is read
// from UserID ({http.auth.user.id} by default). A request without a user id
// is refused with 401.
type Dashboard struct {
	// Admins lists the user ids that may switch between all accounts,
	// create accounts and adjust balances. Everyone else sees exactly one
	// account: their own.
	Admins []string `json:"admins,omitempty"`

	// Accounts maps user ids to account ids. A user not in the map uses
	// the account whose id equals the user id. A user who is not an admin
	// and whose account does not exist gets a 403 page that tells them to
	// ask the operator.
	Accounts map[string]string `json:"accounts,omitempty"`

	// UserID is the placeholder that yields the signed-in user's id.
	// Default: "{http.auth.user.id}", which basic_auth and Caddy's
	// authentication providers set.
	UserID string `json:"user_id,omitempty"`

	// GatewayURL is the base URL of the gateway's OpenAI API (for example
	// "https://api.example.com/v1"), shown next to new keys so that users
	// know where to send them. Optional.
	GatewayURL string `json:"gateway_url,omitempty"`

	app      storeSource
	currency string
	csrf     csrfSecret
	admins   map[string]bool
	logger   *zap.Logger
	page     *template.Template
	denied   *template.Template
}

// CaddyModule returns the Caddy module information.
func (Dashboard) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ai_dashboard",
		New: func() caddy.Module { return new(Dashboard) },
	}
}

// Provision finds the key store and checks the configuration.
func (d *Dashboard) Provision(ctx caddy.Context) error {
	d.logger = ctx.Logger()
	if d.UserID == "" {
		d.UserID = "{http.auth.user.id}"
	}
	d.admins = make(map[string]bool, len(d.Admins))
	for _, a := range d.Admins {
		if a == "" {
			return errors.New("an admin user id must not be empty")
		}
		d.admins[a] = true
	}
	for user, acct := range d.Accounts {
		if user == "" {
			return errors.New("an account mapping has an empty user id")
		}
		if err := keystore.ValidateAccountID(acct); err != nil {
			return fmt.Errorf("account of user %q: %w", user, err)
		}
	}
	if d.GatewayURL != "" {
		u, err := url.Parse(d.GatewayURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("gateway_url %q must be an absolute http or https URL", d.GatewayURL)
		}
	}
	app, err := management.LoadApp(ctx)
	if err != nil {
		return err
	}
	d.app, d.currency = app, app.CurrencyCode()
	if d.page, err = template.ParseFS(assetsFS, "assets/index.html"); err != nil {
		return fmt.Errorf("parsing the page template: %w", err)
	}
	if d.denied, err = template.ParseFS(assetsFS, "assets/denied.html"); err != nil {
		return fmt.Errorf("parsing the error page template: %w", err)
	}
	if d.csrf, err = loadCSRFSecret(ctx.Storage(), d.logger); err != nil {
		return err
	}
	return nil
}

// contentSecurityPolicy allows only the dashboard's own files: no inline
// script or style, no framing, no foreign connections.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"

// setSecurityHeaders sets the headers every dashboard response carries.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// ServeHTTP implements caddyhttp.MiddlewareHandler. The dashboard answers
// every request it gets (unknown paths with 404); it never calls next.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	setSecurityHeaders(w.Header())
	p := r.URL.Path
	if p == "" {
		p = "/"
	}
	isAPI := strings.HasPrefix(p, "/api/")

	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	user := ""
	if repl != nil {
		user = repl.ReplaceAll(d.UserID, "")
	}
	if user == "" {
		d.logger.Warn("request without a signed-in user; put an authenticator such as basic_auth before ai_dashboard",
			zap.String("path", p))
		if isAPI {
			return writeError(w, errNotSignedIn)
		}
		return d.renderDenied(w, http.StatusUnauthorized, "Not signed in",
			"This dashboard needs you to sign in, but the server did not identify you. "+
				"If you run this server: put basic_auth (or another authenticator) before ai_dashboard.")
	}
	if strings.HasPrefix(p, "/assets/") {
		// the page's files need no store (the error pages use them too)
		return serveAsset(w, r, strings.TrimPrefix(p, "/assets/"))
	}
	if _, err := d.app.WaitStore(r.Context()); err != nil || d.storeProblem(r.Context()) != nil {
		if isAPI {
			return writeError(w, errStoreUnavailable)
		}
		return d.renderDenied(w, http.StatusServiceUnavailable, "Database unavailable", databaseUnavailable)
	}
	s := d.session(user)

	switch {
	case isAPI:
		return d.serveAPI(w, r, s, strings.TrimPrefix(p, "/api/"))
	case p == "/" || p == "/index.html":
		return d.servePage(w, r, s)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNotFound)
	_, err := w.Write([]byte("404 page not found\n"))
	return err
}

// databaseUnavailable explains the page that is shown while the gateway's
// database is not open (or a reload switched to another one): it says
// nothing about the user's account, which may well exist.
const databaseUnavailable = "The gateway's database is unavailable, so the dashboard cannot show your account right now. " +
	"Reload the page in a moment; if this persists, tell the operator of this gateway."

// session is who is asking, as far as the dashboard is concerned.
type session struct {
	user  string
	admin bool
	// own is the account the user maps to (it may not exist).
	own string
}

func (d *Dashboard) session(user string) session {
	own := user
	if a, ok := d.Accounts[user]; ok {
		own = a
	}
	return session{user: user, admin: d.admins[user], own: own}
}

// pageData fills the page template.
type pageData struct {
	CSRFToken string
	User      string
}

func (d *Dashboard) servePage(w http.ResponseWriter, r *http.Request, s session) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return d.renderDenied(w, http.StatusMethodNotAllowed, "Method not allowed", "This page only answers GET.")
	}
	if !s.admin {
		if _, err := d.st().Account(r.Context(), s.own); err != nil {
			if errors.Is(err, keystore.ErrNotFound) && d.storeProblem(r.Context()) != nil {
				d.logger.Warn("dashboard: the key store is closed or no longer the gateway's", zap.String("user", s.user))
				return d.renderDenied(w, http.StatusServiceUnavailable, "Database unavailable", databaseUnavailable)
			}
			if errors.Is(err, keystore.ErrNotFound) {
				d.logger.Info("dashboard user has no account", zap.String("user", s.user), zap.String("account", s.own))
				return d.renderDenied(w, http.StatusForbidden, "No account yet",
					fmt.Sprintf("You are signed in as %q, but there is no gateway account %q for you. "+
						"Ask the operator of this gateway to create it (caddy ai-gateway accounts create %s), then reload this page.",
						s.user, s.own, s.own))
			}
			return d.renderDenied(w, http.StatusServiceUnavailable, "Temporarily unavailable",
				"The key store cannot answer right now. Try again in a moment.")
		}
	}
	token := d.csrf.token(s.user)
	var buf bytes.Buffer
	if err := d.page.Execute(&buf, pageData{CSRFToken: token, User: s.user}); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("rendering the dashboard page: %w", err))
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// The page carries the user's CSRF token: never cache it.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// renderDenied answers an HTML page that explains why the dashboard cannot
// be shown. It needs no script.
func (d *Dashboard) renderDenied(w http.ResponseWriter, status int, title, message string) error {
	var buf bytes.Buffer
	if err := d.denied.Execute(&buf, struct{ Title, Message string }{title, message}); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

// asset is one embedded static file with its precomputed validator.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// staticAssets are the files under assets/ that are served as they are
// (the page templates are not among them).
var staticAssets = func() map[string]asset {
	types := map[string]string{
		".js":  "text/javascript; charset=utf-8",
		".css": "text/css; charset=utf-8",
		".svg": "image/svg+xml",
		".png": "image/png",
	}
	out := map[string]asset{}
	entries, err := fs.ReadDir(assetsFS, "assets")
	if err != nil {
		return out
	}
	for _, e := range entries {
		ct, ok := types[path.Ext(e.Name())]
		if !ok || e.IsDir() {
			continue
		}
		b, err := assetsFS.ReadFile("assets/" + e.Name())
		if err != nil {
			continue
		}
		sum := sha256.Sum256(b)
		out[e.Name()] = asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	}
	return out
}()

// assetTime is the modification time reported for embedded files: the
// moment the process started (they cannot change while it runs).
var assetTime = time.Now()

func serveAsset(w http.ResponseWriter, r *http.Request, name string) error {
	a, ok := staticAssets[name]
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		w.Header().Set("Cache-Control", "no-store")
		return caddyhttp.Error(http.StatusNotFound, fmt.Errorf("no dashboard asset %q", name))
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	// Revalidate every time (cheap with the ETag), so an upgraded binary
	// is picked up at once.
	h.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, assetTime, bytes.NewReader(a.body))
	return nil
}

// Cleanup releases this config's reference to the CSRF secret.
func (d *Dashboard) Cleanup() error {
	if d.csrf != nil {
		_, _ = csrfSecrets.Delete(csrfSecretKey)
	}
	return nil
}

// storeSource is where the dashboard finds the key store: the ai_gateway
// app of its config (management.App), which opens it when the config starts.
type storeSource interface {
	Store() *keystore.Store
	WaitStore(ctx context.Context) (*keystore.Store, error)
}

// st is the key store of this config; ServeHTTP has checked that it is open.
func (d *Dashboard) st() *keystore.Store { return d.app.Store() }

// Interface guards
var (
	_ caddy.Provisioner           = (*Dashboard)(nil)
	_ caddy.CleanerUpper          = (*Dashboard)(nil)
	_ caddyhttp.MiddlewareHandler = (*Dashboard)(nil)
)
