package management

// The one set of JSON shapes of caddy-ai-gateway's management surfaces:
//
//   - the admin API under /ai-gateway/ (admin.go, usage.go) answers them;
//   - the dashboard API (package dashboard) answers them too, leaving out
//     what an account holder need not see (the fields documented "admin API
//     only" stay empty and are omitted);
//   - the CLI (cmd.go, cmd_usage.go) decodes the admin API's answers into
//     them.
//
// Amounts travel twice: as nano-units (int64, *_nano) and as decimal strings
// formatted by keystore.FormatAmount ("10.50"). A request never carries an
// amount as a JSON number, so that no float is ever parsed as money.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// --- accounts ---

// AccountView is an account with its amounts as decimals and what requests
// in flight hold of its balance right now.
type AccountView struct {
	keystore.Account
	Balance  string `json:"balance"`
	Currency string `json:"currency"`
	HeldNano int64  `json:"held_nano"`
	Held     string `json:"held"`
	// Status is "active" or "disabled" (always set by NewAccountView and
	// AccountSummaryViews).
	Status string `json:"status,omitempty"`
	// SpendMonthNano and SpendMonth are what the account's requests cost
	// in the current calendar month (UTC), and Keys its number of keys
	// neither deleted nor expired; only in lists of accounts
	// (AccountSummaryViews).
	SpendMonthNano *int64 `json:"spend_month_nano,omitempty"`
	SpendMonth     string `json:"spend_month,omitempty"`
	Keys           *int   `json:"keys,omitempty"`
	// RateLimits are the account's rate limits (across all its keys) with
	// their use right now; see RateLimitView.
	RateLimits []RateLimitView `json:"rate_limits,omitempty"`
}

// accountStatus is AccountView.Status of a.
func accountStatus(a keystore.Account) string {
	if a.Disabled {
		return "disabled"
	}
	return "active"
}

// NewAccountView shows account a of store s in currency.
func NewAccountView(s *keystore.Store, a keystore.Account, currency string) AccountView {
	_, held, _ := s.Available(a.ID)
	rl, _ := s.AccountRateUsage(a.ID)
	return AccountView{Account: a, Balance: keystore.FormatAmount(a.Balance), Currency: currency,
		HeldNano: held, Held: keystore.FormatAmount(held), Status: accountStatus(a), RateLimits: rl}
}

// RateLimitView is one rate limit of a key, an account or a model, with its
// use right now: kind (rpm, tpm, concurrency, rpd, tpd), scope (key,
// account, model), name (a model limit's pattern), limit, used, remaining,
// resets_at (when used next drops if nothing else is admitted; absent for
// concurrency) and default (the limit comes from balance_guard's config,
// not from the key's or account's own limits).
type RateLimitView = keystore.RateUsage

// RateLimitsRequest sets rate limits in a request: each kind given is set
// (0 removes it), kinds not given are left as they are. In a create
// request the kinds not given are simply not set.
type RateLimitsRequest struct {
	RPM         *int64 `json:"rpm,omitempty"`
	TPM         *int64 `json:"tpm,omitempty"`
	Concurrency *int64 `json:"concurrency,omitempty"`
	RPD         *int64 `json:"rpd,omitempty"`
	TPD         *int64 `json:"tpd,omitempty"`
}

// Apply returns cur with the kinds the request gives replaced.
func (r RateLimitsRequest) Apply(cur keystore.RateLimits) keystore.RateLimits {
	for _, f := range []struct {
		v   *int64
		dst *int64
	}{{r.RPM, &cur.RPM}, {r.TPM, &cur.TPM}, {r.Concurrency, &cur.Concurrency}, {r.RPD, &cur.RPD}, {r.TPD, &cur.TPD}} {
		if f.v != nil {
			*f.dst = *f.v
		}
	}
	return cur
}

// KeyRateLimits lists the rate limits that apply to a key's requests with
// their use: its lineage's, its account's and the model limits requests
// were checked against since the gateway started. nil when the key is
// gone.
func KeyRateLimits(ctx context.Context, s *keystore.Store, keyID string) []RateLimitView {
	out, err := s.KeyRateUsage(ctx, keyID)
	if err != nil {
		return nil
	}
	return append(out, s.ModelRateUsage()...)
}

