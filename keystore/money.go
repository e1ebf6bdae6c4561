package keystore

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// NanoPerUnit is the number of nano-units in one unit of currency. All money
// in the store is an int64 count of nano-units (1e-9 of the currency unit),
// never a float.
const NanoPerUnit int64 = 1_000_000_000

// maxAmountUnits bounds a parsed amount so that sums of many amounts stay far
// away from int64 overflow (9.2e9 units fit in int64 nano-units).
const maxAmountUnits = 1_000_000_000

// MaxAmount is the largest amount, in nano-units, that a balance change, a
// hold or a charge may be: one billion units of the currency.
const MaxAmount = maxAmountUnits * NanoPerUnit

// ParseAmount parses a decimal amount of currency such as "10", "10.5",
// "-3.25" or "0.000000001" into nano-units. At most nine digits may follow
// the decimal point; more precision than the store keeps is an error rather
// than a silent rounding. Exponents, thousands separators, "NaN" and "Inf"
// are rejected.
func ParseAmount(s string) (int64, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("%w: empty amount", ErrInvalid)
	}
	neg := false
	switch s[0] {
	case '-':
		neg = true
		s = s[1:]
	case '+':
		s = s[1:]
	}
	intPart, fracPart, hasDot := strings.Cut(s, ".")
	if intPart == "" && (!hasDot || fracPart == "") {
		return 0, fmt.Errorf("%w: amount %q is not a decimal number", ErrInvalid, orig)
	}
	if hasDot && fracPart == "" {
		return 0, fmt.Errorf("%w: amount %q is not a decimal number", ErrInvalid, orig)
	}
	for _, part := range []string{intPart, fracPart} {
		for _, c := range part {
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("%w: amount %q is not a decimal number", ErrInvalid, orig)
			}
		}
	}
	if len(fracPart) > 9 {
		return 0, fmt.Errorf("%w: amount %q has more than 9 decimal places", ErrInvalid, orig)
	}
	var units int64
	if intPart != "" {
		trimmed := strings.TrimLeft(intPart, "0")
		if len(trimmed) > 10 {
			return 0, fmt.Errorf("%w: amount %q is too large", ErrInvalid, orig)
		}
		v, err := strconv.ParseInt(intPart, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: amount %q: %v", ErrInvalid, orig, err)
		}
		units = v
	}
	if units > maxAmountUnits {
		return 0, fmt.Errorf("%w: amount %q is too large (max %d)", ErrInvalid, orig, maxAmountUnits)
	}
	var frac int64
	if fracPart != "" {
		padded := fracPart + strings.Repeat("0", 9-len(fracPart))
		v, err := strconv.ParseInt(padded, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: amount %q: %v", ErrInvalid, orig, err)
		}
		frac = v
	}
	n := units*NanoPerUnit + frac
	if n > maxAmountUnits*NanoPerUnit {
		// units == maxAmountUnits with a fraction, e.g. "1000000000.5"
		return 0, fmt.Errorf("%w: amount %q is too large (max %d)", ErrInvalid, orig, maxAmountUnits)
	}
	if neg {
		n = -n
	}
	return n, nil
}

// FormatAmount renders nano-units as a decimal string with at least two and
// at most nine decimal places, without trailing zeros beyond the second:
// 10500000000 -> "10.50", 1 -> "0.000000001", -2500000000 -> "-2.50".
func FormatAmount(n int64) string {
	var b strings.Builder
	u := uint64(n)
	if n < 0 {
		b.WriteByte('-')
		if n == math.MinInt64 {
			u = uint64(math.MaxInt64) + 1
		} else {
			u = uint64(-n)
		}
	}
	units := u / uint64(NanoPerUnit)
	frac := u % uint64(NanoPerUnit)
	b.WriteString(strconv.FormatUint(units, 10))
	fs := fmt.Sprintf("%09d", frac)
	fs = strings.TrimRight(fs, "0")
	for len(fs) < 2 {
		fs += "0"
	}
	b.WriteByte('.')
	b.WriteString(fs)
	return b.String()
}
