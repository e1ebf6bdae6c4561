package openaiwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzStreamFilter feeds arbitrary bytes through the filter whole, cut at
// an arbitrary point, and in small pieces, with and without dropping; split
// picks the cut, the piece size, and whether the real line limit or a tiny
// one (to reach the overlong-line paths) is used. It checks that:
//   - nothing panics, and without dropping the output is exactly the input;
//   - every cutting gives the same output and the same meter readings, and
//     both agree with the whole-stream oracle of streamref_test.go;
//   - after every Write all complete events have been passed on (or
//     dropped), so nothing complete is held back;
//   - the buffers stay within their limits;
//   - with dropping, an event passed on changed at most in one data line
//     whose JSON object had a top-level "usage" member, which is still
//     valid JSON with all its other members (checkStripped).
//
// The seed corpus lives in testdata/fuzz/FuzzStreamFilter. Each execution
// is kept cheap (a few dozen Writes at most) because Go minimises every new
// interesting input, which costs a number of executions quadratic in its
// length.
func FuzzStreamFilter(f *testing.F) {
	f.Fuzz(checkStreamFilter)
}

// checkStreamFilter is the body of FuzzStreamFilter.
func checkStreamFilter(t *testing.T, data []byte, split uint) {
	checkValidJSON(t, data)
	cut := int(split % uint(len(data)+1))
	piece := max(1+int(split%7), len(data)/64)
	limit := MaxLineBytes
	if split&1 != 0 {
		limit = 24 + int(split/2%40)
	}
	bounded := func(f *StreamFilter, _ int, _ []byte) {
		if len(f.line) > limit || len(f.data) > limit || len(f.held) > 4*limit+2 {
			t.Fatalf("limit %d: buffers grew: line %d data %d held %d", limit, len(f.line), len(f.data), len(f.held))
		}
	}
	for _, drop := range []bool{false, true} {
		wantOut, wantMeter := refResult(data, drop, limit)
		if !drop && !bytes.Equal(wantOut, data) {
			t.Fatalf("oracle bug: pass-through output differs")
		}
		held := noHeldEvents(t, data, drop, limit)
		runs := []struct {
			name  string
			parts [][]byte
			check func(*StreamFilter, int, []byte)
		}{
			{"whole", [][]byte{data}, bounded},
			{"cut", splitAt(data, cut), func(f *StreamFilter, n int, out []byte) {
				bounded(f, n, out)
				held(f, n, out)
			}},
			{"pieces", fixedPieces(data, piece), bounded},
		}
		for _, r := range runs {
			got := feed(t, drop, limit, r.parts, r.check)
			if !bytes.Equal(got.out, wantOut) {
				t.Fatalf("limit %d drop %v %s (cut %d, piece %d): output\n%q\nwant\n%q", limit, drop, r.name, cut, piece, got.out, wantOut)
			}
			if got.meter != wantMeter {
				t.Fatalf("limit %d drop %v %s (cut %d, piece %d): meter %+v, want %+v", limit, drop, r.name, cut, piece, got.meter, wantMeter)
			}
		}
	}
	checkStripped(t, data, limit)
}

// checkValidJSON checks validJSON against json.Valid, on b and on b with
// each line of it as a document of its own (so stream payloads are covered).
func checkValidJSON(t *testing.T, b []byte) {
	for _, doc := range append(bytes.Split(b, []byte("\n")), b) {
		if got, want := validJSON(doc), json.Valid(doc); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid says %v", doc, got, want)
		}
	}
}

// fixedPieces cuts b into pieces of n bytes.
func fixedPieces(b []byte, n int) [][]byte {
	var parts [][]byte
	for len(b) > n {
		parts = append(parts, b[:n])
		b = b[n:]
	}
	return append(parts, b)
}