// AccountViews shows every account of store s.
func AccountViews(ctx context.Context, s *keystore.Store, currency string) []AccountView {
	accts := s.Accounts(ctx)
	out := make([]AccountView, 0, len(accts))
	for _, a := range accts {
		out = append(out, NewAccountView(s, a, currency))
	}
	return out
}

// AccountSummaryViews shows every account of store s with its spend this
// month and its number of live keys (keystore.AccountSummaries).
func AccountSummaryViews(ctx context.Context, s *keystore.Store, currency string) ([]AccountView, error) {
	sums, err := s.AccountSummaries(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]AccountView, 0, len(sums))
	for _, a := range sums {
		spend, keys := a.SpendMonth, a.Keys
		rl, _ := s.AccountRateUsage(a.ID)
		out = append(out, AccountView{Account: a.Account, Balance: keystore.FormatAmount(a.Balance), Currency: currency,
			HeldNano: a.Held, Held: keystore.FormatAmount(a.Held), Status: accountStatus(a.Account),
			SpendMonthNano: &spend, SpendMonth: keystore.FormatAmount(spend), Keys: &keys, RateLimits: rl})
	}
	return out, nil
}

// CreateAccountRequest is the body that creates an account.
type CreateAccountRequest struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// UpdateAccountRequest is the body that changes an account (admin API);
// absent fields are unchanged. rate_limits changes the kinds it gives
// (RateLimitsRequest); null removes all the account's own rate limits.
type UpdateAccountRequest struct {
	Name       *string         `json:"name,omitempty"`
	Disabled   *bool           `json:"disabled,omitempty"`
	RateLimits json.RawMessage `json:"rate_limits,omitempty"`
}

// BalanceRequest is the body that adjusts a balance: a decimal string
// ("10.50", negative for a correction) and a note for the ledger.
type BalanceRequest struct {
	Amount json.RawMessage `json:"amount"`
	Note   string          `json:"note"`
}

// errAmountNotString is the answer to an amount sent as a JSON number.
var errAmountNotString = errors.New(`amount must be a decimal string such as "10.50"`)

// ParseAmount returns the amount in nano-units. An amount that is not a
// JSON string is refused with a message saying so; a malformed decimal
// with keystore.ErrInvalid.
func (b BalanceRequest) ParseAmount() (int64, error) {
	var s string
	if err := json.Unmarshal(b.Amount, &s); err != nil {
		return 0, errAmountNotString
	}
	return keystore.ParseAmount(strings.TrimSpace(s))
}

// BalanceAdjustedView answers a balance adjustment: the account after it
// and the ledger row it wrote. The admin API sends the whole row
// (ledger_entry), the dashboard only its id (ledger_entry_id).
type BalanceAdjustedView struct {
	Account AccountView    `json:"account"`
	Entry   *LedgerRowView `json:"ledger_entry,omitempty"`
	EntryID int64          `json:"ledger_entry_id,omitempty"`
}

// --- keys ---

// SpendLimitView is a key's spend limit. The admin API adds its use in the
// current period (amount, spent*, held*, resets_at; resets_at is absent
// for a total limit); the dashboard sends only amount_nano and period.
type SpendLimitView struct {
	AmountNano int64  `json:"amount_nano"`
	Amount     string `json:"amount,omitempty"`
	Period     string `json:"period"`
	SpentNano  *int64 `json:"spent_nano,omitempty"`
	Spent      string `json:"spent,omitempty"`
	HeldNano   *int64 `json:"held_nano,omitempty"`
	Held       string `json:"held,omitempty"`
	// RemainingNano and Remaining are what requests may still spend in the
	// period: amount - spent - held, at least 0.
	RemainingNano *int64     `json:"remaining_nano,omitempty"`
	Remaining     string     `json:"remaining,omitempty"`
	ResetsAt      *time.Time `json:"resets_at,omitempty"`
}

// KeyView is an API key (never its plaintext) with its spend limit.
type KeyView struct {
	keystore.Key
	SpendLimit *SpendLimitView `json:"spend_limit,omitempty"`
	// RateLimits are the rate limits that apply to the key's requests with
	// their use (KeyRateLimits); the admin API and the dashboard's key
	// list fill them in.
	RateLimits []RateLimitView `json:"rate_limits,omitempty"`
}

