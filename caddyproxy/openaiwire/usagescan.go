package openaiwire

import "fmt"

// This file holds UsageScanner, which reads the usage of a JSON response
// too large to keep whole.

// MaxUsageBytes bounds the raw top-level "usage" value a UsageScanner keeps.
// A larger value (no real usage object comes near it) counts as no usage.
const MaxUsageBytes = 64 << 10

// maxUsageKey is the longest raw key text that can decode to "usage": five
// characters, each written either as itself or as a six-byte \uXXXX escape.
const maxUsageKey = 5 * 6

// States of a UsageScanner, named after what it expects next.
const (
	sValue     uint8 = iota // a value: document start, after ':', after ',' in an array
	sFirstElem              // after '[': a value or ']'
	sFirstKey               // after '{': a key or '}'
	sKey                    // after ',' in an object: a key
	sColon                  // after a key: ':'
	sNext                   // after a value in a container: ',' or its closing bracket
	sEnd                    // after the top-level value: whitespace only
	sString                 // inside a string literal
	sEscape                 // after a backslash in a string literal
	sHex                    // inside the four hex digits of \uXXXX
	sMinus                  // after a number's '-': a digit
	sZero                   // after a number's leading 0
	sInt                    // in a number's integer digits
	sDot                    // after a number's '.': a digit
	sFrac                   // in a number's fraction digits
	sExpMark                // after a number's 'e' or 'E': a sign or a digit
	sExpSign                // after the exponent's sign: a digit
	sExp                    // in a number's exponent digits
	sLiteral                // inside true, false or null
	sBroken                 // not JSON: nothing more is read
)

// A UsageScanner finds the top-level "usage" member of a non-streamed JSON
// response body that is fed to it in pieces, as they arrive, and keeps only
// that member's raw value (at most MaxUsageBytes), never the rest of the
// body. It is how a body too large to hold in memory is metered wherever
// its usage sits.
//
// It follows the JSON grammar byte by byte, so a "usage" inside a string,
// as a value, or as the key of a nested object or array element is never
// taken for the member. Keys are compared after decoding their escapes, as
// ParseResponseUsage does ("us\u0061ge" is usage), and of a repeated
// top-level usage member the last one counts. It checks the whole body
// exactly as ParseResponseUsage does (what json.Valid accepts, nesting up to
// 10000 deep), so for any body whose usage value fits in MaxUsageBytes,
// feeding it to Write in any pieces and calling Usage gives what
// ParseResponseUsage gives for the whole body.
//
// Memory is bounded: the usage value, a short key, and one byte per open
// bracket (at most 10000). The zero UsageScanner is ready to use. A
// UsageScanner is not safe for concurrent use.
type UsageScanner struct {
	state   uint8
	started bool   // a non-space byte was seen
	stack   []byte // '{' or '[' of each open container, innermost last

	lit     string // the literal being read (sLiteral)
	litPos  int    // how much of lit was read
	hexLeft int    // hex digits still to read (sHex)

	strKey   bool // the string being read is an object key
	inTopKey bool // ... a key of the top-level object, buffered in key
	key      [maxUsageKey]byte
	keyLen   int
	keyLong  bool // the key is longer than maxUsageKey: not usage
	isUsage  bool // the last top-level key read was usage: its value is kept

	capturing bool   // the bytes being read belong to a top-level usage value
	found     bool   // a top-level usage member was seen
	val       []byte // the raw value of the last top-level usage member
	valLarge  bool   // ... which was larger than MaxUsageBytes
}

