package keystore

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDisabledKeyRefusedUntilEnabled(t *testing.T) {
	s := openTemp(t, Options{})
	ctx := WithActor(context.Background(), "test")
	mustAccount(t, s, "acme", "1")
	k, pt := mustKey(t, s, "acme", "app")
	if _, err := s.Authenticate(ctx, pt); err != nil { // now cached
		t.Fatal(err)
	}
	yes, no := true, false
	dk, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Disabled: &yes, AsHolder: true})
	if err != nil {
		t.Fatal(err)
	}
	if !dk.Disabled || dk.Status != KeyDisabled || dk.DisabledAt == nil || dk.DisabledByAdmin {
		t.Fatalf("disabled key %+v", dk)
	}
	if _, err := s.Authenticate(ctx, pt); !errors.Is(err, ErrKeyDisabled) {
		t.Fatalf("Authenticate of a disabled key: %v, want ErrKeyDisabled", err)
	}
	if _, _, _, err := s.RotateKey(ctx, k.ID, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("RotateKey of a disabled key: %v, want ErrInvalid", err)
	}
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Disabled: &no, AsHolder: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, pt); err != nil {
		t.Fatalf("Authenticate after enabling: %v", err)
	}

	// An operator's disabling binds the holder.
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Disabled: &yes}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Disabled: &no, AsHolder: true}); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("holder enabling an operator's disabled key: %v, want ErrNotAllowed", err)
	}
	if _, err := s.Authenticate(ctx, pt); !errors.Is(err, ErrKeyDisabled) {
		t.Fatalf("Authenticate: %v, want ErrKeyDisabled", err)
	}
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Disabled: &no}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, pt); err != nil {
		t.Fatalf("Authenticate after the operator enabled it: %v", err)
	}
	got, err := s.Audit(ctx, AuditFilter{Target: k.ID})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range got {
		actions = append(actions, e.Action)
	}
	want := "key.enable key.disable key.enable key.disable key.create"
	if strings.Join(actions, " ") != want {
		t.Fatalf("audit actions %v, want %s", actions, want)
	}
}