// NewKeyView shows key k with its spend limit but not its use (the
// dashboard's view).
func NewKeyView(k keystore.Key) KeyView {
	v := KeyView{Key: k}
	if k.SpendLimit != nil {
		v.SpendLimit = &SpendLimitView{AmountNano: k.SpendLimit.Amount, Period: k.SpendLimit.Period}
	}
	return v
}

// KeyViewWithUse shows key k with what it spent of its limit in the
// current period (the admin API's view).
func KeyViewWithUse(ctx context.Context, s *keystore.Store, k keystore.Key) KeyView {
	v := NewKeyView(k)
	v.RateLimits = KeyRateLimits(ctx, s, k.ID)
	if l := v.SpendLimit; l != nil {
		var spent, held int64
		if sp, h, resets, ok := s.KeySpend(ctx, k.ID); ok {
			spent, held, l.ResetsAt = sp, h, resets
		}
		l.Amount = keystore.FormatAmount(l.AmountNano)
		l.SpentNano, l.Spent = &spent, keystore.FormatAmount(spent)
		l.HeldNano, l.Held = &held, keystore.FormatAmount(held)
		rem := max(l.AmountNano-spent-held, 0)
		l.RemainingNano, l.Remaining = &rem, keystore.FormatAmount(rem)
	}
	return v
}

// ShownOnce is the warning that comes with a plaintext key.
const ShownOnce = "This is the only time the key is shown. Store it now; it cannot be retrieved again."

// SecretKeyView is the only shape in which a plaintext key ever leaves the
// gateway: the answer to creating or rotating a key.
type SecretKeyView struct {
	KeyView
	Secret  string `json:"key"`
	Warning string `json:"warning"`
}

// NewSecretKeyView shows a key just issued with its plaintext.
func NewSecretKeyView(k KeyView, plaintext string) SecretKeyView {
	return SecretKeyView{KeyView: k, Secret: plaintext, Warning: ShownOnce}
}

// RotatedKeyView answers a rotation: the new key (with its plaintext) and
// the old one.
type RotatedKeyView struct {
	New SecretKeyView `json:"new"`
	Old KeyView       `json:"old"`
}

// DeletedKeyView answers the deletion of a key.
type DeletedKeyView struct {
	ID      string `json:"id"`
	Deleted bool   `json:"deleted"`
}

// LimitRequest is a spend limit as a request gives it.
type LimitRequest struct {
	// Amount is a decimal string ("5.00"), never a JSON number.
	Amount json.RawMessage `json:"amount"`
	// Period is total (the default), day or month.
	Period string `json:"period,omitempty"`
}

// errLimitNotString is the answer to a limit amount sent as a JSON number.
var errLimitNotString = errors.New(`spend_limit.amount must be a decimal string such as "5.00"`)

// Parse returns the limit. A malformed decimal is a keystore.ErrInvalid.
func (l LimitRequest) Parse() (*keystore.SpendLimit, error) {
	var s string
	if err := json.Unmarshal(l.Amount, &s); err != nil {
		return nil, errLimitNotString
	}
	n, err := keystore.ParseAmount(s)
	if err != nil {
		return nil, err
	}
	period := l.Period
	if period == "" {
		period = keystore.PeriodTotal
	}
	return &keystore.SpendLimit{Amount: n, Period: period}, nil
}

// CreateKeyRequest is the body that creates a key in the admin API. The
// dashboard takes only name and expires_in (DashboardKeyRequest): an
// account holder chooses neither the account nor the policy.
type CreateKeyRequest struct {
	Account       string        `json:"account"`
	Name          string        `json:"name"`
	ExpiresAt     *time.Time    `json:"expires_at,omitempty"`
	ExpiresIn     string        `json:"expires_in,omitempty"`
	AllowedModels []string      `json:"allowed_models,omitempty"`
	SpendLimit    *LimitRequest `json:"spend_limit,omitempty"`
	// RateLimits of the key's lineage: {"rpm": 60, "tpm": 100000,
	// "concurrency": 4, "rpd": …, "tpd": …}.
	RateLimits *RateLimitsRequest `json:"rate_limits,omitempty"`
}

