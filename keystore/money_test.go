package keystore

import (
	"errors"
	"math"
	"math/big"
	"strings"
	"testing"
)

func TestParseAmountValid(t *testing.T) {
	cases := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"0.0", 0},
		{"-0", 0},
		{"1", 1_000_000_000},
		{"10.50", 10_500_000_000},
		{"10.5", 10_500_000_000},
		{"-3", -3_000_000_000},
		{"-3.25", -3_250_000_000},
		{"0.000000001", 1},
		{"-0.000000001", -1},
		{"0.123456789", 123_456_789},
		{"007", 7_000_000_000},
		{"00000000000000000001", 1_000_000_000}, // leading zeros do not count toward the size limit
		{"1.000000000", 1_000_000_000},
		// A leading '+' is accepted: "topup ID +5" is a natural thing to type.
		{"+1", 1_000_000_000},
		{"+0.5", 500_000_000},
		// ".5" is ordinary decimal notation; accepted.
		{".5", 500_000_000},
		{"-.5", -500_000_000},
		// Surrounding white space is trimmed (it cannot change the value).
		{" 1", 1_000_000_000},
		{"1 \t\n", 1_000_000_000},
		// The largest accepted magnitude: exactly maxAmountUnits.
		{"1000000000", 1_000_000_000 * NanoPerUnit},
		{"-1000000000", -1_000_000_000 * NanoPerUnit},
		{"999999999.999999999", 999_999_999_999_999_999},
		{"1000000000.000000000", 1_000_000_000 * NanoPerUnit},
	}
	for _, c := range cases {
		got, err := ParseAmount(c.in)
		if err != nil {
			t.Errorf("ParseAmount(%q): unexpected error %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseAmount(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestParseAmountInvalid(t *testing.T) {
	for _, in := range []string{
		"", " ", "\t",
		"1e3", "1E3", "1e-3",
		"1.", "-1.", ".", "-.", "+.", "-", "+", "--1", "+-1", "-+1", "- 1", "1 000",
		"1,5", "1,000.00", "1_000",
		"NaN", "nan", "Inf", "-Inf", "+Inf", "Infinity",
		"0x10", "0b1", "abc", "1.2.3", "1..2", "١", // Arabic-Indic digit one
		"0.0000000001",         // 10 decimal places: more precision than stored
		"1.1234567891",         // idem
		"1000000000.000000001", // above maxAmountUnits by one nano-unit
		"1000000000.5",         // above maxAmountUnits
		"-1000000000.5",        // below -maxAmountUnits
		"1000000001",           // above maxAmountUnits
		"99999999999",          // 11 significant integer digits
		"9223372036854775807",  // int64 max as units
		"9223372036854775808",  // beyond int64
		"-9223372036854775809", // beyond int64
		"99999999999999999999999999999999",
		"1\x00", "\x001",
	} {
		n, err := ParseAmount(in)
		if err == nil {
			t.Errorf("ParseAmount(%q) = %d, want an error", in, n)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseAmount(%q): error %v does not wrap ErrInvalid", in, err)
		}
	}
}

func TestFormatAmount(t *testing.T) {
	cases := []struct {
		in   int64
		want string
	}{
		{0, "0.00"},
		{1, "0.000000001"},
		{-1, "-0.000000001"},
		{10, "0.00000001"},
		{10_000_000, "0.01"},
		{100_000_000, "0.10"},
		{10_500_000_000, "10.50"},
		{-2_500_000_000, "-2.50"},
		{1_000_000_000, "1.00"},
		{123_456_789, "0.123456789"},
		{1_234_567_890, "1.23456789"},
		{math.MaxInt64, "9223372036.854775807"},
		{math.MinInt64, "-9223372036.854775808"},
		{math.MinInt64 + 1, "-9223372036.854775807"},
	}
	for _, c := range cases {
		if got := FormatAmount(c.in); got != c.want {
			t.Errorf("FormatAmount(%d) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestAmountRoundTrip: every amount inside the accepted range formats to a
// string that parses back to the same number, and formatting is canonical
// (format(parse(format(n))) == format(n)).
func TestAmountRoundTrip(t *testing.T) {
	limit := int64(maxAmountUnits) * NanoPerUnit
	vals := []int64{0, 1, -1, 9, 10, 99, 100, 999_999_999, 1_000_000_000, 1_000_000_001,
		limit, -limit, limit - 1, -limit + 1, 123_456_789_012_345_678}
	// a deterministic spread of values with every number of decimal places
	x := uint64(0x9E3779B97F4A7C15)
	for i := 0; i < 20000; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		v := int64(x % uint64(2*limit+1))
		v -= limit
		// vary the number of trailing zeros
		p := int64(1)
		for j := 0; j < i%10; j++ {
			p *= 10
		}
		vals = append(vals, v/p*p)
	}
	for _, v := range vals {
		s := FormatAmount(v)
		got, err := ParseAmount(s)
		if err != nil {
			t.Fatalf("ParseAmount(FormatAmount(%d) = %q): %v", v, s, err)
		}
		if got != v {
			t.Fatalf("ParseAmount(FormatAmount(%d) = %q) = %d", v, s, got)
		}
		if s2 := FormatAmount(got); s2 != s {
			t.Fatalf("format not canonical: %q -> %d -> %q", s, got, s2)
		}
	}
	// Values beyond the accepted range format fine but do not parse: the
	// parser's limit is a documented bound, not an accident.
	for _, v := range []int64{limit + 1, -limit - 1, math.MaxInt64, math.MinInt64} {
		if n, err := ParseAmount(FormatAmount(v)); err == nil {
			t.Errorf("ParseAmount(%q) = %d, want out-of-range error", FormatAmount(v), n)
		}
	}
}

// exactNano is an independent oracle for ParseAmount: it computes the value
// of a plain decimal string times 1e9 with math/big. ok is false when the
// string is not a plain decimal or the result is not a whole number of
// nano-units.
func exactNano(s string) (n *big.Int, ok bool) {
	s = strings.TrimSpace(s)
	body := strings.TrimLeft(s, "+-")
	if len(s)-len(body) > 1 || body == "" {
		return nil, false
	}
	for _, c := range body {
		if (c < '0' || c > '9') && c != '.' {
			return nil, false
		}
	}
	if strings.Count(body, ".") > 1 || strings.HasSuffix(body, ".") {
		return nil, false
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return nil, false
	}
	r.Mul(r, new(big.Rat).SetInt64(NanoPerUnit))
	if !r.IsInt() {
		return nil, false
	}
	return r.Num(), true
}

func TestParseAmountMatchesBigOracle(t *testing.T) {
	for _, s := range []string{"0", "10.50", "-3", "0.000000001", "+1", ".5", "-.5", "1000000000",
		"999999999.999999999", "12.3456789", "0000.100"} {
		got, err := ParseAmount(s)
		if err != nil {
			t.Fatalf("ParseAmount(%q): %v", s, err)
		}
		want, ok := exactNano(s)
		if !ok || !want.IsInt64() || want.Int64() != got {
			t.Fatalf("ParseAmount(%q) = %d, oracle says %v (ok=%v)", s, got, want, ok)
		}
	}
}
