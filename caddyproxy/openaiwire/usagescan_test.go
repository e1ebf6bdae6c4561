package openaiwire

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// scanParts feeds parts to a new UsageScanner and returns its reading.
func scanParts(parts ...[]byte) (*UsageScanner, Usage, bool, error) {
	var s UsageScanner
	for _, p := range parts {
		if n, err := s.Write(p); n != len(p) || err != nil {
			return &s, Usage{}, false, errors.New("write reported a short write or an error")
		}
	}
	u, ok, err := s.Usage()
	return &s, u, ok, err
}

// sameReading reports whether two (usage, ok, err) readings agree, errors
// by their text.
func sameReading(u1 Usage, ok1 bool, err1 error, u2 Usage, ok2 bool, err2 error) bool {
	if u1 != u2 || ok1 != ok2 || (err1 == nil) != (err2 == nil) {
		return false
	}
	return err1 == nil || err1.Error() == err2.Error()
}

// checkEverySplit scans doc whole, in one-byte pieces, cut in two at every
// position and, for short documents, cut in three at every pair of
// positions, and checks that each reading is want.
func checkEverySplit(t *testing.T, name, doc string, want Usage, wantOK bool, wantErr error) {
	t.Helper()
	b := []byte(doc)
	check := func(how string, parts ...[]byte) {
		t.Helper()
		_, u, ok, err := scanParts(parts...)
		if !sameReading(u, ok, err, want, wantOK, wantErr) {
			t.Fatalf("%s, %s: got %+v %v %v, want %+v %v %v", name, how, u, ok, err, want, wantOK, wantErr)
		}
	}
	check("whole", b)
	check("one-byte pieces", fixedPieces(b, 1)...)
	for i := 0; i <= len(b); i++ {
		check("cut at "+strconv.Itoa(i), b[:i], b[i:])
	}
	if len(b) > 200 {
		return
	}
	for i := 0; i <= len(b); i++ {
		for j := i; j <= len(b); j++ {
			check("cut at "+strconv.Itoa(i)+" and "+strconv.Itoa(j), b[:i], b[i:j], b[j:])
		}
	}
}

func TestUsageScanner(t *testing.T) {
	u12 := Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}
	cases := []struct {
		name string
		doc  string
		want Usage
		ok   bool
	}{
		{"usage first", `{"usage":{"prompt_tokens":1,"completion_tokens":2},"id":"x","choices":[{"message":{"content":"hi"}}]}`, u12, true},
		{"usage in the middle", `{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":2},"choices":[]}`, u12, true},
		{"usage last", `{"id":"x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}`, u12, true},
		{"only member", `{"usage":{"prompt_tokens":1,"completion_tokens":2}}`, u12, true},
		{"whitespace everywhere", " \r\n\t{ \"id\" : \"x\" ,\n\t\"usage\"\r\n:\t{ \"prompt_tokens\" : 1 ,\n\"completion_tokens\" :2\n} , \"n\" : [ 1 , 2 ] } \n", u12, true},
		{"usage text in strings", `{"note":"\"usage\":{\"prompt_tokens\":9}","usage":{"prompt_tokens":1,"completion_tokens":2},"tail":"\"usage\":{\"prompt_tokens\":9}}"}`, u12, true},
		{"usage as a string value", `{"a":"usage","b":["usage",{"k":"usage"}],"usage":{"prompt_tokens":1,"completion_tokens":2},"c":"usage"}`, u12, true},
		{"usage nested before and after", `{"x":{"usage":{"prompt_tokens":9}},"usage":{"prompt_tokens":1,"completion_tokens":2},"y":[{"usage":{"prompt_tokens":8}}],"z":{"a":{"usage":7}}}`, u12, true},
		{"escapes around", `{"a":"\\","b":"\\\"usage\\\":","c":"\u0022usage\u0022:{}","usage":{"prompt_tokens":1,"completion_tokens":2},"d":"\\\\\"}"}`, u12, true},
		{"escaped key", `{"us\u0061ge":{"prompt_tokens":1,"completion_tokens":2}}`, u12, true},
		{"fully escaped key", `{"\u0075\u0073\u0061\u0067\u0065":{"prompt_tokens":1,"completion_tokens":2}}`, u12, true},
		{"usage inside usage", `{"usage":{"usage":{"prompt_tokens":9},"prompt_tokens":1,"completion_tokens":2}}`, u12, true},
		{"repeated: last wins", `{"usage":{"prompt_tokens":9},"id":"x","usage":{"prompt_tokens":1,"completion_tokens":2}}`, u12, true},
		{"repeated: null last", `{"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":null}`, Usage{}, false},
		{"usage null", `{"id":"x","usage":null,"n":1}`, Usage{}, false},
		{"usage empty", `{"usage":{}}`, Usage{}, false},
		{"no usage", `{"id":"x","choices":[]}`, Usage{}, false},
		{"nested only", `{"data":{"usage":{"prompt_tokens":1}},"list":[{"usage":{"prompt_tokens":1}}]}`, Usage{}, false},
		{"key with more after usage", `{"usage2":{"prompt_tokens":1},"usage\u0000":{"prompt_tokens":1},"Usage":{"prompt_tokens":1}}`, Usage{}, false},
		{"long key", `{"usageusageusageusageusageusageusage":{"prompt_tokens":1},"\u0075\u0073\u0061\u0067\u0065\u0020":{"prompt_tokens":1}}`, Usage{}, false},
		{"array body", `[{"usage":{"prompt_tokens":1}}]`, Usage{}, false},
		{"string body", `"usage"`, Usage{}, false},
		{"number body", ` -12.5e+3 `, Usage{}, false},
		{"number body at end", `0`, Usage{}, false},
		{"literal body", `null`, Usage{}, false},
		{"numbers and literals", `{"a":-0.5E-2,"b":[true,false,null,0,1e9],"usage":{"prompt_tokens":1e0,"completion_tokens":2.0,"x":[-1,{"y":null}]},"c":10}`, u12, true},
		{"chat", chatResponse, Usage{PromptTokens: 1117, CompletionTokens: 46, TotalTokens: 1163, CachedTokens: 1024, ReasoningTokens: 12}, true},
		{"completions", completionsResponse, Usage{PromptTokens: 5, CompletionTokens: 7, TotalTokens: 12}, true},
		{"embeddings", embeddingsResponse, Usage{PromptTokens: 8, TotalTokens: 8}, true},
		{"responses", responsesResponse, Usage{PromptTokens: 36, CompletionTokens: 87, TotalTokens: 123, CachedTokens: 4, ReasoningTokens: 2}, true},
	}
	for _, tc := range cases {
		// The differential check: the scanner reads what ParseResponseUsage
		// reads from the whole document, and both read what the case says.
		ru, rok, rerr := ParseResponseUsage([]byte(tc.doc))
		if rerr != nil || ru != tc.want || rok != tc.ok {
			t.Fatalf("%s: test bug: ParseResponseUsage says %+v %v %v", tc.name, ru, rok, rerr)
		}
		checkEverySplit(t, tc.name, tc.doc, tc.want, tc.ok, nil)
	}
}

