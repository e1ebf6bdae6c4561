package keystore

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors. Every error the store returns for one of these cases wraps
// the sentinel with %w, so callers test with errors.Is and still get a message
// that says which account, key or value was at fault.
var (
	// ErrNotFound: the account or key does not exist (or the key was deleted).
	ErrNotFound = errors.New("not found")
	// ErrExists: an account with that id already exists.
	ErrExists = errors.New("already exists")
	// ErrInvalid: an argument is malformed (id, name, amount, duration).
	ErrInvalid = errors.New("invalid argument")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("key store is closed")
	// ErrLocked: Open found the database already open, by another process
	// or by another Store of this one. Only one process may write it.
	ErrLocked = errors.New("in use by another process")

	// ErrUnknownKey: no live key has this value (never issued or deleted).
	ErrUnknownKey = errors.New("unknown api key")
	// ErrExpiredKey: the key exists but its expiry (or rotation grace
	// period) has passed.
	ErrExpiredKey = errors.New("expired api key")
	// ErrKeyDisabled: the key exists but is disabled (it can be enabled
	// again).
	ErrKeyDisabled = errors.New("disabled api key")
	// ErrNotAllowed: the change goes beyond what the caller may do (an
	// account holder widening a policy an operator set, or enabling a key
	// an operator disabled).
	ErrNotAllowed = errors.New("not allowed")

	// ErrInsufficientBalance: the account's available balance (balance
	// minus its holds) is zero or negative, so no request is admitted.
	ErrInsufficientBalance = errors.New("insufficient balance")
	// ErrAccountDisabled: the account is disabled and admits no request.
	ErrAccountDisabled = errors.New("account disabled")
	// ErrKeyLimitExceeded: the key has spent its spend limit for the
	// current period (see LimitError).
	ErrKeyLimitExceeded = errors.New("key spend limit exceeded")
	// ErrBacklog: too many balance changes wait for a commit, or the
	// oldest has waited too long: the database is failing to commit, and
	// no request is admitted until it recovers (see Store.WriteBacklog).
	ErrBacklog = errors.New("ledger writes are backlogged")
	// ErrSettled: the hold was already settled or released.
	ErrSettled = errors.New("hold already settled or released")
)

// ErrUnavailable: the store cannot vouch for its cached state, because it
// has not heard from the shared PostgreSQL database for longer than the
// revocation staleness bound (ClusterOptions.RevocationStaleness); nothing is
// admitted until it hears again. Only stores shared by several instances
// return it.
var ErrUnavailable = errors.New("key store unavailable")

// IsUnavailable reports whether err means that the database cannot be
// reached or cannot take writes right now, so that the same call may
// succeed later: ErrUnavailable, ErrBacklog, ErrClosed, or a connection
// that failed or broke (a PostgreSQL server that is down or restarting, a
// network timeout). Callers answer it with 503, not 500.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrBacklog) || errors.Is(err, ErrClosed) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var connect *pgconn.ConnectError
	var netErr net.Error
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// The server answered: unavailable only if it is shutting down
		// or cannot accept connections (class 57P: operator intervention,
		// 08: connection exception).
		return strings.HasPrefix(pgErr.Code, "57P") || strings.HasPrefix(pgErr.Code, "08")
	}
	return errors.As(err, &connect) || errors.As(err, &netErr)
}
