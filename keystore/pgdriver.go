package keystore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// The PostgreSQL store runs the same SQL as the SQLite one wherever the two
// agree: statements are written with SQLite's placeholders (? and ?N), and
// the database/sql connector of the PostgreSQL pools rewrites them to $N
// before pgx sees them (rewritePlaceholders). The few statements that
// differ branch on Store.dialect.

// dialect is the SQL dialect of a Store's database.
type dialect int

const (
	dialectSQLite dialect = iota
	dialectPostgres
)

func (d dialect) String() string {
	if d == dialectPostgres {
		return "postgres"
	}
	return "sqlite"
}

// IsPostgres reports whether a database setting names a PostgreSQL
// database rather than an SQLite file: a postgres:// or postgresql:// URL,
// or a libpq key=value connection string (such as "host=db dbname=aigw").
// Anything else is the path of an SQLite file.
func IsPostgres(database string) bool {
	d := strings.TrimSpace(database)
	lower := strings.ToLower(d)
	if strings.HasPrefix(lower, "postgres://") || strings.HasPrefix(lower, "postgresql://") {
		return true
	}
	return pgKeywordRe.MatchString(d)
}

// pgKeywordRe matches a key=value connection string: its first word is a
// libpq keyword followed by '='.
var pgKeywordRe = regexp.MustCompile(`(?i)^(host|hostaddr|port|dbname|user|password|sslpassword|sslmode|sslcert|sslkey|sslrootcert|service|connect_timeout|application_name|options|target_session_attrs)\s*=`)

// isSecretParam reports whether a connection parameter holds a secret:
// the password, or sslpassword (the passphrase of the client key), in any
// letter case (libpq refuses other cases, but its error would quote them).
func isSecretParam(name string) bool {
	return strings.EqualFold(name, "password") || strings.EqualFold(name, "sslpassword")
}