// FuzzParseRequest checks ParseRequest against encoding/json: it never
// panics, every error wraps ErrInvalidJSON, it accepts exactly the JSON
// objects whose typed fields are valid, and what it reports equals what a
// full decode gives (string values counted with utf8.RuneCountInString).
// It also checks InjectIncludeUsage and RewriteModel on accepted bodies.
//
// The seed corpus lives in testdata/fuzz/FuzzParseRequest.
func FuzzParseRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		checkValidJSON(t, body)
		info, err := ParseRequest(body)
		if err != nil && !errors.Is(err, ErrInvalidJSON) {
			t.Fatalf("error %v does not wrap ErrInvalidJSON", err)
		}
		want, wantErr := refParseRequest(t, body)
		if (err != nil) != (wantErr != "") {
			t.Fatalf("ParseRequest(%q): error %v, oracle says %q", body, err, wantErr)
		}
		if err != nil {
			if !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("ParseRequest(%q): error %q, oracle says %q", body, err, wantErr)
			}
			return
		}
		if info != want {
			t.Fatalf("ParseRequest(%q):\n got %+v\nwant %+v", body, info, want)
		}

		injected, err := InjectIncludeUsage(body)
		if err == nil {
			after, err := ParseRequest(injected)
			if err != nil || !after.IncludeUsage {
				t.Fatalf("InjectIncludeUsage(%q) = %q: %+v %v", body, injected, after, err)
			}
			info.IncludeUsage = true
			if after != info {
				t.Fatalf("InjectIncludeUsage(%q) changed more than include_usage: %+v vs %+v", body, after, info)
			}
		} else if !errors.Is(err, ErrInvalidJSON) {
			t.Fatalf("InjectIncludeUsage: %v", err)
		}
		rewritten, err := RewriteModel(body, "model-\u00e9\"x")
		if err != nil {
			t.Fatalf("RewriteModel(%q): %v", body, err)
		}
		after, err := ParseRequest(rewritten)
		if err != nil || after.Model != "model-\u00e9\"x" {
			t.Fatalf("RewriteModel(%q) = %q: %+v %v", body, rewritten, after, err)
		}
	})
}

// refParseRequest is the encoding/json oracle for ParseRequest; it returns
// the expected error text, or "". Its steps, in order: the checks of the
// whole body (refTop), the typed fields model, stream and stream_options
// (refStreamFields), the counts (refCounts), and the prompt estimate
// (refPromptEstimate).
func refParseRequest(t *testing.T, body []byte) (RequestInfo, string) {
	var info RequestInfo
	top, bad := refTop(t, body)
	if bad != "" {
		return info, bad
	}
	if bad := refStreamFields(t, top, &info); bad != "" {
		return info, bad
	}
	if bad := refCounts(t, top, &info); bad != "" {
		return info, bad
	}
	refPromptEstimate(t, top, &info)
	return info, ""
}