func TestUsageScannerErrors(t *testing.T) {
	cases := []struct{ name, doc, msg string }{
		{"empty", ``, "response body is empty"},
		{"only spaces", " \r\n\t", "response body is empty"},
		{"not json", `<html>502 Bad Gateway</html>`, "not valid JSON"},
		{"trailing garbage", `{"usage":{"prompt_tokens":1}}x`, "not valid JSON"},
		{"two values", `{"usage":{"prompt_tokens":1}} {}`, "not valid JSON"},
		{"unclosed", `{"usage":{"prompt_tokens":1}`, "not valid JSON"},
		{"mismatched", `{"usage":{"prompt_tokens":1]}`, "not valid JSON"},
		{"extra close", `{"usage":{"prompt_tokens":1}}}`, "not valid JSON"},
		{"trailing comma", `{"usage":{"prompt_tokens":1},}`, "not valid JSON"},
		{"missing colon", `{"usage" {"prompt_tokens":1}}`, "not valid JSON"},
		{"bare key", `{usage:{"prompt_tokens":1}}`, "not valid JSON"},
		{"raw newline in string", "{\"a\":\"x\ny\",\"usage\":{\"prompt_tokens\":1}}", "not valid JSON"},
		{"bad escape", `{"a":"\x","usage":{"prompt_tokens":1}}`, "not valid JSON"},
		{"bad hex escape", `{"a":"\u12g4","usage":{"prompt_tokens":1}}`, "not valid JSON"},
		{"leading zero", `{"a":01,"usage":{"prompt_tokens":1}}`, "not valid JSON"},
		{"bare minus", `{"a":-,"usage":{"prompt_tokens":1}}`, "not valid JSON"},
		{"bare dot", `{"a":1.,"usage":{"prompt_tokens":1}}`, "not valid JSON"},
		{"bare exponent", `{"a":1e+,"usage":{"prompt_tokens":1}}`, "not valid JSON"},
		{"bad literal", `{"a":nul,"usage":{"prompt_tokens":1}}`, "not valid JSON"},
		{"number then literal", `{"a":1true,"usage":{"prompt_tokens":1}}`, "not valid JSON"},
		{"truncated number", `-`, "not valid JSON"},
		{"usage not an object", `{"usage":"usage"}`, "usage is not an object"},
		{"usage a number", `{"usage":-1.5e3,"id":"x"}`, "usage is not an object"},
		{"usage a number at the end", `{"id":"x","usage":12}`, "usage is not an object"},
		{"usage an array", `{"usage":[{"prompt_tokens":1}]}`, "usage is not an object"},
		{"usage true", `{"usage":true}`, "usage is not an object"},
		{"negative", `{"usage":{"prompt_tokens":-3}}`, "usage.prompt_tokens must not be negative"},
		{"bad cached", `{"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":-1}}}`, "usage.prompt_tokens_details.cached_tokens must not be negative"},
	}
	for _, tc := range cases {
		ru, rok, rerr := ParseResponseUsage([]byte(tc.doc))
		if rerr == nil || !strings.Contains(rerr.Error(), tc.msg) {
			t.Fatalf("%s: test bug: ParseResponseUsage says %+v %v %v", tc.name, ru, rok, rerr)
		}
		checkEverySplit(t, tc.name, tc.doc, Usage{}, false, rerr)
		_, _, _, err := scanParts([]byte(tc.doc))
		if !errors.Is(err, ErrInvalidJSON) {
			t.Fatalf("%s: error %v does not wrap ErrInvalidJSON", tc.name, err)
		}
	}
}