// Write scans the next piece of the body. It never fails: it reports
// len(p), nil, so that it can stand as an io.Writer, and a body found not
// to be JSON is reported by Usage.
func (s *UsageScanner) Write(p []byte) (int, error) {
	if s.state == sBroken {
		return len(p), nil
	}
	// Where the unsaved bytes of a top-level key or of the usage value
	// start in p; both continue from an earlier Write at 0.
	keyFrom, capFrom := 0, 0
	i := 0
	for i < len(p) {
		c := p[i]
		switch s.state {
		case sValue, sFirstElem, sFirstKey, sKey, sColon, sNext, sEnd:
			if isSpace(c) {
				i++
				continue
			}
			s.started = true
			switch s.state {
			case sValue:
				capFrom = s.beginValue(c, i, capFrom)
			case sFirstElem:
				if c == ']' {
					s.closeContainer('[', p, capFrom, i)
				} else {
					capFrom = s.beginValue(c, i, capFrom)
				}
			case sFirstKey:
				if c == '}' {
					s.closeContainer('{', p, capFrom, i)
				} else {
					keyFrom = s.beginKey(c, i, keyFrom)
				}
			case sKey:
				keyFrom = s.beginKey(c, i, keyFrom)
			case sColon:
				if c == ':' {
					s.state = sValue
				} else {
					s.state = sBroken
				}
			case sNext:
				switch {
				case c == ',' && s.stack[len(s.stack)-1] == '{':
					s.state = sKey
				case c == ',':
					s.state = sValue
				case c == '}' || c == ']':
					s.closeContainer(c-2, p, capFrom, i) // '}'-2 is '{', ']'-2 is '['
				default:
					s.state = sBroken
				}
			default: // sEnd
				s.state = sBroken
			}
			if s.state == sBroken {
				return len(p), nil
			}
			i++

		case sString:
			// Most bytes of a string need no attention.
			for i < len(p) && p[i] >= 0x20 && p[i] != '"' && p[i] != '\\' {
				i++
			}
			if i == len(p) {
				break
			}
			switch p[i] {
			case '\\':
				s.state = sEscape
			case '"':
				if s.strKey {
					if s.inTopKey {
						s.endKey(p[keyFrom:i])
					}
					s.state = sColon
				} else {
					s.endValue(p, capFrom, i+1)
				}
			default: // a raw control character
				s.state = sBroken
				return len(p), nil
			}
			i++

		case sEscape:
			switch c {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.state = sString
			case 'u':
				s.state, s.hexLeft = sHex, 4
			default:
				s.state = sBroken
				return len(p), nil
			}
			i++

		case sHex:
			if !isHex(c) {
				s.state = sBroken
				return len(p), nil
			}
			if s.hexLeft--; s.hexLeft == 0 {
				s.state = sString
			}
			i++

		case sMinus, sDot, sExpSign:
			if c < '0' || c > '9' {
				s.state = sBroken
				return len(p), nil
			}
			switch s.state {
			case sMinus:
				if c == '0' {
					s.state = sZero
				} else {
					s.state = sInt
				}
			case sDot:
				s.state = sFrac
			default:
				s.state = sExp
			}
			i++

		case sExpMark:
			switch {
			case c == '+' || c == '-':
				s.state = sExpSign
			case c >= '0' && c <= '9':
				s.state = sExp
			default:
				s.state = sBroken
				return len(p), nil
			}
			i++

		case sZero, sInt, sFrac, sExp:
			if s.state != sZero {
				for i < len(p) && p[i] >= '0' && p[i] <= '9' {
					i++
				}
				if i == len(p) {
					break
				}
				c = p[i]
			}
			switch {
			case c == '.' && (s.state == sZero || s.state == sInt):
				s.state = sDot
				i++
			case (c == 'e' || c == 'E') && s.state != sExp:
				s.state = sExpMark
				i++
			default:
				// The number ended before c, which is read again in the
				// new state (and breaks it unless it may follow a value).
				s.endValue(p, capFrom, i)
			}

		case sLiteral:
			if c != s.lit[s.litPos] {
				s.state = sBroken
				return len(p), nil
			}
			i++
			if s.litPos++; s.litPos == len(s.lit) {
				s.endValue(p, capFrom, i)
			}

		default: // sBroken
			return len(p), nil
		}
	}
	if s.inTopKey {
		s.appendKey(p[keyFrom:])
	}
	if s.capturing {
		s.keep(p[capFrom:])
	}
	return len(p), nil
}