func TestAuditRecordsEveryChange(t *testing.T) {
	s := openTemp(t, Options{})
	ctx := WithActor(context.Background(), "admin API 127.0.0.1:5555")
	if _, err := s.CreateAccount(ctx, "acme", "Acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateAccount(WithActor(ctx, "dashboard:alice"), "other", ""); err != nil {
		t.Fatal(err)
	}
	name := "Acme Inc."
	yes := true
	if _, err := s.UpdateAccount(ctx, "acme", &name, &yes); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AdjustBalance(ctx, "acme", 10*NanoPerUnit, "invoice 1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AdjustBalance(ctx, "acme", -NanoPerUnit, "refund"); err != nil {
		t.Fatal(err)
	}
	k, _, err := s.CreateKey(ctx, "acme", "app", KeyPolicy{AllowedModels: []string{"gpt-4o*"}})
	if err != nil {
		t.Fatal(err)
	}
	n2 := "app2"
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Name: &n2, SetSpendLimit: true, SpendLimit: &SpendLimit{Amount: 5 * NanoPerUnit, Period: PeriodDay}}); err != nil {
		t.Fatal(err)
	}
	nk, _, _, err := s.RotateKey(ctx, k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKey(ctx, nk.ID); err != nil {
		t.Fatal(err)
	}
	all, err := s.Audit(ctx, AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range all {
		actions = append(actions, e.Action)
	}
	want := "key.delete key.rotate key.update key.rename key.create balance.correction balance.topup account.disable account.update account.create account.create"
	if got := strings.Join(actions, " "); got != want {
		t.Fatalf("actions\n got %s\nwant %s", got, want)
	}
	for _, e := range all {
		if e.Actor == "" || e.Target == "" || e.CreatedAt.IsZero() || !json.Valid(e.Detail) {
			t.Fatalf("incomplete entry %+v", e)
		}
	}
	byAction := map[string]AuditEntry{}
	for _, e := range all {
		byAction[e.Action] = e
	}
	if e := byAction["account.update"]; string(e.Detail) != `{"name":{"old":"Acme","new":"Acme Inc."}}` {
		t.Fatalf("account.update detail %s", e.Detail)
	}
	if e := byAction["balance.correction"]; !strings.Contains(string(e.Detail), `"amount":"-1.00"`) || !strings.Contains(string(e.Detail), `"note":"refund"`) {
		t.Fatalf("balance.correction detail %s", e.Detail)
	}
	if e := byAction["key.update"]; !strings.Contains(string(e.Detail), `"spend_limit":{"old":null,"new":{"amount_nano":5000000000,"period":"day"}}`) {
		t.Fatalf("key.update detail %s", e.Detail)
	}
	if e := byAction["key.rotate"]; e.Target != k.ID || !strings.Contains(string(e.Detail), nk.ID) {
		t.Fatalf("key.rotate entry %+v", e)
	}

	// filters
	check := func(f AuditFilter, n int) []AuditEntry {
		t.Helper()
		got, err := s.Audit(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Fatalf("Audit(%+v): %d entries, want %d", f, len(got), n)
		}
		return got
	}
	check(AuditFilter{AccountID: "other"}, 1)
	check(AuditFilter{Actor: "dashboard:*"}, 1)
	check(AuditFilter{Actor: "dashboard:alice"}, 1)
	check(AuditFilter{Actor: "dashboard:"}, 0)
	check(AuditFilter{Action: "key"}, 5)
	check(AuditFilter{Action: "balance"}, 2)
	check(AuditFilter{Action: "key.rotate"}, 1)
	page := check(AuditFilter{Limit: 4}, 4)
	rest := check(AuditFilter{Limit: 100, BeforeID: page[3].ID}, len(all)-4)
	if rest[0].ID >= page[3].ID {
		t.Fatal("paging did not go older")
	}
	check(AuditFilter{Since: time.Now().Add(time.Hour)}, 0)
	if _, err := s.Audit(ctx, AuditFilter{Since: time.Now(), Until: time.Now().Add(-time.Hour)}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("until before since: %v", err)
	}
}

func TestAuditInTheChangesTransaction(t *testing.T) {
	s := openTemp(t, Options{})
	ctx := WithActor(context.Background(), "test")
	mustAccount(t, s, "acme", "")
	k, _ := mustKey(t, s, "acme", "app")
	yes, no := true, false
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Disabled: &yes}); err != nil {
		t.Fatal(err)
	}
	before := queryInt(t, s.r, `SELECT COUNT(*) FROM audit`)
	// The rename writes its entry, then enabling fails: neither stays.
	n := "renamed"
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Name: &n, Disabled: &no, AsHolder: true}); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("UpdateKey: %v, want ErrNotAllowed", err)
	}
	if got := queryInt(t, s.r, `SELECT COUNT(*) FROM audit`); got != before {
		t.Fatalf("audit rows %d after a failed change, want %d", got, before)
	}
	if kk, _ := s.Key(ctx, k.ID); kk.Name != "app" {
		t.Fatalf("name %q after a failed change", kk.Name)
	}

	// An audit entry that cannot be written fails the change.
	failInserts(t, s, "audit", "audit refused")
	if _, err := s.CreateAccount(ctx, "nope", ""); err == nil {
		t.Fatal("CreateAccount succeeded without its audit entry")
	}
	if _, err := s.Account(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("account created without its audit entry: %v", err)
	}
	if _, _, err := s.AdjustBalance(ctx, "acme", NanoPerUnit, "x"); err == nil {
		t.Fatal("AdjustBalance succeeded without its audit entry")
	}
	if b, _, _ := s.Balance("acme"); b != 0 {
		t.Fatalf("balance %d after a failed adjustment", b)
	}
	if sum, _ := s.LedgerSum(ctx, "acme"); sum != 0 {
		t.Fatalf("ledger sum %d after a failed adjustment", sum)
	}
	if err := s.DeleteKey(ctx, k.ID); err == nil {
		t.Fatal("DeleteKey succeeded without its audit entry")
	}
	if _, err := s.Key(ctx, k.ID); err != nil {
		t.Fatalf("key deleted without its audit entry: %v", err)
	}
}