// UpdateKeyRequest is the body that changes a key in the admin API. Absent
// fields are unchanged; expires_at, allowed_models and spend_limit set to
// null remove that part of the policy, which is why they are kept raw.
type UpdateKeyRequest struct {
	Name          *string         `json:"name,omitempty"`
	Disabled      *bool           `json:"disabled,omitempty"`
	ExpiresAt     json.RawMessage `json:"expires_at,omitempty"`
	ExpiresIn     string          `json:"expires_in,omitempty"`
	AllowedModels json.RawMessage `json:"allowed_models,omitempty"`
	SpendLimit    json.RawMessage `json:"spend_limit,omitempty"`
	// RateLimits changes the kinds it gives (RateLimitsRequest); null
	// removes all the lineage's own rate limits.
	RateLimits json.RawMessage `json:"rate_limits,omitempty"`
}

// DashboardKeyRequest is the body that creates a key in the dashboard:
// the account is the signed-in user's (or the one an admin chose), and
// the policy set by an account holder is the key's own (see
// keystore.AdminPolicy).
type DashboardKeyRequest struct {
	Name          string        `json:"name"`
	ExpiresIn     string        `json:"expires_in"`
	AllowedModels []string      `json:"allowed_models,omitempty"`
	SpendLimit    *LimitRequest `json:"spend_limit,omitempty"`
}

// DashboardUpdateKeyRequest is the body that changes a key in the
// dashboard. Absent fields are unchanged; allowed_models and spend_limit
// set to null remove that part of the policy (an account holder's null
// goes back to what the operator set), which is why they are kept raw.
type DashboardUpdateKeyRequest struct {
	Name          *string         `json:"name,omitempty"`
	Disabled      *bool           `json:"disabled,omitempty"`
	AllowedModels json.RawMessage `json:"allowed_models,omitempty"`
	SpendLimit    json.RawMessage `json:"spend_limit,omitempty"`
	// RateLimits (admins only) changes the kinds it gives: a positive
	// whole number sets one, 0 or null removes it; null removes all the
	// lineage's own rate limits.
	RateLimits json.RawMessage `json:"rate_limits,omitempty"`
}

// RenameKeyRequest is the body that renames a key in the dashboard.
type RenameKeyRequest struct {
	Name string `json:"name"`
}

// RotateKeyRequest is the body that rotates a key: how long the old key
// keeps working ("24h"; empty: not at all).
type RotateKeyRequest struct {
	Grace string `json:"grace,omitempty"`
}

// --- usage ---

// LedgerRowView is a row of the ledger with its amounts as decimals. For
// usage rows cost is what the request was charged (-amount).
//
// The admin API sends every stored field, token counts and duration only
// when not zero. The dashboard sends fewer (no account_id,
// balance_after_nano, cached/reasoning tokens, request_id or cost), adds
// the key's name, and always sends prompt_tokens, completion_tokens and
// duration_ms: hence the pointers.
type LedgerRowView struct {
	ID               int64     `json:"id"`
	CreatedAt        time.Time `json:"created_at"`
	AccountID        string    `json:"account_id,omitempty"`
	KeyID            string    `json:"key_id,omitempty"`
	KeyName          string    `json:"key_name,omitempty"`
	Kind             string    `json:"kind"`
	AmountNano       int64     `json:"amount_nano"`
	BalanceAfterNano *int64    `json:"balance_after_nano,omitempty"`
	Note             string    `json:"note,omitempty"`
	Model            string    `json:"model,omitempty"`
	PromptTokens     *int64    `json:"prompt_tokens,omitempty"`
	CompletionTokens *int64    `json:"completion_tokens,omitempty"`
	CachedTokens     int64     `json:"cached_tokens,omitempty"`
	ReasoningTokens  int64     `json:"reasoning_tokens,omitempty"`
	Status           int       `json:"status,omitempty"`
	DurationMS       *int64    `json:"duration_ms,omitempty"`
	RequestID        string    `json:"request_id,omitempty"`
	Estimated        bool      `json:"estimated,omitempty"`
	Amount           string    `json:"amount"`
	BalanceAfter     string    `json:"balance_after"`
	Cost             string    `json:"cost,omitempty"`
}