func TestUsageScannerTruncated(t *testing.T) {
	// Every proper prefix of a response is not JSON (or, cut inside the
	// first spaces, empty), whichever way it was written.
	for _, doc := range []string{chatResponse, responsesResponse} {
		for n := range len(doc) {
			want := "response body is not valid JSON"
			if len(trimSpace([]byte(doc[:n]))) == 0 {
				want = "response body is empty"
			}
			for _, parts := range [][][]byte{{[]byte(doc[:n])}, fixedPieces([]byte(doc[:n]), 3)} {
				_, u, ok, err := scanParts(parts...)
				if ok || u != (Usage{}) || err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("prefix of %d bytes: %+v %v %v", n, u, ok, err)
				}
			}
		}
	}
}

func TestUsageScannerLargeValues(t *testing.T) {
	pad := `"` + strings.Repeat("x", MaxUsageBytes) + `"`
	small := `{"prompt_tokens":1,"completion_tokens":2}`
	u12 := Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}
	cases := []struct {
		name string
		doc  string
		want Usage
		ok   bool
	}{
		{"too large", `{"usage":{"prompt_tokens":1,"completion_tokens":2,"pad":` + pad + `}}`, Usage{}, false},
		{"too large, then small", `{"usage":{"pad":` + pad + `},"usage":` + small + `}`, u12, true},
		{"small, then too large", `{"usage":` + small + `,"usage":{"pad":` + pad + `}}`, Usage{}, false},
		{"large elsewhere", `{"a":` + pad + `,"usage":` + small + `,"b":[` + pad + `,{"c":` + pad + `}]}`, u12, true},
		{"just fits", `{"usage":{"prompt_tokens":1,"completion_tokens":2,"pad":` + pad[:MaxUsageBytes-len(small)-8] + `"}}`, u12, true},
	}
	for _, tc := range cases {
		doc := []byte(tc.doc)
		for _, size := range []int{1, 7, 4096, len(doc)} {
			s, u, ok, err := scanParts(fixedPieces(doc, size)...)
			if err != nil || u != tc.want || ok != tc.ok {
				t.Fatalf("%s, pieces of %d: %+v %v %v", tc.name, size, u, ok, err)
			}
			if cap(s.val) > 2*MaxUsageBytes {
				t.Fatalf("%s: kept %d bytes", tc.name, cap(s.val))
			}
		}
	}
	// "just fits" is exactly MaxUsageBytes of usage value.
	if n := len(`{"prompt_tokens":1,"completion_tokens":2,"pad":` + pad[:MaxUsageBytes-len(small)-8] + `"}`); n != MaxUsageBytes {
		t.Fatalf("test bug: usage value is %d bytes", n)
	}
}

func TestUsageScannerNesting(t *testing.T) {
	nest := func(n int) string {
		return `{"usage":{"prompt_tokens":1},"deep":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `}`
	}
	for _, tc := range []struct {
		depth int
		valid bool
	}{{maxNesting, true}, {maxNesting + 1, false}} {
		doc := nest(tc.depth)
		ru, rok, rerr := ParseResponseUsage([]byte(doc))
		s, u, ok, err := scanParts(fixedPieces([]byte(doc), 100)...)
		if !sameReading(u, ok, err, ru, rok, rerr) || (err == nil) != tc.valid {
			t.Fatalf("depth %d: got %+v %v %v, ParseResponseUsage %+v %v %v", tc.depth, u, ok, err, ru, rok, rerr)
		}
		if len(s.stack) > maxNesting {
			t.Fatalf("depth %d: stack grew to %d", tc.depth, len(s.stack))
		}
	}
}

func TestUsageScannerStopsWhenBroken(t *testing.T) {
	var s UsageScanner
	_, _ = s.Write([]byte(`{"a":}`))
	// Nothing written after the break is read, not even a usage member.
	_, _ = s.Write([]byte(`,"usage":{"prompt_tokens":1}}`))
	if s.found || s.state != sBroken {
		t.Fatalf("kept reading after the break: found %v state %d", s.found, s.state)
	}
	if _, ok, err := s.Usage(); ok || !errors.Is(err, ErrInvalidJSON) {
		t.Fatalf("broken body: ok %v err %v", ok, err)
	}
}
