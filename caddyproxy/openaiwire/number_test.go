package openaiwire

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParseCount(t *testing.T) {
	cases := []struct {
		in      string
		want    int64
		problem string
	}{
		{"0", 0, ""},
		{"-0", 0, ""},
		{"-0.0e7", 0, ""},
		{"12", 12, ""},
		{" 12 ", 12, ""},
		{"12.0", 12, ""},
		{"1.5e3", 1500, ""},
		{"1500e-3", 1, "must be an integer"},
		{"15000e-4", 0, "must be an integer"},
		{"150000E-4", 15, ""},
		{"9223372036854775807", 9223372036854775807, ""},
		{"9223372036854775807.000", 9223372036854775807, ""},
		{"922337203685477580.7e1", 9223372036854775807, ""},
		{"9223372036854775808", 0, "is out of range"},
		{"9.223372036854775808e18", 0, "is out of range"},
		{"1e19", 0, "is out of range"},
		{"1e18", 1000000000000000000, ""},
		{"1e400", 0, "is out of range"},
		{"1e99999999999999999999", 0, "is out of range"},
		{"1e-99999999999999999999", 0, "must be an integer"},
		{"1.0000000000000000000000001", 0, "must be an integer"},
		{"-1", 0, "must not be negative"},
		{"-1e400", 0, "must not be negative"},
		{"-0.5", 0, "must not be negative"},
		{`"5"`, 0, "must be a number"},
		{"true", 0, "must be a number"},
		{"null", 0, "must be a number"},
		{"{}", 0, "must be a number"},
		{"", 0, "is empty"},
		{"1.", 0, "must be a number"},
		{"1e", 0, "must be a number"},
		{"-", 0, "must be a number"},
		{"1x", 0, "must be a number"},
	}
	for _, tc := range cases {
		got, problem := parseCount([]byte(tc.in))
		if problem != tc.problem || (problem == "" && got != tc.want) {
			t.Errorf("parseCount(%q) = %d %q, want %d %q", tc.in, got, problem, tc.want, tc.problem)
		}
	}
}

// TestParseCountExact compares parseCount with math/big on random literals.
func TestParseCountExact(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	digits := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
		return b.String()
	}
	for range 20000 {
		lit := digits(1 + r.IntN(22))
		if r.IntN(2) == 0 {
			lit += "." + digits(1+r.IntN(6))
		}
		if r.IntN(2) == 0 {
			lit += fmt.Sprintf("e%d", r.IntN(41)-20)
		}
		if r.IntN(8) == 0 {
			lit = "-" + lit
		}
		checkCount(t, lit)
	}
}

// checkCount checks parseCount(lit) against an exact rational reading.
func checkCount(t testing.TB, lit string) {
	t.Helper()
	got, problem := parseCount([]byte(lit))
	rat, ok := new(big.Rat).SetString(lit)
	if !ok {
		t.Fatalf("test bug: big.Rat cannot read %q", lit)
	}
	valid := rat.IsInt() && rat.Sign() >= 0 && rat.Num().IsInt64()
	if valid != (problem == "") || (valid && got != rat.Num().Int64()) {
		t.Fatalf("parseCount(%q) = %d %q; exact value %s", lit, got, problem, rat.RatString())
	}
}