// nonZero is a pointer to n, nil for 0.
func nonZero(n int64) *int64 {
	if n == 0 {
		return nil
	}
	return &n
}

// ptr is a pointer to n.
func ptr(n int64) *int64 { return &n }

// Count is *n, 0 for nil.
func Count(n *int64) int64 {
	if n == nil {
		return 0
	}
	return *n
}

// NewLedgerRowView is the admin API's view of a ledger row.
func NewLedgerRowView(e keystore.LedgerEntry) LedgerRowView {
	v := LedgerRowView{ID: e.ID, CreatedAt: e.CreatedAt, AccountID: e.AccountID, KeyID: e.KeyID, Kind: e.Kind,
		AmountNano: e.Amount, BalanceAfterNano: ptr(e.BalanceAfter), Note: e.Note, Model: e.Model,
		PromptTokens: nonZero(e.PromptTokens), CompletionTokens: nonZero(e.CompletionTokens),
		CachedTokens: e.CachedTokens, ReasoningTokens: e.ReasoningTokens, Status: e.Status,
		DurationMS: nonZero(e.DurationMS), RequestID: e.RequestID, Estimated: e.Estimated,
		Amount: keystore.FormatAmount(e.Amount), BalanceAfter: keystore.FormatAmount(e.BalanceAfter)}
	if e.Kind == keystore.KindUsage {
		v.Cost = keystore.FormatAmount(-e.Amount)
	}
	return v
}

// NewAccountLedgerRowView is the dashboard's view of a ledger row of the
// signed-in account: keyName names its key.
func NewAccountLedgerRowView(e keystore.LedgerEntry, keyName string) LedgerRowView {
	return LedgerRowView{ID: e.ID, CreatedAt: e.CreatedAt, Kind: e.Kind, KeyID: e.KeyID, KeyName: keyName,
		Model: e.Model, PromptTokens: ptr(e.PromptTokens), CompletionTokens: ptr(e.CompletionTokens),
		Status: e.Status, DurationMS: ptr(e.DurationMS), Estimated: e.Estimated, Note: e.Note,
		AmountNano: e.Amount, Amount: keystore.FormatAmount(e.Amount), BalanceAfter: keystore.FormatAmount(e.BalanceAfter)}
}

