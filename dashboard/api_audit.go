package dashboard

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/metask/caddy-ai-gateway/keystore"
	"github.com/metask/caddy-ai-gateway/management"
)

// Paging of the audit log.
const (
	defaultAuditRows = 50
	maxAuditRows     = 500
)

// operatorActor is how an account holder sees a change made by an
// operator: the admin API's remote address, the CLI user's name and an
// admin's user id are the operators' business.
const operatorActor = "operator"

// audit answers audit entries, newest first: admins see every entry
// (filtered by account if they give one), an account holder only those of
// their own account, with operators' changes shown as made by "operator".
// Filters: account, action (key.rotate, or a group: account, balance,
// key), actor (exact, or a prefix ending in *), target (a key or account
// id), from, to (as in the usage log), cursor and limit.
func (d *Dashboard) audit(w http.ResponseWriter, r *http.Request, c *call) error {
	q := r.URL.Query()
	for name := range q {
		switch name {
		case "account", "action", "actor", "target", "from", "to", "cursor", "limit":
		default:
			return writeError(w, badRequest("Unknown filter %q.", name))
		}
	}
	f := keystore.AuditFilter{AccountID: q.Get("account"), Action: q.Get("action"), Actor: q.Get("actor"),
		Target: q.Get("target"), Limit: defaultAuditRows}
	if !c.s.admin {
		acct, e := d.accountOf(r, c.s)
		if e != nil {
			return writeError(w, e)
		}
		f.AccountID = acct
		// A holder filters by one dashboard user by exact name. No
		// prefixes: matched against the real actors, they would let a
		// holder spell out an admin's user name a letter at a time. An
		// admin's name selects nothing (their changes are shown as
		// "operator"), as a name that made no change does, so the
		// answer does not tell admins apart either.
		if f.Actor != "" {
			name, ok := strings.CutPrefix(f.Actor, "dashboard:")
			if !ok || name == "" || strings.Contains(name, "*") {
				return writeError(w, badRequest("You can filter by one dashboard user of your account, by exact name (actor=dashboard:NAME)."))
			}
			if d.admins[name] {
				return writeJSON(w, http.StatusOK, management.AuditPageView{Entries: []keystore.AuditEntry{}})
			}
		}
	}
	var e *apiError
	if f.Since, e = parseWhen("from", q.Get("from"), false); e != nil {
		return writeError(w, e)
	}
	if f.Until, e = parseWhen("to", q.Get("to"), true); e != nil {
		return writeError(w, e)
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxAuditRows {
			return writeError(w, badRequest("limit must be a whole number from 1 to %d.", maxAuditRows))
		}
		f.Limit = n
	}
	if s := q.Get("cursor"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return writeError(w, badRequest("The cursor is not valid; start again from the first page."))
		}
		f.BeforeID = n
	}
	entries, err := d.st().Audit(r.Context(), f)
	if err != nil {
		return writeError(w, storeError(err))
	}
	if !c.s.admin {
		for i := range entries {
			entries[i].Actor = d.shownActor(entries[i].Actor)
		}
	}
	out := management.AuditPageView{Entries: entries}
	if len(entries) == f.RowLimit() {
		next := strconv.FormatInt(entries[len(entries)-1].ID, 10)
		out.NextCursor = &next
	}
	return writeJSON(w, http.StatusOK, out)
}

// shownActor is the actor of an entry as an account holder sees it.
func (d *Dashboard) shownActor(actor string) string {
	if user, ok := strings.CutPrefix(actor, "dashboard:"); ok && !d.admins[user] {
		return actor
	}
	return operatorActor
}