// refTop checks that body is a JSON object in which none of the members
// ParseRequest reads appears twice, and returns its members, or the error
// text.
func refTop(t *testing.T, body []byte) (map[string]json.RawMessage, string) {
	if len(bytes.Trim(body, " \t\r\n")) == 0 {
		return nil, "empty"
	}
	if !json.Valid(body) {
		return nil, "not valid JSON"
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil || top == nil {
		return nil, "not a JSON object"
	}
	read := []string{"model", "stream", "stream_options", "max_tokens", "max_completion_tokens",
		"max_output_tokens", "n", "best_of", "messages", "prompt", "input", "instructions", "system", "tools"}
	if name := refDuplicate(t, body, read); name != "" {
		return nil, "member \"" + name + "\" appears more than once"
	}
	for k := range top { // a key equal to a read member in another case
		for _, n := range read {
			if k != n && strings.EqualFold(k, n) {
				return nil, "only in letter case"
			}
		}
	}
	return top, ""
}

// refDecode decodes one raw value (numbers as json.Number); an absent
// value (nil) is nil.
func refDecode(t *testing.T, raw json.RawMessage) any {
	if raw == nil {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("oracle: decode %q: %v", raw, err)
	}
	return v
}

// refStreamFields reads model, stream and stream_options.include_usage
// into info, or returns the error text for the first invalid one.
func refStreamFields(t *testing.T, top map[string]json.RawMessage, info *RequestInfo) string {
	switch v := refDecode(t, top["model"]).(type) {
	case nil:
	case string:
		info.Model = v
	default:
		return "model must be a string"
	}
	switch v := refDecode(t, top["stream"]).(type) {
	case nil:
	case bool:
		info.Stream = v
	default:
		return "stream must be a boolean"
	}
	switch v := refDecode(t, top["stream_options"]).(type) {
	case nil:
	case map[string]any:
		return refIncludeUsage(t, top["stream_options"], v, info)
	default:
		return "stream_options must be an object"
	}
	return ""
}

// refIncludeUsage reads include_usage of the stream_options object raw
// (decoded: opts) into info, or returns the error text.
func refIncludeUsage(t *testing.T, raw json.RawMessage, opts map[string]any, info *RequestInfo) string {
	if refDuplicate(t, raw, []string{"include_usage"}) != "" {
		return "stream_options.include_usage\" appears more than once"
	}
	switch inc := opts["include_usage"].(type) {
	case nil:
	case bool:
		info.IncludeUsage = inc
	default:
		return "include_usage must be a boolean"
	}
	return ""
}

// refLargest returns the largest of floor and the counts names hold, or
// the error text for the first invalid one.
func refLargest(t *testing.T, top map[string]json.RawMessage, floor int64, names ...string) (int64, string) {
	for _, name := range names {
		switch v := refDecode(t, top[name]).(type) {
		case nil:
		case json.Number:
			n, ok := refCount(string(v))
			if !ok {
				return 0, name
			}
			floor = max(floor, n)
		default:
			return 0, name + " must be a number"
		}
	}
	return floor, ""
}

// refCounts reads MaxTokens and Completions (the latter times the number
// of prompts when prompt is a list of them) into info, or returns the
// error text.
func refCounts(t *testing.T, top map[string]json.RawMessage, info *RequestInfo) string {
	var bad string
	if info.MaxTokens, bad = refLargest(t, top, 0, "max_tokens", "max_completion_tokens", "max_output_tokens"); bad != "" {
		return bad
	}
	if info.Completions, bad = refLargest(t, top, 1, "n", "best_of"); bad != "" {
		return bad
	}
	if prompts, ok := refDecode(t, top["prompt"]).([]any); ok && len(prompts) > 0 {
		switch prompts[0].(type) {
		case string, []any:
			info.Completions = refMulSat(info.Completions, int64(len(prompts)))
		}
	}
	return ""
}

// refPromptEstimate fills PromptChars, Messages and EstimatedPromptTokens.
func refPromptEstimate(t *testing.T, top map[string]json.RawMessage, info *RequestInfo) {
	ids := refTokenIDs(t, top)
	for _, name := range promptFields() {
		info.PromptChars += refChars(t, top[name])
	}
	if messages, isArr := refDecode(t, top["messages"]).([]any); isArr {
		info.Messages = len(messages)
	} else if _, ok := refDecode(t, top["input"]).(string); ok {
		info.Messages = 1
	} else if in, ok := refDecode(t, top["input"]).([]any); ok {
		info.Messages = len(in)
	}
	info.EstimatedPromptTokens = EstimateTokens(info.PromptChars) + 4*int64(info.Messages) + ids
}

// refTokenIDs counts the token ids given in prompt and input: a number in
// the list is one, a list in it as many as its elements.
func refTokenIDs(t *testing.T, top map[string]json.RawMessage) int64 {
	var ids int64
	for _, name := range []string{"prompt", "input"} {
		list, _ := refDecode(t, top[name]).([]any)
		for _, e := range list {
			switch e := e.(type) {
			case json.Number:
				ids++
			case []any:
				ids += int64(len(e))
			}
		}
	}
	return ids
}

// refDuplicate returns the first of names that the JSON object obj has more
// than once (keys compared after decoding their escapes), or "".
func refDuplicate(t *testing.T, obj []byte, names []string) string {
	d := json.NewDecoder(bytes.NewReader(obj))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("oracle: %q is not an object", obj)
	}
	seen := map[string]bool{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("oracle: key of %q: %v", obj, err)
		}
		key := tok.(string)
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			t.Fatalf("oracle: value of %q: %v", obj, err)
		}
		for _, n := range names {
			if key == n {
				if seen[n] {
					return n
				}
				seen[n] = true
			}
		}
	}
	return ""
}

func refMulSat(a, b int64) int64 {
	if r := new(big.Int).Mul(big.NewInt(a), big.NewInt(b)); r.IsInt64() {
		return r.Int64()
	}
	return 1<<63 - 1
}

// refCount reads a count exactly with math/big. Literals with very large
// exponents are decided by sign alone, as big.Rat would take forever.
func refCount(lit string) (int64, bool) {
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		exp := strings.TrimLeft(lit[i+1:], "+-")
		exp = strings.TrimLeft(exp, "0")
		if len(exp) > 4 {
			mant, ok := new(big.Rat).SetString(lit[:i])
			if !ok {
				return 0, false
			}
			return 0, mant.Sign() == 0
		}
	}
	rat, ok := new(big.Rat).SetString(lit)
	if !ok || !rat.IsInt() || rat.Sign() < 0 || !rat.Num().IsInt64() {
		return 0, false
	}
	return rat.Num().Int64(), true
}

