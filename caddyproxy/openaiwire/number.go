package openaiwire

import "math"

// maxExponent caps the exponent of a number literal while parsing it; any
// larger magnitude is out of range for a count (or makes it a fraction)
// anyway.
const maxExponent = 1 << 30

// numberLiteral is a JSON number split into its parts.
type numberLiteral struct {
	neg        bool
	intPart    []byte // digits before the point
	fracPart   []byte // digits after the point
	exp        int64  // exponent, clamped to ±maxExponent
	wellFormed bool
}

// splitNumber splits a JSON number literal into its parts.
func splitNumber(raw []byte) numberLiteral {
	var n numberLiteral
	i := 0
	if i < len(raw) && raw[i] == '-' {
		n.neg = true
		i++
	}
	start := i
	for i < len(raw) && raw[i] >= '0' && raw[i] <= '9' {
		i++
	}
	n.intPart = raw[start:i]
	if i < len(raw) && raw[i] == '.' {
		i++
		start = i
		for i < len(raw) && raw[i] >= '0' && raw[i] <= '9' {
			i++
		}
		n.fracPart = raw[start:i]
		if len(n.fracPart) == 0 {
			return n
		}
	}
	if i < len(raw) && (raw[i] == 'e' || raw[i] == 'E') {
		i++
		negExp := false
		if i < len(raw) && (raw[i] == '+' || raw[i] == '-') {
			negExp = raw[i] == '-'
			i++
		}
		start = i
		for i < len(raw) && raw[i] >= '0' && raw[i] <= '9' {
			if n.exp < maxExponent {
				n.exp = n.exp*10 + int64(raw[i]-'0')
			}
			i++
		}
		if i == start {
			return n
		}
		n.exp = min(n.exp, maxExponent)
		if negExp {
			n.exp = -n.exp
		}
	}
	n.wellFormed = i == len(raw) && len(n.intPart) > 0
	return n
}

// digit returns the k-th digit of intPart followed by fracPart.
func (n *numberLiteral) digit(k int) byte {
	if k < len(n.intPart) {
		return n.intPart[k]
	}
	return n.fracPart[k-len(n.intPart)]
}

// parseCount reads a raw JSON value that must be a non-negative integer (a
// token count or a token limit). Integer-valued numbers written with a
// fraction or an exponent (12.0, 1.5e3) are accepted, since some backends
// serialise counts as floats; the check is exact, with no float rounding.
// On failure it returns a short phrase that completes "<field> …", e.g.
// "must not be negative".
func parseCount(raw []byte) (int64, string) {
	raw = trimSpace(raw)
	if len(raw) == 0 {
		return 0, "is empty"
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0, "must be a number"
	}
	n := splitNumber(raw)
	if !n.wellFormed {
		return 0, "must be a number"
	}
	total := len(n.intPart) + len(n.fracPart)
	first, last := -1, -1 // first and last non-zero digit
	for k := 0; k < total; k++ {
		if n.digit(k) != '0' {
			if first < 0 {
				first = k
			}
			last = k
		}
	}
	if first < 0 {
		return 0, "" // zero, however written (-0, 0.000e5)
	}
	if n.neg {
		return 0, "must not be negative"
	}
	// value = significant digits × 10^scale
	scale := n.exp - int64(len(n.fracPart)) + int64(total-1-last)
	sig := int64(last - first + 1)
	if scale < 0 {
		return 0, "must be an integer"
	}
	if sig+scale > 19 {
		return 0, "is out of range" // at least 10^19 > MaxInt64
	}
	var v int64
	for k := first; k <= last; k++ {
		d := int64(n.digit(k) - '0')
		if v > (math.MaxInt64-d)/10 {
			return 0, "is out of range"
		}
		v = v*10 + d
	}
	for ; scale > 0; scale-- {
		if v > math.MaxInt64/10 {
			return 0, "is out of range"
		}
		v *= 10
	}
	return v, ""
}

// addSat adds two non-negative counts, saturating at math.MaxInt64.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// mulSat multiplies two non-negative counts, saturating at math.MaxInt64.
func mulSat(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}
