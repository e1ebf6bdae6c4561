package management

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// The shapes below are the ones the admin API and the dashboard API sent
// before their views moved into api.go (written out by hand, field by
// field). The shared types must produce exactly the same JSON objects:
// same keys, same omitted keys, same values.

type oldAdminAccount struct {
	keystore.Account
	Balance  string `json:"balance"`
	Currency string `json:"currency"`
	HeldNano int64  `json:"held_nano"`
	Held     string `json:"held"`
}

type oldDashAccount struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Disabled    bool      `json:"disabled"`
	CreatedAt   time.Time `json:"created_at"`
	BalanceNano int64     `json:"balance_nano"`
	Balance     string    `json:"balance"`
	HeldNano    int64     `json:"held_nano"`
	Held        string    `json:"held"`
	Currency    string    `json:"currency"`
}

type oldLimit struct {
	AmountNano int64      `json:"amount_nano"`
	Amount     string     `json:"amount"`
	Period     string     `json:"period"`
	SpentNano  int64      `json:"spent_nano"`
	Spent      string     `json:"spent"`
	HeldNano   int64      `json:"held_nano"`
	Held       string     `json:"held"`
	ResetsAt   *time.Time `json:"resets_at,omitempty"`
}

type oldAdminKey struct {
	keystore.Key
	SpendLimit *oldLimit `json:"spend_limit,omitempty"`
}

type oldAdminLedger struct {
	keystore.LedgerEntry
	Amount       string `json:"amount"`
	BalanceAfter string `json:"balance_after"`
	Cost         string `json:"cost,omitempty"`
}

type oldDashLedger struct {
	ID               int64     `json:"id"`
	CreatedAt        time.Time `json:"created_at"`
	Kind             string    `json:"kind"`
	KeyID            string    `json:"key_id,omitempty"`
	KeyName          string    `json:"key_name,omitempty"`
	Model            string    `json:"model,omitempty"`
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	Status           int       `json:"status,omitempty"`
	DurationMS       int64     `json:"duration_ms"`
	Estimated        bool      `json:"estimated,omitempty"`
	Note             string    `json:"note,omitempty"`
	AmountNano       int64     `json:"amount_nano"`
	Amount           string    `json:"amount"`
	BalanceAfter     string    `json:"balance_after"`
}

type oldAdminTotal struct {
	Group            string `json:"group"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	CachedTokens     int64  `json:"cached_tokens"`
	ReasoningTokens  int64  `json:"reasoning_tokens"`
	Estimated        int64  `json:"estimated"`
	CostNano         int64  `json:"cost_nano"`
	Cost             string `json:"cost"`
}

type oldDashTotal struct {
	Group            string `json:"group"`
	Name             string `json:"name,omitempty"`
	Deleted          bool   `json:"deleted,omitempty"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	CachedTokens     int64  `json:"cached_tokens"`
	CostNano         int64  `json:"cost_nano"`
	Cost             string `json:"cost"`
}

// sameJSON fails unless got and want encode to the same JSON object.
func sameJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	dec := func(v any) map[string]any {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return m
	}
	if g, w := dec(got), dec(want); !reflect.DeepEqual(g, w) {
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(want)
		t.Errorf("%s:\n got %s\nwant %s", what, gb, wb)
	}
}