// RedactDatabase returns a database setting fit for logs and errors: a
// PostgreSQL connection string with its password (in the URL's user info,
// a password query parameter, or a password= pair) replaced by "xxxxx". An
// SQLite path is returned as it is.
func RedactDatabase(database string) string {
	if !IsPostgres(database) {
		return database
	}
	d := strings.TrimSpace(database)
	if pgKeywordRe.MatchString(d) {
		return pgPasswordPairRe.ReplaceAllString(d, "${1}xxxxx")
	}
	u, err := url.Parse(d)
	if err != nil {
		// Unparseable: show the scheme only, the rest may hold a secret.
		scheme, _, _ := strings.Cut(d, "://")
		return scheme + "://(unparseable connection URL)"
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q, changed := u.Query(), false
	for name := range q {
		if isSecretParam(name) {
			q.Set(name, "xxxxx")
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// dsnSecrets returns the secret values in a PostgreSQL connection string:
// its password and sslpassword, wherever they are given.
func dsnSecrets(database string) []string {
	var out []string
	d := strings.TrimSpace(database)
	if pgKeywordRe.MatchString(d) {
		for _, m := range pgPasswordPairRe.FindAllStringSubmatch(d, -1) {
			v := strings.Trim(m[2], "'")
			out = append(out, v, strings.ReplaceAll(v, `\'`, "'"))
		}
	} else if u, err := url.Parse(d); err == nil {
		if p, ok := u.User.Password(); ok {
			out = append(out, p)
		}
		for name, vals := range u.Query() {
			if isSecretParam(name) {
				out = append(out, vals...)
			}
		}
	}
	if cfg, err := pgx.ParseConfig(database); err == nil && cfg.Password != "" {
		out = append(out, cfg.Password)
	}
	kept := out[:0]
	for _, v := range out {
		if len(v) >= 3 { // a shorter value would blank out ordinary text
			kept = append(kept, v)
		}
	}
	return kept
}

// pgPasswordPairRe matches the value of password= in a key=value string,
// quoted ('...' with \' escapes) or not.
var pgPasswordPairRe = regexp.MustCompile(`(?i)(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)`)

// redactErr replaces the password of database, if it appears in err's
// text, by "xxxxx" (pgx errors may quote the connection string).
func redactErr(database string, err error) error {
	if err == nil || !IsPostgres(database) {
		return err
	}
	msg := err.Error()
	for _, secret := range dsnSecrets(database) {
		msg = strings.ReplaceAll(msg, secret, "xxxxx")
	}
	if msg == err.Error() {
		return err
	}
	return redactedError{msg: msg, err: err}
}

// redactedError is an error whose text had a password taken out; Unwrap
// keeps errors.Is working.
type redactedError struct {
	msg string
	err error
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

// pgDefaultConnectTimeout bounds a connection attempt when the connection
// string sets none, so that a PostgreSQL behind a dead network fails a
// commit (which is retried, see writer.go) instead of hanging the writer.
const pgDefaultConnectTimeout = 10 * time.Second

// openPostgres returns a database/sql pool on the PostgreSQL database of
// dsn whose connections rewrite ? placeholders to $N.
func openPostgres(dsn string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, redactErr(dsn, err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = pgDefaultConnectTimeout
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "caddy-ai-gateway"
	}
	// Times are unix milliseconds in BIGINT columns; the session time zone
	// only matters to the UTC day grouping, which names UTC itself.
	return sql.OpenDB(rewriteConnector{stdlib.GetConnector(*cfg)}), nil
}

// rewriteConnector wraps pgx's database/sql connector so that every
// statement has its placeholders rewritten.
type rewriteConnector struct{ inner driver.Connector }

func (c rewriteConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	pc, ok := conn.(*stdlib.Conn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("unexpected pgx connection type %T", conn)
	}
	return rewriteConn{pc}, nil
}

func (c rewriteConnector) Driver() driver.Driver { return c.inner.Driver() }

// rewriteConn is a pgx connection whose statements have their placeholders
// rewritten; every other method (transactions, ping, session reset, value
// checks) is pgx's own.
type rewriteConn struct{ *stdlib.Conn }

func (c rewriteConn) Prepare(query string) (driver.Stmt, error) {
	return c.Conn.Prepare(rewritePlaceholders(query))
}

func (c rewriteConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.PrepareContext(ctx, rewritePlaceholders(query))
}

func (c rewriteConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if err := checkText(args); err != nil {
		return nil, err
	}
	return c.Conn.ExecContext(ctx, rewritePlaceholders(query), args)
}

func (c rewriteConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if err := checkText(args); err != nil {
		return nil, err
	}
	return c.Conn.QueryContext(ctx, rewritePlaceholders(query), args)
}

// checkText refuses text arguments PostgreSQL cannot take: a NUL byte (its
// text type has none; SQLite stores it). Such input is the caller's
// mistake, so it fails with ErrInvalid (400), not as a database error
// (500). Ledger rows never carry one (Settle replaces it).
func checkText(args []driver.NamedValue) error {
	for _, a := range args {
		if s, ok := a.Value.(string); ok && strings.IndexByte(s, 0) >= 0 {
			return fmt.Errorf("%w: text with a NUL byte (\\u0000) cannot be stored or looked up", ErrInvalid)
		}
	}
	return nil
}

// rewritePlaceholders turns SQLite's placeholders into PostgreSQL's: ?N
// becomes $N, and a bare ? the next number after the largest used so far
// (SQLite's numbering). Quoted strings, quoted identifiers and comments are
// left alone.
func rewritePlaceholders(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	maxN := 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(q) && q[j] != c {
				j++
			}
			b.WriteString(q[i:min(j+1, len(q))])
			i = j
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				j = len(q) - i
			}
			b.WriteString(q[i : i+j])
			i += j - 1
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			j := strings.Index(q[i+2:], "*/")
			end := len(q)
			if j >= 0 {
				end = i + 2 + j + 2
			}
			b.WriteString(q[i:end])
			i = end - 1
		case c == '?':
			j := i + 1
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			n := maxN + 1
			if j > i+1 {
				n, _ = strconv.Atoi(q[i+1 : j])
			}
			maxN = max(maxN, n)
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			i = j - 1
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
