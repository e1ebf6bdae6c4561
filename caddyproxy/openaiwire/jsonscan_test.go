package openaiwire

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestStringChars(t *testing.T) {
	cases := []struct {
		lit  string
		want int64
	}{
		{`""`, 0},
		{`"abc"`, 3},
		{`"héllo"`, 5},
		{`"👋"`, 1},
		{`"\n\t\"\\\/"`, 5},
		{`"\u00e9"`, 1},
		{`"\ud83d\ude00"`, 1},
		{`"\ud83d"`, 1},
		{`"\ude00\ud83d"`, 2},
		{`"\ud83dx"`, 2},
		{`"\ud83d\u0041"`, 2},
		{"\"\xff\xfe\"", 2},
		{`123`, 0},
		{`null`, 0},
	}
	for _, tc := range cases {
		if got := stringChars([]byte(tc.lit)); got != tc.want {
			t.Errorf("stringChars(%s) = %d, want %d", tc.lit, got, tc.want)
		}
		var s string
		if json.Unmarshal([]byte(tc.lit), &s) == nil && int64(len([]rune(s))) != tc.want {
			t.Errorf("test bug: %s decodes to %d runes", tc.lit, len([]rune(s)))
		}
	}
}

// TestScannerMalformed runs the scanner helpers on malformed input they are
// never given in production, to show they stop instead of panicking.
func TestScannerMalformed(t *testing.T) {
	inputs := []string{``, `{`, `{"`, `{"a"`, `{"a":`, `{"a":1`, `{"a":1,`, `[`, `[1,`, `"`, `"\`, `{"a":"\`, `{]`, `[}`, `{"a":[}`, "\"\\u12", `\`}
	for _, in := range inputs {
		b := []byte(in)
		valueEnd(b, 0)
		stringChars(b)
		valueChars(b)
		lookup(b, "a")
		arrayLen(b)
		scanChunk(b)
		parseUsage(b)
		isEmptyArray(b)
		c, _ := scanChunk(b)
		c.generatedChars()
		c.modelOf()
		c.usageOf()
		if it, ok := newObjectIter(b); ok {
			for {
				if _, more := it.next(); !more {
					break
				}
			}
		}
	}
}

func TestRuneCount(t *testing.T) {
	for _, s := range []string{"", "a", "abcdefgh", "abcdefghi", "héllo wörld, this is longer than eight", "👋👋👋", "\xff\xfe\x80abc", "\xed\xa0\x80", "ab\xe2\x82", strings.Repeat("é", 40) + "\xc3"} {
		if got, want := runeCount([]byte(s)), int64(utf8.RuneCountInString(s)); got != want {
			t.Errorf("runeCount(%q) = %d, want %d", s, got, want)
		}
	}
}
