package keystore

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseAmount checks ParseAmount against FormatAmount and an independent
// math/big oracle (exactNano in money_test.go):
//   - it never panics, and every refusal wraps ErrInvalid;
//   - whatever it accepts is within ±maxAmountUnits, equals the exact decimal
//     value times 1e9, and survives FormatAmount -> ParseAmount unchanged;
//   - every plain decimal within range with at most nine decimal places is
//     accepted (no valid amount is refused).
//
// The seed corpus lives in testdata/fuzz/FuzzParseAmount.
func FuzzParseAmount(f *testing.F) {
	limit := int64(maxAmountUnits) * NanoPerUnit
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseAmount(s)
		want, plain := exactNano(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseAmount(%q): error %v does not wrap ErrInvalid", s, err)
			}
			if plain && fracDigits(s) <= 9 && want.IsInt64() && want.Int64() <= limit && want.Int64() >= -limit {
				t.Fatalf("ParseAmount(%q) refused a valid amount (%v): %v", s, want, err)
			}
			return
		}
		if n > limit || n < -limit {
			t.Fatalf("ParseAmount(%q) = %d, outside ±%d", s, n, limit)
		}
		if !plain || !want.IsInt64() || want.Int64() != n {
			t.Fatalf("ParseAmount(%q) = %d, but the exact value is %v (plain decimal: %v)", s, n, want, plain)
		}
		formatted := FormatAmount(n)
		back, err := ParseAmount(formatted)
		if err != nil {
			t.Fatalf("ParseAmount(FormatAmount(%d) = %q): %v", n, formatted, err)
		}
		if back != n {
			t.Fatalf("round trip %q -> %d -> %q -> %d", s, n, formatted, back)
		}
	})
}

// fracDigits counts the digits after the decimal point.
func fracDigits(s string) int {
	_, frac, _ := strings.Cut(strings.TrimSpace(s), ".")
	return len(frac)
}