func TestAuditHoldsNoKeyMaterial(t *testing.T) {
	path := tempDB(t)
	s := openAt(t, path, Options{})
	ctx := WithActor(context.Background(), "test")
	mustAccount(t, s, "acme", "")
	k, pt := mustKey(t, s, "acme", "app")
	nk, pt2, _, err := s.RotateKey(ctx, k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKey(ctx, nk.ID); err != nil {
		t.Fatal(err)
	}
	entries, err := s.Audit(ctx, AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{pt, pt2} {
		h := HashKey(p)
		for _, e := range entries {
			if strings.Contains(string(e.Detail), p) || strings.Contains(string(e.Detail), hex.EncodeToString(h[:])) ||
				strings.Contains(string(e.Detail), keyHint(p)) {
				t.Fatalf("audit entry %s holds key material", e.Detail)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if testOnPostgres {
		return // the database files are the server's
	}
	files, _ := filepath.Glob(path + "*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{pt, pt2} {
			if bytes.Contains(b, []byte(p)) {
				t.Fatalf("%s holds a plaintext key", f)
			}
		}
	}
}

func TestHolderNarrowsOperatorsPolicy(t *testing.T) {
	s := openTemp(t, Options{})
	ctx := WithActor(context.Background(), "test")
	mustAccount(t, s, "acme", "")
	ceiling := &SpendLimit{Amount: 10 * NanoPerUnit, Period: PeriodMonth}
	k, _, err := s.CreateKey(ctx, "acme", "app", KeyPolicy{AllowedModels: []string{"gpt-4o*", "o3"}, SpendLimit: ceiling})
	if err != nil {
		t.Fatal(err)
	}
	if k.AdminPolicy == nil || k.AdminPolicy.SpendLimit == nil || len(k.AdminPolicy.AllowedModels) != 2 {
		t.Fatalf("operator's policy %+v", k.AdminPolicy)
	}
	holder := func(u KeyUpdate) (Key, error) {
		u.AsHolder = true
		return s.UpdateKey(ctx, k.ID, u)
	}
	for _, m := range [][]string{{"gpt-4o-mini"}, {"gpt-4o-mini*", "o3"}, {"gpt-4o*"}} {
		if _, err := holder(KeyUpdate{SetAllowedModels: true, AllowedModels: m}); err != nil {
			t.Fatalf("narrowing to %v: %v", m, err)
		}
	}
	for _, m := range [][]string{{"*"}, {"gpt-4*"}, {"o3-mini"}, {"gpt-4o-mini", "claude"}} {
		if _, err := holder(KeyUpdate{SetAllowedModels: true, AllowedModels: m}); !errors.Is(err, ErrNotAllowed) {
			t.Fatalf("widening to %v: %v, want ErrNotAllowed", m, err)
		}
	}
	for _, l := range []*SpendLimit{{5 * NanoPerUnit, PeriodMonth}, {10 * NanoPerUnit, PeriodTotal}} {
		if _, err := holder(KeyUpdate{SetSpendLimit: true, SpendLimit: l}); err != nil {
			t.Fatalf("lowering to %+v: %v", l, err)
		}
	}
	for _, l := range []*SpendLimit{{11 * NanoPerUnit, PeriodMonth}, {NanoPerUnit, PeriodDay}} {
		if _, err := holder(KeyUpdate{SetSpendLimit: true, SpendLimit: l}); !errors.Is(err, ErrNotAllowed) {
			t.Fatalf("raising to %+v: %v, want ErrNotAllowed", l, err)
		}
	}
	// Clearing goes back to the operator's policy.
	got, err := holder(KeyUpdate{SetSpendLimit: true, SetAllowedModels: true})
	if err != nil {
		t.Fatal(err)
	}
	if got.SpendLimit == nil || *got.SpendLimit != *ceiling || strings.Join(got.AllowedModels, ",") != "gpt-4o*,o3" {
		t.Fatalf("after clearing: %+v %v", got.SpendLimit, got.AllowedModels)
	}
	// The operator's change moves the ceiling; rotation keeps it.
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{SetSpendLimit: true}); err != nil {
		t.Fatal(err)
	}
	nk, _, _, err := s.RotateKey(ctx, k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if nk.AdminPolicy == nil || nk.AdminPolicy.SpendLimit != nil || len(nk.AdminPolicy.AllowedModels) != 2 {
		t.Fatalf("rotated key's operator policy %+v", nk.AdminPolicy)
	}
	if _, err := s.UpdateKey(ctx, nk.ID, KeyUpdate{AsHolder: true, SetSpendLimit: true,
		SpendLimit: &SpendLimit{100 * NanoPerUnit, PeriodDay}}); err != nil {
		t.Fatalf("holder setting a limit without an operator's: %v", err)
	}
	// A holder's key has no ceiling.
	hk, _, err := s.CreateKey(ctx, "acme", "mine", KeyPolicy{ByHolder: true, AllowedModels: []string{"o3"}})
	if err != nil || hk.AdminPolicy != nil {
		t.Fatalf("holder's key: %+v %v", hk.AdminPolicy, err)
	}
	if _, err := s.UpdateKey(ctx, hk.ID, KeyUpdate{AsHolder: true, SetAllowedModels: true, AllowedModels: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
}

func TestModelsWithin(t *testing.T) {
	for _, c := range []struct {
		p, c []string
		want bool
	}{
		{[]string{"a"}, nil, true},
		{nil, []string{"a"}, false},
		{[]string{"gpt-4o"}, []string{"gpt-*"}, true},
		{[]string{"gpt-4o*"}, []string{"gpt-*"}, true},
		{[]string{"gpt*"}, []string{"gpt-*"}, false},
		{[]string{"gpt-?"}, []string{"gpt-?"}, true},
		{[]string{"gpt-1"}, []string{"gpt-?"}, true},
		{[]string{"gpt-??"}, []string{"gpt-?"}, false},
		{[]string{"x", "y"}, []string{"x"}, false},
		{[]string{"[a]*"}, []string{"*"}, true},
	} {
		if got := ModelsWithin(c.p, c.c); got != c.want {
			t.Errorf("ModelsWithin(%v, %v) = %v, want %v", c.p, c.c, got, c.want)
		}
	}
}

// TestAuditSkipsChangesThatChangeNothing: an update that sets what was
// already there writes no audit entry, and one that changes one of two
// things records only that one.
func TestAuditSkipsChangesThatChangeNothing(t *testing.T) {
	s := openTemp(t, Options{})
	ctx := WithActor(context.Background(), "test")
	mustAccount(t, s, "acme", "1")
	k, _ := mustKey(t, s, "acme", "app")
	models := []string{"gpt-4o*"}
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{SetAllowedModels: true, AllowedModels: models}); err != nil {
		t.Fatal(err)
	}
	before := queryInt(t, s.r, `SELECT COUNT(*) FROM audit`)
	same := "app"
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{Name: &same, SetAllowedModels: true, AllowedModels: models}); err != nil {
		t.Fatal(err)
	}
	if got := queryInt(t, s.r, `SELECT COUNT(*) FROM audit`); got != before {
		t.Fatalf("audit rows %d after an update that changed nothing, want %d", got, before)
	}
	if _, err := s.UpdateKey(ctx, k.ID, KeyUpdate{SetAllowedModels: true, AllowedModels: models,
		SetRateLimits: true, RateLimits: &RateLimits{RPM: 5}}); err != nil {
		t.Fatal(err)
	}
	entries, err := s.Audit(ctx, AuditFilter{Target: k.ID, Limit: 1})
	if err != nil || len(entries) != 1 {
		t.Fatalf("audit: %v %+v", err, entries)
	}
	var detail map[string]json.RawMessage
	if err := json.Unmarshal(entries[0].Detail, &detail); err != nil {
		t.Fatal(err)
	}
	_, limits := detail["rate_limits"]
	_, unchanged := detail["allowed_models"]
	if !limits || unchanged {
		t.Fatalf("detail %s, want rate_limits and not the unchanged allowed_models", entries[0].Detail)
	}
}