// UsageTotalView is one group of usage totals. The admin API sends
// reasoning_tokens and estimated; the dashboard leaves them out and, for
// totals by key, adds the key's name or that it was deleted.
type UsageTotalView struct {
	Group            string `json:"group"`
	Name             string `json:"name,omitempty"`
	Deleted          bool   `json:"deleted,omitempty"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	CachedTokens     int64  `json:"cached_tokens"`
	ReasoningTokens  *int64 `json:"reasoning_tokens,omitempty"`
	Estimated        *int64 `json:"estimated,omitempty"`
	CostNano         int64  `json:"cost_nano"`
	Cost             string `json:"cost"`
}

// NewUsageTotalView is the admin API's view of a usage total.
func NewUsageTotalView(t keystore.UsageTotal) UsageTotalView {
	v := NewAccountUsageTotalView(t)
	v.ReasoningTokens, v.Estimated = ptr(t.ReasoningTokens), ptr(t.Estimated)
	return v
}

// NewAccountUsageTotalView is the dashboard's view of a usage total.
func NewAccountUsageTotalView(t keystore.UsageTotal) UsageTotalView {
	return UsageTotalView{Group: t.Group, Requests: t.Requests, PromptTokens: t.PromptTokens,
		CompletionTokens: t.CompletionTokens, CachedTokens: t.CachedTokens,
		CostNano: t.Cost, Cost: keystore.FormatAmount(t.Cost)}
}

// UsageView is the admin API's answer to GET /ai-gateway/usage.
type UsageView struct {
	Currency string           `json:"currency"`
	By       string           `json:"by"`
	Totals   []UsageTotalView `json:"totals"`
	Rows     []LedgerRowView  `json:"rows"`
	// NextBefore, when set, fetches the next (older) page with ?before=.
	NextBefore int64 `json:"next_before,omitempty"`
}

// AccountUsageView is the dashboard's answer to GET api/usage: one
// account's spend over the last days, and its most recent ledger rows.
type AccountUsageView struct {
	Account AccountView      `json:"account"`
	Days    int              `json:"days"`
	Since   string           `json:"since"`
	Total   UsageTotalView   `json:"total"`
	ByDay   []UsageTotalView `json:"by_day"`
	ByModel []UsageTotalView `json:"by_model"`
	ByKey   []UsageTotalView `json:"by_key"`
	Recent  []LedgerRowView  `json:"recent"`
}

// SessionView is the dashboard's answer to GET api/session.
type SessionView struct {
	User       string        `json:"user"`
	Admin      bool          `json:"admin"`
	Account    *AccountView  `json:"account"`
	Accounts   []AccountView `json:"accounts,omitempty"`
	Currency   string        `json:"currency"`
	GatewayURL string        `json:"gateway_url,omitempty"`
}

// KeyListView is the dashboard's answer to GET api/keys.
type KeyListView struct {
	Keys []KeyView `json:"keys"`
}

// --- audit ---

// AuditEntryView is an entry of the audit log.
type AuditEntryView = keystore.AuditEntry

// AuditView answers GET /ai-gateway/audit: entries newest first.
type AuditView struct {
	Entries []AuditEntryView `json:"entries"`
	// NextBefore, when set, fetches the next (older) page with ?before=.
	NextBefore int64 `json:"next_before,omitempty"`
}

// ActorHeader is the request header in which the CLI names its user for
// the audit log (see adminActor).
const ActorHeader = "X-Ai-Gateway-Actor"

// --- the dashboard's usage log, accounts and audit log ---

// UsageLogRowView is a row of the dashboard's usage log (and a record of
// its CSV export, UsageLogColumns). cost is what a request was charged
// (0 for an adjustment); amount is the signed change of the balance.
type UsageLogRowView struct {
	ID               int64     `json:"id"`
	Time             time.Time `json:"time"`
	KeyID            string    `json:"key_id,omitempty"`
	KeyName          string    `json:"key_name,omitempty"`
	KeyDeleted       bool      `json:"key_deleted,omitempty"`
	Model            string    `json:"model,omitempty"`
	Status           int       `json:"status,omitempty"`
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	CachedTokens     int64     `json:"cached_tokens"`
	Cost             string    `json:"cost"`
	CostNano         int64     `json:"cost_nano"`
	Kind             string    `json:"kind"`
	Note             string    `json:"note,omitempty"`
	Estimated        bool      `json:"estimated"`
	Amount           string    `json:"amount"`
	AmountNano       int64     `json:"amount_nano"`
	DurationMS       int64     `json:"duration_ms"`
}

// NewUsageLogRowView shows ledger row e, its key named by ref.
func NewUsageLogRowView(e keystore.LedgerEntry, ref keystore.KeyRef) UsageLogRowView {
	v := UsageLogRowView{ID: e.ID, Time: e.CreatedAt, KeyID: e.KeyID, KeyName: ref.Name, KeyDeleted: ref.Deleted,
		Model: e.Model, Status: e.Status, PromptTokens: e.PromptTokens, CompletionTokens: e.CompletionTokens,
		CachedTokens: e.CachedTokens, Kind: e.Kind, Note: e.Note, Estimated: e.Estimated,
		Amount: keystore.FormatAmount(e.Amount), AmountNano: e.Amount, DurationMS: e.DurationMS}
	if e.Kind == keystore.KindUsage {
		v.CostNano = -e.Amount
	}
	v.Cost = keystore.FormatAmount(v.CostNano)
	return v
}

// UsageLogColumns is the header of the dashboard's CSV export of the
// usage log: the fields of UsageLogRowView.
var UsageLogColumns = []string{"id", "time", "key_id", "key_name", "key_deleted", "model", "status",
	"prompt_tokens", "completion_tokens", "cached_tokens", "cost", "cost_nano", "kind", "note", "estimated",
	"amount", "amount_nano", "duration_ms"}

// UsageLogTotalsView sums the usage rows of a selection (adjustments are
// not requests).
type UsageLogTotalsView struct {
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	CachedTokens     int64  `json:"cached_tokens"`
	Cost             string `json:"cost"`
	CostNano         int64  `json:"cost_nano"`
}

// UsageLogView is the dashboard's answer to GET api/usage/log.
type UsageLogView struct {
	Rows []UsageLogRowView `json:"rows"`
	// NextCursor, when not null, fetches the next (older) page with
	// ?cursor=.
	NextCursor *string            `json:"next_cursor"`
	Totals     UsageLogTotalsView `json:"totals"`
	Currency   string             `json:"currency"`
}

// AccountListView is the dashboard's answer to GET api/accounts.
type AccountListView struct {
	Accounts []AccountView `json:"accounts"`
}

// AuditPageView is the dashboard's answer to GET api/audit.
type AuditPageView struct {
	Entries    []AuditEntryView `json:"entries"`
	NextCursor *string          `json:"next_cursor"`
}

// --- amounts ---

// Money is an amount with its currency ("10.50 USD"); without a currency
// just the amount.
func Money(amount, currency string) string {
	if currency == "" {
		return amount
	}
	return amount + " " + currency
}

// --- JSON in and out ---

// WriteJSON answers v as compact JSON that no cache keeps. v is encoded
// before anything is written, so that an encoding error is not half an
// answer.
func WriteJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding answer: %w", err)
	}
	return writeBody(w, status, body)
}

// WriteIndentedJSON is WriteJSON indented for people reading it, as the
// admin API answers (curl, caddy ai-gateway --json).
func WriteIndentedJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding answer: %w", err)
	}
	return writeBody(w, status, body)
}

func writeBody(w http.ResponseWriter, status int, body []byte) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_, err := w.Write(append(body, '\n'))
	return err
}

// Errors of ReadJSON besides a malformed body.
var (
	ErrEmptyBody    = errors.New("request body must be a JSON object")
	ErrTrailingData = errors.New("request body has data after the JSON object")
	// ErrBodyTooLarge: the body is longer than ReadJSON's limit. (Cut
	// at the limit it would only fail as malformed JSON, which sends
	// the caller looking for a syntax error that is not there.)
	ErrBodyTooLarge = errors.New("request body is too large")
)

// ReadJSON decodes a JSON request body of at most limit bytes into v
// strictly: unknown fields and trailing data are errors, so that a typo
// never silently does nothing. It returns ErrEmptyBody, ErrTrailingData,
// ErrBodyTooLarge (wrapped, with the limit), ErrRepeatedMember or the
// decoder's error.
func ReadJSON(body io.Reader, limit int64, v any) error {
	raw, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return err
	}
	if int64(len(raw)) > limit {
		return fmt.Errorf("%w: at most %d bytes", ErrBodyTooLarge, limit)
	}
	if name, ok := repeatedMember(raw); ok {
		return fmt.Errorf("%w: %q", ErrRepeatedMember, name)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return ErrEmptyBody
		}
		return err
	}
	if dec.More() {
		return ErrTrailingData
	}
	return nil
}

// ErrRepeatedMember: a JSON object names a member twice (in any letter
// case, as encoding/json matches names), so which value counts would be a
// guess; the last one would win silently.
var ErrRepeatedMember = errors.New("a member appears more than once in the JSON body")

// repeatedMember finds a member name repeated in one object of raw, in any
// letter case. Malformed JSON is left to the decoder.
func repeatedMember(raw []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	type frame struct {
		object bool
		keys   []string
		key    bool // the next string token of an object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if top != nil && top.object {
					top.key = true // the object or array is a member's value
				}
				stack = append(stack, &frame{object: t == '{', key: t == '{'})
			default:
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return "", false
				}
			}
		case string:
			if top != nil && top.object && top.key {
				for _, k := range top.keys {
					if strings.EqualFold(k, t) {
						return t, true
					}
				}
				top.keys = append(top.keys, t)
				top.key = false
				continue
			}
			if top != nil && top.object {
				top.key = true
			}
		default:
			if top != nil && top.object {
				top.key = true
			}
		}
	}
}