// refChars counts the characters of every string value (not key) in a raw
// value, walking its tokens with encoding/json: every value counts, also
// those a repeated key overrides.
func refChars(t *testing.T, raw json.RawMessage) int64 {
	if raw == nil {
		return 0
	}
	type frame struct{ obj, expectKey bool }
	var stack []frame
	var n int64
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatalf("oracle: tokens of %q: %v", raw, err)
		}
		top := len(stack) - 1
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				if top >= 0 && stack[top].obj {
					stack[top].expectKey = true // after this value, a key
				}
				stack = append(stack, frame{obj: v == '{', expectKey: true})
			} else {
				stack = stack[:top]
			}
			continue
		case string:
			if top >= 0 && stack[top].obj && stack[top].expectKey {
				stack[top].expectKey = false // a key
				continue
			}
			n += int64(utf8.RuneCountInString(v))
		}
		if top >= 0 && stack[top].obj {
			stack[top].expectKey = true
		}
	}
}

// FuzzParseResponseUsage checks ParseResponseUsage against encoding/json:
// no panics, errors wrap ErrInvalidJSON, invalid JSON is always an error,
// and the counts match a full decode of the usage object.
//
// The seed corpus lives in testdata/fuzz/FuzzParseResponseUsage.
func FuzzParseResponseUsage(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		checkValidJSON(t, body)
		u, ok, err := ParseResponseUsage(body)
		if err != nil {
			if !errors.Is(err, ErrInvalidJSON) {
				t.Fatalf("error %v does not wrap ErrInvalidJSON", err)
			}
			if ok || u != (Usage{}) {
				t.Fatalf("error %v with ok=%v usage %+v", err, ok, u)
			}
		}
		if !json.Valid(body) {
			if err == nil {
				t.Fatalf("ParseResponseUsage(%q) accepted invalid JSON", body)
			}
			return
		}
		want, wantOK, wantErr := refResponseUsage(body)
		if (err != nil) != wantErr || ok != wantOK || u != want {
			t.Fatalf("ParseResponseUsage(%q) = %+v %v %v, oracle %+v %v err=%v", body, u, ok, err, want, wantOK, wantErr)
		}
		// The same usage object inside a stream chunk reads the same.
		if err == nil {
			var top map[string]json.RawMessage
			if json.Unmarshal(body, &top) == nil && top["usage"] != nil {
				chunk := []byte(`{"choices":[],"usage":` + string(top["usage"]) + `}`)
				cu, cok := ParseChunkUsage(chunk)
				if cu != u || cok != ok {
					t.Fatalf("ParseChunkUsage disagrees: %+v %v vs %+v %v", cu, cok, u, ok)
				}
			}
		}
	})
}

// refResponseUsage is the encoding/json oracle for ParseResponseUsage. Its
// steps: find the usage object (refUsageObject), read its counts
// (refUsageCounts) and details (refUsageDetail), then fall back from the
// OpenAI names to the Responses and DeepSeek ones (refMergeUsage).
func refResponseUsage(body []byte) (Usage, bool, bool) {
	usage, found, bad := refUsageObject(body)
	if !found {
		return Usage{}, false, bad
	}
	c, bad := refUsageCounts(usage, "prompt_tokens", "completion_tokens", "total_tokens",
		"input_tokens", "output_tokens", "prompt_cache_hit_tokens")
	if bad {
		return Usage{}, false, true
	}
	cached, b1 := refUsageDetail(usage, []string{"prompt_tokens_details", "input_tokens_details"}, "cached_tokens")
	reasoning, b2 := refUsageDetail(usage, []string{"completion_tokens_details", "output_tokens_details"}, "reasoning_tokens")
	if b1 || b2 {
		return Usage{}, false, true
	}
	return refMergeUsage(c, cached, reasoning.n)
}

// refCounted is one count of a usage object; present is false for absent
// or null.
type refCounted struct {
	n       int64
	present bool
}

// refUsageObject returns the members of body's top-level usage object;
// found is false when there is none (bad then says whether that is an
// error: a usage value that is not an object).
func refUsageObject(body []byte) (usage map[string]json.RawMessage, found, bad bool) {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil || top == nil {
		return nil, false, false // valid JSON, not an object
	}
	raw := top["usage"]
	if raw == nil || string(raw) == "null" {
		return nil, false, false
	}
	if json.Unmarshal(raw, &usage) != nil {
		return nil, false, true
	}
	return usage, true, false
}

