package openaiwire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"unicode/utf8"
)

// This file holds a tiny JSON scanner that walks raw bytes in place and
// allocates only to decode escaped keys. Callers run validJSON
// (jsonvalid.go) over the whole document first, so the scanner only has to
// find boundaries, not to report syntax errors; it still checks every index
// it touches, so malformed input can make it stop early but never panic.

// isSpace reports whether c is JSON insignificant whitespace.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// skipSpace returns the index of the first non-whitespace byte at or after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// trimSpace removes JSON whitespace from both ends of b.
func trimSpace(b []byte) []byte {
	i := skipSpace(b, 0)
	j := len(b)
	for j > i && isSpace(b[j-1]) {
		j--
	}
	return b[i:j]
}

// stringEnd returns the index just past the closing quote of the string
// literal that starts with the quote at b[i], or -1 if it is not closed.
// Short strings (most keys and values in a chunk) are scanned byte by byte;
// past 16 bytes it jumps from quote to quote with bytes.IndexByte.
func stringEnd(b []byte, i int) int {
	i++
	for k := 0; k < 16 && i < len(b); k++ {
		switch b[i] {
		case '"':
			return i + 1
		case '\\':
			i++
		}
		i++
	}
	for i < len(b) {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		q := i + j
		// The quote is escaped when an odd number of backslashes precede
		// it. (The run cannot reach back before i: b[i-1] is a quote or
		// the end of an escape sequence, never an unconsumed backslash.)
		n := 0
		for k := q - 1; k >= i && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return q + 1
		}
		i = q + 1
	}
	return -1
}

// isDelim reports whether c ends a number or a literal (true, false, null).
func isDelim(c byte) bool {
	return c == ',' || c == '}' || c == ']' || c == ':' || isSpace(c)
}

// valueEnd returns the index just past the JSON value starting at b[i], or
// -1 if there is none. Containers are skipped by counting brackets outside
// string literals, which is exact for valid JSON.
func valueEnd(b []byte, i int) int {
	if i < 0 || i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				e := stringEnd(b, i)
				if e < 0 {
					return -1
				}
				i = e
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default:
		start := i
		for i < len(b) && !isDelim(b[i]) {
			i++
		}
		if i == start {
			return -1
		}
		return i
	}
}

// member is one name/value pair of a JSON object, as positions in the
// object's bytes plus the raw key (without quotes) and raw value.
type member struct {
	key      []byte // raw key text between the quotes, escapes not decoded
	keyStart int    // index of the key's opening quote
	valStart int    // index of the first byte of the value
	valEnd   int    // index just past the value
	val      []byte // the raw value
}

// objectIter walks the members of one JSON object in order.
type objectIter struct {
	b     []byte
	i     int
	first bool
	done  bool
	// ok is false once the walk stopped on malformed input.
	ok bool
}

// newObjectIter starts a walk over the object whose '{' is the first
// non-space byte of b. It reports false when b does not hold an object.
func newObjectIter(b []byte) (objectIter, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return objectIter{done: true}, false
	}
	return objectIter{b: b, i: i + 1, first: true, ok: true}, true
}

// next returns the next member; false at the end of the object or on
// malformed input (then it.ok is false).
func (it *objectIter) next() (member, bool) {
	if it.done {
		return member{}, false
	}
	b := it.b
	i := skipSpace(b, it.i)
	if i < len(b) && b[i] == '}' {
		it.done = true
		it.i = i + 1
		return member{}, false
	}
	if !it.first {
		if i >= len(b) || b[i] != ',' {
			return it.fail()
		}
		i = skipSpace(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		return it.fail()
	}
	ke := stringEnd(b, i)
	if ke < 0 {
		return it.fail()
	}
	m := member{key: b[i+1 : ke-1], keyStart: i}
	i = skipSpace(b, ke)
	if i >= len(b) || b[i] != ':' {
		return it.fail()
	}
	i = skipSpace(b, i+1)
	ve := valueEnd(b, i)
	if ve < 0 {
		return it.fail()
	}
	m.valStart, m.valEnd, m.val = i, ve, b[i:ve]
	it.i = ve
	it.first = false
	return m, true
}

// end returns the index just past the object's closing brace; valid only
// after next has returned false with it.ok still true.
func (it *objectIter) end() int { return it.i }

func (it *objectIter) fail() (member, bool) {
	it.done, it.ok = true, false
	return member{}, false
}

// arrayIter walks the elements of one JSON array in order.
type arrayIter struct {
	b     []byte
	i     int
	first bool
	done  bool
}

// newArrayIter starts a walk over the array whose '[' is the first
// non-space byte of b. It reports false when b does not hold an array.
func newArrayIter(b []byte) (arrayIter, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return arrayIter{done: true}, false
	}
	return arrayIter{b: b, i: i + 1, first: true}, true
}

// next returns the next element's raw bytes; false at the end of the array
// or on malformed input.
func (it *arrayIter) next() ([]byte, bool) {
	if it.done {
		return nil, false
	}
	b := it.b
	i := skipSpace(b, it.i)
	if i < len(b) && b[i] == ']' {
		it.done = true
		return nil, false
	}
	if !it.first {
		if i >= len(b) || b[i] != ',' {
			it.done = true
			return nil, false
		}
		i = skipSpace(b, i+1)
	}
	e := valueEnd(b, i)
	if e < 0 {
		it.done = true
		return nil, false
	}
	it.i = e
	it.first = false
	return b[i:e], true
}

