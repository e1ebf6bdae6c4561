package openaiwire

// appendWithoutUsage appends b to dst with every top-level "usage" member
// of the JSON object in b removed, and everything else copied byte for
// byte. The object may be only part of b (b is a whole SSE line, such as
// `data: {…}`): first is the index in b of the opening quote of the
// object's first "usage" key, and prevEnd the index just past the value of
// the member before it, or -1 when it is the first member (what scanChunk
// records as usageKey and usagePrev, moved to b's coordinates).
//
// A member goes together with exactly one adjacent comma, so the object
// stays valid: the comma after it and the whitespace up to the next key,
// or, for the last member, the comma before it and the whitespace from the
// end of the previous member's value. So {"a":1,"usage":null,"b":2} becomes
// {"a":1,"b":2}, {"usage":null, "a":1} becomes {"a":1}, {"a":1 ,"usage":{}}
// becomes {"a":1} and {"usage":null} becomes {}. Keys are compared decoded
// ("us\u0061ge" is usage too); members of nested objects and text inside
// strings are never touched.
//
// b must hold a valid object at those positions; if its members cannot be
// walked from first, b is appended unchanged.
func appendWithoutUsage(dst, b []byte, first, prevEnd int) []byte {
	if first < 0 || first >= len(b) || prevEnd >= first {
		return append(dst, b...)
	}
	n := len(dst)
	it := objectIter{b: b, i: first, first: true, ok: true}
	copied := 0         // b[:copied] is dealt with
	run := -1           // key of the first member of a run of usage members still to cut
	lastKept := prevEnd // end of the last member kept, -1 none
	lastEnd := -1       // end of the last member
	for {
		m, more := it.next()
		if !more {
			break
		}
		if keyIs(m.key, "usage") {
			if run < 0 {
				run = m.keyStart
			}
		} else {
			if run >= 0 {
				// The run takes the comma after each of its members.
				dst = append(dst, b[copied:run]...)
				copied, run = m.keyStart, -1
			}
			lastKept = m.valEnd
		}
		lastEnd = m.valEnd
	}
	if !it.ok || lastEnd < 0 {
		return append(dst[:n], b...)
	}
	if run >= 0 {
		// A run at the end takes the comma before each of its members; if
		// it is the whole object, the commas between them.
		cut := run
		if lastKept >= 0 {
			cut = lastKept
		}
		dst = append(dst, b[copied:cut]...)
		copied = lastEnd
	}
	return append(dst, b[copied:]...)
}
