package openaiwire

import (
	"encoding/json"
	"fmt"
)

// InjectIncludeUsage returns body with stream_options.include_usage set to
// true, so that a streamed chat or completions response ends with a usage
// chunk. Any other stream_options member is kept; a missing or null
// stream_options becomes {"include_usage":true}.
//
// Use it only on streaming (/v1/chat/completions or /v1/completions)
// requests: OpenAI rejects stream_options when "stream" is not true, and the
// Responses API has no include_usage (its response.completed event always
// carries usage).
//
// The edit is done in place on the raw bytes: every other member keeps its
// key, position and value byte-for-byte (whitespace included), and only the
// edited value changes. If the edited member is repeated (at either level),
// the earlier copies are removed so that first-wins and last-wins parsers
// agree on the result. The error wraps ErrInvalidJSON when body is not one
// JSON object or stream_options is neither an object nor null.
func InjectIncludeUsage(body []byte) ([]byte, error) {
	if err := validObject(body, "request body"); err != nil {
		return nil, err
	}
	return setMember(body, "stream_options", func(old []byte) ([]byte, error) {
		if isNull(old) {
			return []byte(`{"include_usage":true}`), nil
		}
		if kind(old) != '{' {
			return nil, fmt.Errorf("%w: stream_options must be an object", ErrInvalidJSON)
		}
		return setMember(old, "include_usage", func([]byte) ([]byte, error) {
			return []byte("true"), nil
		})
	})
}

// RewriteModel returns body with its "model" member set to model (added when
// missing), editing the raw bytes in place exactly like InjectIncludeUsage:
// everything else is kept byte-for-byte and repeated "model" members are
// collapsed into one. The error wraps ErrInvalidJSON when body is not one
// JSON object.
func RewriteModel(body []byte, model string) ([]byte, error) {
	if err := validObject(body, "request body"); err != nil {
		return nil, err
	}
	quoted, err := json.Marshal(model)
	if err != nil {
		return nil, fmt.Errorf("encode model: %w", err)
	}
	return setMember(body, "model", func([]byte) ([]byte, error) { return quoted, nil })
}

// occurrence is one member of the name setMember edits, with the start of
// the member after it (-1 when it is the object's last member).
type occurrence struct {
	m       member
	nextKey int
}

// setMember returns a copy of the JSON object obj (already validated) in
// which the value of the member called name is replaced by newVal(old),
// where old is the current value of its last occurrence (nil when absent).
// A missing member is appended after the last member. Earlier occurrences
// are removed together with the separator that follows them.
func setMember(obj []byte, name string, newVal func(old []byte) ([]byte, error)) ([]byte, error) {
	it, ok := newObjectIter(obj)
	if !ok {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalidJSON)
	}
	var occ []occurrence
	lastEnd := -1 // end of the last member's value
	for {
		m, more := it.next()
		if !more {
			break
		}
		if n := len(occ); n > 0 && occ[n-1].nextKey < 0 {
			occ[n-1].nextKey = m.keyStart
		}
		if keyIs(m.key, name) {
			occ = append(occ, occurrence{m: m, nextKey: -1})
		}
		lastEnd = m.valEnd
	}
	if !it.ok {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalidJSON)
	}

	if len(occ) == 0 {
		val, err := newVal(nil)
		if err != nil {
			return nil, err
		}
		at := lastEnd
		sep := ","
		if at < 0 {
			at = skipSpace(obj, 0) + 1 // just after '{'
			sep = ""
		}
		out := make([]byte, 0, len(obj)+len(name)+len(val)+4)
		out = append(out, obj[:at]...)
		out = append(out, sep...)
		out = append(out, '"')
		out = append(out, name...)
		out = append(out, '"', ':')
		out = append(out, val...)
		return append(out, obj[at:]...), nil
	}

	last := occ[len(occ)-1].m
	val, err := newVal(last.val)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(obj)+len(val))
	pos := 0
	for _, o := range occ[:len(occ)-1] {
		// Every earlier occurrence has a following member: the last one.
		out = append(out, obj[pos:o.m.keyStart]...)
		pos = o.nextKey
	}
	out = append(out, obj[pos:last.valStart]...)
	out = append(out, val...)
	return append(out, obj[last.valEnd:]...), nil
}