// arrayLen counts the elements of the JSON array in b; ok is false when b is
// not an array.
func arrayLen(b []byte) (n int, ok bool) {
	it, ok := newArrayIter(b)
	if !ok {
		return 0, false
	}
	for {
		if _, more := it.next(); !more {
			return n, true
		}
		n++
	}
}

// isEmptyArray reports whether b is the JSON array [] (spaces allowed).
func isEmptyArray(b []byte) bool {
	b = trimSpace(b)
	return len(b) >= 2 && b[0] == '[' && len(trimSpace(b[1:len(b)-1])) == 0 && b[len(b)-1] == ']'
}

// kind returns the first byte of a raw JSON value with spaces trimmed, which
// tells its type: '"', '{', '[', 't', 'f', 'n' or a number's first byte; 0
// for an empty value.
func kind(v []byte) byte {
	i := skipSpace(v, 0)
	if i >= len(v) {
		return 0
	}
	return v[i]
}

// isNull reports whether the raw value is absent or the JSON literal null.
func isNull(v []byte) bool {
	v = trimSpace(v)
	return len(v) == 0 || string(v) == "null"
}

// keyIs reports whether a raw member key (quotes stripped, escapes not
// decoded) names name. Keys written with escapes are decoded first.
func keyIs(key []byte, name string) bool {
	if bytes.IndexByte(key, '\\') < 0 {
		return string(key) == name
	}
	s, ok := decodeRawString(key)
	return ok && s == name
}

// decodeRawString decodes the text between a string literal's quotes.
func decodeRawString(raw []byte) (string, bool) {
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw), true
	}
	lit := make([]byte, 0, len(raw)+2)
	lit = append(lit, '"')
	lit = append(lit, raw...)
	lit = append(lit, '"')
	var s string
	if err := json.Unmarshal(lit, &s); err != nil {
		return "", false
	}
	return s, true
}

// stringValue decodes a raw JSON value that must be a string literal.
func stringValue(v []byte) (string, bool) {
	v = trimSpace(v)
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	return decodeRawString(v[1 : len(v)-1])
}

// lookup returns the raw value of the last member called name in the object
// obj (last wins, as in encoding/json), or nil.
func lookup(obj []byte, name string) []byte {
	v, _ := lookupCount(obj, name)
	return v
}

// lookupCount is lookup that also counts the members called name.
func lookupCount(obj []byte, name string) (last []byte, n int) {
	it, ok := newObjectIter(obj)
	if !ok {
		return nil, 0
	}
	for {
		m, more := it.next()
		if !more {
			return last, n
		}
		if keyIs(m.key, name) {
			last = m.val
			n++
		}
	}
}

// hexVal decodes four hex digits; -1 if they are not hex.
func hexVal(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// stringChars counts the Unicode characters a JSON string literal (with its
// quotes) decodes to, without decoding it: an escape is one character, a
// \uD83D\uDE00 surrogate pair is one, and each byte of invalid UTF-8 is one
// (as encoding/json turns each into U+FFFD). Non-strings count 0.
func stringChars(lit []byte) int64 {
	lit = trimSpace(lit)
	if len(lit) < 2 || lit[0] != '"' || lit[len(lit)-1] != '"' {
		return 0
	}
	s := lit[1 : len(lit)-1]
	var n int64
	for len(s) > 0 {
		j := bytes.IndexByte(s, '\\')
		if j < 0 {
			n += runeCount(s)
			break
		}
		n += runeCount(s[:j])
		s = s[j:]
		n++
		if len(s) < 2 {
			break
		}
		if s[1] != 'u' {
			s = s[2:]
			continue
		}
		if len(s) < 6 {
			break
		}
		r := hexVal(s[2:6])
		s = s[6:]
		if r >= 0xD800 && r < 0xDC00 && len(s) >= 6 && s[0] == '\\' && s[1] == 'u' {
			if r2 := hexVal(s[2:6]); r2 >= 0xDC00 && r2 < 0xE000 {
				s = s[6:]
			}
		}
	}
	return n
}

// runeCount is utf8.RuneCount (each byte of invalid UTF-8 counts as one)
// without its allocation for long non-ASCII input, with an ASCII fast path
// of eight bytes at a time.
func runeCount(p []byte) int64 {
	var n int64
	i := 0
	for i < len(p) {
		if len(p)-i >= 8 && binary.LittleEndian.Uint64(p[i:])&0x8080808080808080 == 0 {
			i += 8
			n += 8
			continue
		}
		if p[i] < utf8.RuneSelf {
			i++
		} else {
			_, size := utf8.DecodeRune(p[i:])
			i += size
		}
		n++
	}
	return n
}

// valueChars adds up stringChars over every string value (not object key)
// anywhere inside the raw JSON value v.
func valueChars(v []byte) int64 {
	var n int64
	for i := 0; i < len(v); {
		j := bytes.IndexByte(v[i:], '"')
		if j < 0 {
			break
		}
		s := i + j
		e := stringEnd(v, s)
		if e < 0 {
			break
		}
		if k := skipSpace(v, e); k >= len(v) || v[k] != ':' {
			n += stringChars(v[s:e])
		}
		i = e
	}
	return n
}