// beginValue starts the value whose first byte c is at index i. It returns
// where in p the unsaved bytes of the usage value start: i if this value is
// it, else capFrom unchanged.
func (s *UsageScanner) beginValue(c byte, i, capFrom int) int {
	if s.isUsage {
		s.isUsage = false
		s.capturing, s.found, s.valLarge = true, true, false
		s.val = s.val[:0]
		capFrom = i
	}
	switch {
	case c == '"':
		s.state, s.strKey = sString, false
	case c == '{' || c == '[':
		if len(s.stack) >= maxNesting {
			s.state = sBroken
			break
		}
		s.stack = append(s.stack, c)
		if c == '{' {
			s.state = sFirstKey
		} else {
			s.state = sFirstElem
		}
	case c == '-':
		s.state = sMinus
	case c == '0':
		s.state = sZero
	case c >= '1' && c <= '9':
		s.state = sInt
	case c == 't':
		s.state, s.lit, s.litPos = sLiteral, "true", 1
	case c == 'f':
		s.state, s.lit, s.litPos = sLiteral, "false", 1
	case c == 'n':
		s.state, s.lit, s.litPos = sLiteral, "null", 1
	default:
		s.state = sBroken
	}
	return capFrom
}

// beginKey starts the key whose opening quote should be c, at index i. It
// returns where in p the text of a top-level key starts (else keyFrom
// unchanged).
func (s *UsageScanner) beginKey(c byte, i, keyFrom int) int {
	if c != '"' {
		s.state = sBroken
		return keyFrom
	}
	s.state, s.strKey = sString, true
	if len(s.stack) == 1 {
		s.inTopKey, s.keyLen, s.keyLong = true, 0, false
		keyFrom = i + 1
	}
	return keyFrom
}

// appendKey adds raw key text to the buffered top-level key.
func (s *UsageScanner) appendKey(b []byte) {
	if s.keyLong || s.keyLen+len(b) > len(s.key) {
		s.keyLong = true
		return
	}
	s.keyLen += copy(s.key[s.keyLen:], b)
}

// endKey completes a top-level key with its last raw text b and notes
// whether it names usage.
func (s *UsageScanner) endKey(b []byte) {
	s.appendKey(b)
	s.inTopKey = false
	s.isUsage = !s.keyLong && keyIs(s.key[:s.keyLen], "usage")
}

// closeContainer ends the innermost container with the bracket at p[i],
// which must close an open one.
func (s *UsageScanner) closeContainer(open byte, p []byte, capFrom, i int) {
	if n := len(s.stack); n == 0 || s.stack[n-1] != open {
		s.state = sBroken
		return
	}
	s.stack = s.stack[:len(s.stack)-1]
	s.endValue(p, capFrom, i+1)
}

// endValue notes that a value ended just before p[end]. If it was the
// top-level usage value, its last bytes p[capFrom:end] are kept.
func (s *UsageScanner) endValue(p []byte, capFrom, end int) {
	if len(s.stack) == 0 {
		s.state = sEnd
		return
	}
	s.state = sNext
	if s.capturing && len(s.stack) == 1 {
		s.keep(p[capFrom:end])
		s.capturing = false
	}
}

// keep adds b to the usage value, up to MaxUsageBytes.
func (s *UsageScanner) keep(b []byte) {
	if s.valLarge {
		return
	}
	if len(s.val)+len(b) > MaxUsageBytes {
		s.valLarge = true
		s.val = s.val[:0]
		return
	}
	s.val = append(s.val, b...)
}

// complete reports whether what was written is one whole JSON value.
func (s *UsageScanner) complete() bool {
	switch s.state {
	case sEnd:
		return true
	case sZero, sInt, sFrac, sExp: // a top-level number ends with the body
		return len(s.stack) == 0
	}
	return false
}

// Usage reports the usage of the body written so far, which should be all
// of it, with the rules and errors of ParseResponseUsage. A usage value
// larger than MaxUsageBytes counts as none: ok is false, err is nil.
func (s *UsageScanner) Usage() (u Usage, ok bool, err error) {
	if !s.started {
		return Usage{}, false, fmt.Errorf("%w: response body is empty", ErrInvalidJSON)
	}
	if !s.complete() {
		return Usage{}, false, fmt.Errorf("%w: response body is not valid JSON", ErrInvalidJSON)
	}
	if !s.found || s.valLarge {
		return Usage{}, false, nil
	}
	return parseUsage(s.val)
}

// isHex reports whether c is a hexadecimal digit.
func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