func TestAPIShapesUnchanged(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	later := now.Add(24 * time.Hour)
	acct := keystore.Account{ID: "acme", Name: "Acme", Balance: 10_500_000_000, CreatedAt: now}

	av := AccountView{Account: acct, Balance: "10.50", Currency: "USD", HeldNano: 0, Held: "0.00"}
	sameJSON(t, "admin account", av, oldAdminAccount{Account: acct, Balance: "10.50", Currency: "USD", Held: "0.00"})
	sameJSON(t, "dashboard account", av, oldDashAccount{ID: "acme", Name: "Acme", CreatedAt: now,
		BalanceNano: 10_500_000_000, Balance: "10.50", Held: "0.00", Currency: "USD"})

	for _, sl := range []*keystore.SpendLimit{nil, {Amount: 5_000_000_000, Period: keystore.PeriodDay}} {
		k := keystore.Key{ID: "key_x", AccountID: "acme", Name: "ci", Hint: "sk-…wxyz", CreatedAt: now,
			Status: "active", AllowedModels: []string{"gpt-4o-mini"}, SpendLimit: sl}
		// the dashboard sent the store's key as it is
		sameJSON(t, "dashboard key", NewKeyView(k), k)
		// the admin API with the limit's use (KeyViewWithUse's fields)
		v := NewKeyView(k)
		old := oldAdminKey{Key: k}
		if sl != nil {
			spent, held := int64(14_400), int64(0)
			v.SpendLimit.Amount, v.SpendLimit.SpentNano, v.SpendLimit.Spent = "5.00", &spent, "0.0000144"
			v.SpendLimit.HeldNano, v.SpendLimit.Held, v.SpendLimit.ResetsAt = &held, "0.00", &later
			old.SpendLimit = &oldLimit{AmountNano: 5_000_000_000, Amount: "5.00", Period: "day",
				SpentNano: 14_400, Spent: "0.0000144", Held: "0.00", ResetsAt: &later}
		}
		sameJSON(t, "admin key", v, old)
		sameJSON(t, "dashboard new key", NewSecretKeyView(NewKeyView(k), "sk-secret"), struct {
			keystore.Key
			Secret  string `json:"key"`
			Warning string `json:"warning"`
		}{k, "sk-secret", ShownOnce})
	}

	entries := []keystore.LedgerEntry{
		{ID: 1, CreatedAt: now, AccountID: "acme", Kind: keystore.KindAdjustment, Amount: 10_000_000_000,
			BalanceAfter: 10_000_000_000, Note: "invoice"},
		{ID: 2, CreatedAt: now, AccountID: "acme", KeyID: "key_x", Kind: keystore.KindUsage, Amount: -4800,
			BalanceAfter: 9_999_995_200, Model: "gpt-4o-mini", PromptTokens: 12, CompletionTokens: 5,
			CachedTokens: 3, ReasoningTokens: 2, Status: 200, DurationMS: 3, RequestID: "r1", Estimated: true},
		{ID: 3, CreatedAt: now, AccountID: "acme", KeyID: "key_x", Kind: keystore.KindUsage, Amount: 0,
			BalanceAfter: 9_999_995_200, Model: "m"},
	}
	for _, e := range entries {
		old := oldAdminLedger{LedgerEntry: e, Amount: keystore.FormatAmount(e.Amount),
			BalanceAfter: keystore.FormatAmount(e.BalanceAfter)}
		if e.Kind == keystore.KindUsage {
			old.Cost = keystore.FormatAmount(-e.Amount)
		}
		sameJSON(t, "admin ledger row", NewLedgerRowView(e), old)
		sameJSON(t, "dashboard ledger row", NewAccountLedgerRowView(e, "ci"), oldDashLedger{ID: e.ID,
			CreatedAt: e.CreatedAt, Kind: e.Kind, KeyID: e.KeyID, KeyName: "ci", Model: e.Model,
			PromptTokens: e.PromptTokens, CompletionTokens: e.CompletionTokens, Status: e.Status,
			DurationMS: e.DurationMS, Estimated: e.Estimated, Note: e.Note, AmountNano: e.Amount,
			Amount: keystore.FormatAmount(e.Amount), BalanceAfter: keystore.FormatAmount(e.BalanceAfter)})
	}

	for _, u := range []keystore.UsageTotal{{}, {Group: "gpt-4o-mini", Requests: 2, PromptTokens: 20,
		CompletionTokens: 10, CachedTokens: 4, ReasoningTokens: 1, Cost: 9600, Estimated: 1}} {
		sameJSON(t, "admin total", NewUsageTotalView(u), oldAdminTotal{Group: u.Group, Requests: u.Requests,
			PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, CachedTokens: u.CachedTokens,
			ReasoningTokens: u.ReasoningTokens, Estimated: u.Estimated, CostNano: u.Cost, Cost: keystore.FormatAmount(u.Cost)})
		sameJSON(t, "dashboard total", NewAccountUsageTotalView(u), oldDashTotal{Group: u.Group, Requests: u.Requests,
			PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, CachedTokens: u.CachedTokens,
			CostNano: u.Cost, Cost: keystore.FormatAmount(u.Cost)})
	}

	sameJSON(t, "dashboard balance answer", BalanceAdjustedView{Account: av, EntryID: 7}, struct {
		Account oldDashAccount `json:"account"`
		EntryID int64          `json:"ledger_entry_id"`
	}{oldDashAccount{ID: "acme", Name: "Acme", CreatedAt: now, BalanceNano: 10_500_000_000, Balance: "10.50",
		Held: "0.00", Currency: "USD"}, 7})
	row := NewLedgerRowView(entries[0])
	sameJSON(t, "admin balance answer", BalanceAdjustedView{Account: av, Entry: &row}, struct {
		Account oldAdminAccount `json:"account"`
		Entry   oldAdminLedger  `json:"ledger_entry"`
	}{oldAdminAccount{Account: acct, Balance: "10.50", Currency: "USD", Held: "0.00"},
		oldAdminLedger{LedgerEntry: entries[0], Amount: "10.00", BalanceAfter: "10.00"}})
}

// TestRequestBodiesEncodeAsBefore: the CLI now sends the shared request
// types; they must encode to what it sent as maps before.
func TestRequestBodiesEncodeAsBefore(t *testing.T) {
	yes, name := true, "new"
	for _, c := range []struct {
		got  any
		want string
	}{
		{UpdateAccountRequest{Disabled: &yes}, `{"disabled":true}`},
		{CreateAccountRequest{ID: "acme"}, `{"id":"acme","name":""}`},
		{UpdateKeyRequest{Name: &name}, `{"name":"new"}`},
		{RotateKeyRequest{}, `{}`},
		{RotateKeyRequest{Grace: "24h"}, `{"grace":"24h"}`},
	} {
		b, err := json.Marshal(c.got)
		if err != nil || string(b) != c.want {
			t.Errorf("%T: %s %v, want %s", c.got, b, err, c.want)
		}
	}
}

// TestReadJSONBodyTooLarge: a body over the limit is refused as too large,
// not cut at the limit and reported as malformed JSON; one exactly at the
// limit is read.
func TestReadJSONBodyTooLarge(t *testing.T) {
	var v struct{ Name string }
	body := `{"Name":"` + strings.Repeat("a", 100) + `"}`
	if err := ReadJSON(strings.NewReader(body), int64(len(body)), &v); err != nil || len(v.Name) != 100 {
		t.Fatalf("at the limit: %v (%d bytes read)", err, len(v.Name))
	}
	err := ReadJSON(strings.NewReader(body), int64(len(body)-1), &v)
	if !errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("one byte over the limit: %v, want ErrBodyTooLarge", err)
	}
}