// refUsageCount reads obj[name]; present is false for absent or null.
func refUsageCount(obj map[string]json.RawMessage, name string) (n int64, present, bad bool) {
	v, ok := obj[name]
	if !ok || string(v) == "null" {
		return 0, false, false
	}
	var num json.Number
	if c := bytes.TrimSpace(v)[0]; c != '-' && (c < '0' || c > '9') {
		return 0, false, true // json.Number would also take "12"
	}
	if json.Unmarshal(v, &num) != nil {
		return 0, false, true
	}
	n, ok = refCount(string(num))
	return n, true, !ok
}

// refUsageCounts reads the counts names of usage, in order; bad is true
// when any of them is invalid.
func refUsageCounts(usage map[string]json.RawMessage, names ...string) ([]refCounted, bool) {
	var out []refCounted
	var bad bool
	for _, name := range names {
		n, present, b := refUsageCount(usage, name)
		bad = bad || b
		out = append(out, refCounted{n, present})
	}
	return out, bad
}

// refUsageDetail reads leaf from the first of the detail objects names
// that is present (not null) and has it.
func refUsageDetail(usage map[string]json.RawMessage, names []string, leaf string) (refCounted, bool) {
	for _, name := range names {
		v, ok := usage[name]
		if !ok || string(v) == "null" {
			continue
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(v, &obj) != nil || obj == nil {
			return refCounted{}, true
		}
		n, present, b := refUsageCount(obj, leaf)
		if b {
			return refCounted{}, true
		}
		if present {
			return refCounted{n, true}, false
		}
	}
	return refCounted{}, false
}

// refMergeUsage builds the usage from the counts prompt, completion,
// total, input, output and prompt_cache_hit (c, in that order) and the
// details: input and output stand in for absent prompt and completion, the
// cache hits for absent cached tokens, and the total is their sum when
// absent. Without prompt, completion and total there is no usage.
func refMergeUsage(c []refCounted, cached refCounted, reasoning int64) (Usage, bool, bool) {
	prompt, completion, total, input, output, hit := c[0], c[1], c[2], c[3], c[4], c[5]
	if !prompt.present && input.present {
		prompt = input
	}
	if !completion.present && output.present {
		completion = output
	}
	if !cached.present && hit.present {
		cached.n = hit.n
	}
	if !prompt.present && !completion.present && !total.present {
		return Usage{}, false, false
	}
	if !total.present {
		total.n = addSat(prompt.n, completion.n)
	}
	u := Usage{PromptTokens: prompt.n, CompletionTokens: completion.n, TotalTokens: total.n,
		CachedTokens: cached.n, ReasoningTokens: reasoning}
	return u, true, false
}

// FuzzUsageScanner checks UsageScanner against ParseResponseUsage: fed
// whole, cut at an arbitrary point, in small pieces, or a byte at a time,
// the scanner reads what ParseResponseUsage reads from the whole body (the
// same usage, or the same error), on any input, valid JSON or not, unless
// the top-level usage value is larger than MaxUsageBytes (then it reads no
// usage). split picks the cut and the piece size. It also checks that
// nothing panics and that what the scanner keeps stays within its bounds.
//
// The seed corpus lives in testdata/fuzz/FuzzUsageScanner.
func FuzzUsageScanner(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte, split uint) {
		want, wantOK, wantErr := ParseResponseUsage(body)
		if wantErr == nil && len(lookup(body, "usage")) > MaxUsageBytes {
			want, wantOK = Usage{}, false
		}
		cut := int(split % uint(len(body)+1))
		piece := 1 + int(split/8%64)
		runs := []struct {
			name  string
			parts [][]byte
		}{
			{"whole", [][]byte{body}},
			{"cut", splitAt(body, cut)},
			{"pieces", fixedPieces(body, piece)},
			{"bytes", fixedPieces(body, 1)},
		}
		for _, r := range runs {
			s, u, ok, err := scanParts(r.parts...)
			if !sameReading(u, ok, err, want, wantOK, wantErr) {
				t.Fatalf("%s (cut %d, piece %d) of %q: got %+v %v %v, ParseResponseUsage %+v %v %v",
					r.name, cut, piece, body, u, ok, err, want, wantOK, wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidJSON) {
				t.Fatalf("error %v does not wrap ErrInvalidJSON", err)
			}
			if len(s.val) > MaxUsageBytes || len(s.stack) > maxNesting || s.keyLen > maxUsageKey {
				t.Fatalf("%s: bounds exceeded: value %d, stack %d, key %d", r.name, len(s.val), len(s.stack), s.keyLen)
			}
		}
	})
}
