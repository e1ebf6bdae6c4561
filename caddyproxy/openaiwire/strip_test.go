package openaiwire

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// stripCases are JSON objects with top-level usage members and what they
// become without them.
var stripCases = []struct{ name, in, want string }{
	{"middle", `{"a":1,"usage":null,"b":2}`, `{"a":1,"b":2}`},
	{"first", `{"usage":null,"a":1}`, `{"a":1}`},
	{"last", `{"a":1,"usage":null}`, `{"a":1}`},
	{"only", `{"usage":null}`, `{}`},
	{"object value", `{"id":"x","choices":[{"index":0}],"usage":{"prompt_tokens":1,"usage":2}}`, `{"id":"x","choices":[{"index":0}]}`},
	{"object value first", `{"usage":{"a":[1,{"b":"}"}]},"id":"x"}`, `{"id":"x"}`},
	{"spaces middle", `{ "a" : 1 , "usage" : null , "b" : 2 }`, `{ "a" : 1 , "b" : 2 }`},
	{"spaces first", `{ "usage" : null , "a" : 1 }`, `{ "a" : 1 }`},
	{"spaces last", `{ "a" : 1 , "usage" : null }`, `{ "a" : 1 }`},
	{"spaces only", "{ \t\"usage\" :\tnull\t}", "{ \t\t}"},
	{"tabs and newlines", "{\"a\":1,\n\t\"usage\": {},\n\t\"b\":2\n}", "{\"a\":1,\n\t\"b\":2\n}"},
	{"two adjacent", `{"a":1,"usage":null,"usage":{},"b":2}`, `{"a":1,"b":2}`},
	{"two apart", `{"usage":1,"a":1,"usage":2}`, `{"a":1}`},
	{"two at the end", `{"a":1, "usage":1, "usage":2 }`, `{"a":1 }`},
	{"three, all", `{ "usage":1 , "usage":2,"usage":3 }`, `{  }`},
	{"escaped key", `{"a":1,"us\u0061ge":null}`, `{"a":1}`},
	{"nested decoy", `{"x":{"usage":null},"usage":null,"y":[{"usage":1}]}`, `{"x":{"usage":null},"y":[{"usage":1}]}`},
	{"string decoys", `{"x":"\"usage\":null,","usage":null,"usage_x":"usage","\"usage\"":1}`, `{"x":"\"usage\":null,","usage_x":"usage","\"usage\"":1}`},
	{"key usage with other case", `{"Usage":1,"usage":2}`, `{"Usage":1}`},
	{"unicode around", `{"é":"ü","usage":null,"😀":"x"}`, `{"é":"ü","😀":"x"}`},
}

// stripped runs appendWithoutUsage the way the filter does: with the
// positions scanChunk records.
func stripped(t *testing.T, obj []byte) []byte {
	t.Helper()
	if !validJSON(obj) {
		t.Fatalf("test bug: %q is not valid JSON", obj)
	}
	c, isObj := scanChunk(obj)
	if !isObj || c.usage == nil {
		t.Fatalf("test bug: %q has no usage member", obj)
	}
	return appendWithoutUsage(nil, obj, c.usageKey, c.usagePrev)
}

func TestAppendWithoutUsage(t *testing.T) {
	for _, tc := range stripCases {
		t.Run(tc.name, func(t *testing.T) {
			got := stripped(t, []byte(tc.in))
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			if ref := refWithoutUsage([]byte(tc.in)); string(ref) != tc.want {
				t.Fatalf("oracle gives %s", ref)
			}
			// Inside a line, with bytes before and after, into a buffer
			// that already holds something.
			line := []byte("\uFEFFdata:  " + tc.in + " \t")
			c, _ := scanChunk([]byte(tc.in))
			shift := len("\uFEFFdata:  ")
			prev := c.usagePrev
			if prev >= 0 {
				prev += shift
			}
			got = appendWithoutUsage([]byte("x"), line, c.usageKey+shift, prev)
			if want := "x\uFEFFdata:  " + tc.want + " \t"; string(got) != want {
				t.Fatalf("in a line: got %q, want %q", got, want)
			}
		})
	}
}

// TestAppendWithoutUsageBadPositions checks that positions that do not fit
// the object leave it unchanged rather than corrupting it.
func TestAppendWithoutUsageBadPositions(t *testing.T) {
	obj := []byte(`{"a":1,"usage":null}`)
	for _, pos := range [][2]int{{-1, -1}, {len(obj), -1}, {3, 5}, {8, 6}, {1, 9}} {
		if got := appendWithoutUsage(nil, obj, pos[0], pos[1]); !bytes.Equal(got, obj) {
			t.Errorf("positions %v: got %s", pos, got)
		}
	}
}

// stripStreamCases are streams for the filter with dropping on: what the
// client gets, and the usage metered (from chunks whose usage is removed
// too).
var stripStreamCases = []struct {
	name, in, want string
	usage          Usage
}{
	{"lf", "data: {\"a\":1,\"usage\":null}\n\ndata: [DONE]\n\n", "data: {\"a\":1}\n\ndata: [DONE]\n\n", Usage{}},
	{"crlf with id and event", "id: 1\r\nevent: message\r\ndata: {\"usage\":null, \"a\":1}\r\n\r\n",
		"id: 1\r\nevent: message\r\ndata: {\"a\":1}\r\n\r\n", Usage{}},
	{"cr only, fields after", "data:{\"a\":1 , \"usage\" : {\"prompt_tokens\":2,\"completion_tokens\":3}}\rid: 9\r: note\r\r",
		"data:{\"a\":1}\rid: 9\r: note\r\r", Usage{PromptTokens: 2, CompletionTokens: 3, TotalTokens: 5}},
	{"blank data lines first", "data:\ndata:  \ndata:  {\"usage\":null}  \ndata:\n\n", "data:\ndata:  \ndata:  {}  \ndata:\n\n", Usage{}},
	{"comment first", ": hi\ndata: {\"x\":\"usage\",\"usage\":null,\"y\":{\"usage\":{}}}\n\n",
		": hi\ndata: {\"x\":\"usage\",\"y\":{\"usage\":{}}}\n\n", Usage{}},
	{"several events", "data: {\"usage\":null,\"n\":1}\n\ndata: {\"n\":2,\"usage\":null}\n\ndata: {\"n\":3}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7}}\n\ndata: [DONE]\n\n",
		"data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: {\"n\":3}\n\ndata: [DONE]\n\n", Usage{PromptTokens: 7, TotalTokens: 7}},
	{"bom", "\uFEFFdata: {\"usage\":null,\"a\":1}\n\n", "\uFEFFdata: {\"a\":1}\n\n", Usage{}},
	{"no final blank line", "data: {\"a\":1,\"usage\":{\"prompt_tokens\":1}}\n", "data: {\"a\":1}\n", Usage{PromptTokens: 1, TotalTokens: 1}},
	{"no final line end", "data: {\"a\":1,\"usage\":{\"prompt_tokens\":1}}", "data: {\"a\":1}", Usage{PromptTokens: 1, TotalTokens: 1}},
	{"escaped key", "data: {\"us\\u0061ge\":{\"prompt_tokens\":4},\"a\":1}\n\n", "data: {\"a\":1}\n\n", Usage{PromptTokens: 4, TotalTokens: 4}},
	// Left alone: no top-level usage member, not JSON, not an object, an
	// object over several data lines, trailing data, a Responses event.
	{"no usage", "data: {\"a\":{\"usage\":null},\"b\":\"\\\"usage\\\":null\"}\n\n", "data: {\"a\":{\"usage\":null},\"b\":\"\\\"usage\\\":null\"}\n\n", Usage{}},
	{"not json", "data: {\"a\":1,\"usage\":null\n\ndata: {\"usage\":null} x\n\n", "data: {\"a\":1,\"usage\":null\n\ndata: {\"usage\":null} x\n\n", Usage{}},
	{"array", "data: [{\"usage\":null}]\n\n", "data: [{\"usage\":null}]\n\n", Usage{}},
	{"multi-line", "data: {\"a\":1,\ndata: \"usage\":null}\n\ndata: {\"usage\":null,\ndata: \"a\":1}\n\n",
		"data: {\"a\":1,\ndata: \"usage\":null}\n\ndata: {\"usage\":null,\ndata: \"a\":1}\n\n", Usage{}},
	{"more data after the object", "data: {\"a\":1,\"usage\":null}\ndata: {}\n\n", "data: {\"a\":1}\ndata: {}\n\n", Usage{}},
	{"responses event", "data: {\"type\":\"response.created\",\"usage\":null}\n\n", "data: {\"type\":\"response.created\",\"usage\":null}\n\n", Usage{}},
}

// TestStreamFilterStripsUsage runs the stream cases whole, cut at every
// byte (and at every pair of bytes), and byte by byte: dropping on, the
// output is the expected one, the oracle agrees, the usage removed is still
// metered, and no complete event is held back. Dropping off, the output is
// the input.
func TestStreamFilterStripsUsage(t *testing.T) {
	for _, tc := range stripStreamCases {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			for _, drop := range []bool{false, true} {
				want := tc.in
				if drop {
					want = tc.want
				}
				if refOut, _ := refResult(in, drop, MaxLineBytes); string(refOut) != want {
					t.Fatalf("drop=%v: oracle gives %q, want %q", drop, refOut, want)
				}
				check := noHeldEvents(t, in, drop, MaxLineBytes)
				runs := [][][]byte{whole(tc.in), fixedPieces(in, 1)}
				for k := 0; k <= len(in); k++ {
					runs = append(runs, splitAt(in, k))
					for j := k; j <= len(in); j++ {
						runs = append(runs, splitAt(in, k, j))
					}
				}
				for _, parts := range runs {
					got := feed(t, drop, 0, parts, check)
					if string(got.out) != want {
						t.Fatalf("drop=%v, %d parts: got %q, want %q", drop, len(parts), got.out, want)
					}
					if got.meter.usage != tc.usage || got.meter.hasUsage != (tc.usage != Usage{}) {
						t.Fatalf("drop=%v: usage %+v %v, want %+v", drop, got.meter.usage, got.meter.hasUsage, tc.usage)
					}
				}
			}
		})
	}
}

// TestStreamFilterStripsOnTheWay checks that the chunk lines of a stream
// written one line at a time come out at once, without usage.
func TestStreamFilterStripsOnTheWay(t *testing.T) {
	f := NewStreamFilter(true)
	lines := []string{"id: 1\r\n", "data: {\"n\":1,\"usage\":null}\r\n", "\r\n", "data: {\"usage\":{\"prompt_tokens\":5},\"n\":2}\r\n", "\r\n"}
	wants := []string{"", "id: 1\r\ndata: {\"n\":1}\r\n", "\r\n", "data: {\"n\":2}\r\n", "\r\n"}
	for i, l := range lines {
		if got := f.Write([]byte(l)); string(got) != wants[i] {
			t.Fatalf("Write(%q) = %q, want %q", l, got, wants[i])
		}
	}
	if u, ok := f.Usage(); !ok || u.PromptTokens != 5 {
		t.Fatalf("usage %+v %v", u, ok)
	}
}

// TestStreamFilterStripAllocs checks that chunks cost no allocations once
// the filter's buffers have grown, whether or not they carry usage.
func TestStreamFilterStripAllocs(t *testing.T) {
	for _, usage := range []string{"null", chatUsage} {
		ev := []byte("data: " + mkChatChunk(`[{"index":0,"delta":{"content":"x"}}]`, usage) + "\n\n")
		for _, drop := range []bool{false, true} {
			f := NewStreamFilter(drop)
			f.Write(ev)
			if n := testing.AllocsPerRun(100, func() { f.Write(ev) }); n != 0 {
				t.Errorf("usage %.10s drop %v: %v allocations per chunk", usage, drop, n)
			}
		}
	}
}

// checkStripped checks what dropping did to the events of one stream, on
// the oracle's account of it (which the filter's output equals): an event
// passed on differs from its input only in one data line whose object had
// a top-level "usage" member; that line is still valid JSON and has all
// the other members, and none called usage. Events are cut as refRun cuts
// them.
func checkStripped(t *testing.T, in []byte, limit int) {
	lines, complete := refLines(in)
	var event []refLine
	for n, l := range lines {
		last := n == len(lines)-1
		blank := len(l.content) == 0 && l.rawLen <= limit && !(last && !complete)
		if !blank {
			event = append(event, l)
			if !last {
				continue
			}
		}
		out := refAppendEvent(nil, event, true, limit)
		var raw []byte
		for _, e := range event {
			raw = append(raw, e.raw...)
		}
		if !bytes.Equal(out, raw) {
			checkStrippedEvent(t, raw, out)
		}
		event = event[:0]
	}
}

// checkStrippedEvent compares one event before and after.
func checkStrippedEvent(t *testing.T, before, after []byte) {
	a, _ := refLines(before)
	b, _ := refLines(after)
	if len(a) != len(b) {
		t.Fatalf("event %q became %q: lines added or lost", before, after)
	}
	changed := 0
	for i := range a {
		if bytes.Equal(a[i].raw, b[i].raw) {
			continue
		}
		changed++
		x, y := string(a[i].content), string(b[i].content)
		if !strings.HasPrefix(x, "data:") || !strings.HasPrefix(y, "data:") || len(a[i].raw)-len(x) != len(b[i].raw)-len(y) {
			t.Fatalf("line %q became %q", a[i].raw, b[i].raw)
		}
		value := strings.TrimPrefix(strings.TrimPrefix(x, "data:"), " ")
		newValue := strings.TrimPrefix(strings.TrimPrefix(y, "data:"), " ")
		var old, now map[string]json.RawMessage
		if json.Unmarshal([]byte(value), &old) != nil {
			t.Fatalf("changed line %q was not a JSON object", x)
		}
		if _, ok := old["usage"]; !ok {
			t.Fatalf("changed line %q had no usage member", x)
		}
		if !json.Valid([]byte(newValue)) || json.Unmarshal([]byte(newValue), &now) != nil {
			t.Fatalf("%q became invalid: %q", x, y)
		}
		delete(old, "usage")
		if len(now) != len(old) {
			t.Fatalf("%q became %q: members lost", x, y)
		}
		for k, v := range old {
			if !bytes.Equal(now[k], v) {
				t.Fatalf("%q became %q: member %q changed", x, y, k)
			}
		}
	}
	if changed != 1 {
		t.Fatalf("event %q became %q: %d lines changed", before, after, changed)
	}
}

// FuzzStripUsage checks appendWithoutUsage on any JSON object with a
// top-level usage member: it gives the same bytes as the oracle
// refWithoutUsage, the result is valid JSON with the same members but no
// usage, and each usage member took one comma with it.
//
// The seed corpus lives in testdata/fuzz/FuzzStripUsage.
func FuzzStripUsage(f *testing.F) {
	f.Fuzz(func(t *testing.T, obj []byte) {
		if !validJSON(obj) {
			return
		}
		c, isObj := scanChunk(obj)
		if !isObj || c.usage == nil {
			return
		}
		got := appendWithoutUsage(nil, obj, c.usageKey, c.usagePrev)
		if want := refWithoutUsage(obj); !bytes.Equal(got, want) {
			t.Fatalf("%s: got %s, oracle %s", obj, got, want)
		}
		var old, now map[string]json.RawMessage
		if json.Unmarshal(obj, &old) != nil || json.Unmarshal(got, &now) != nil {
			t.Fatalf("%s became %s: not a valid object", obj, got)
		}
		delete(old, "usage")
		if len(now) != len(old) {
			t.Fatalf("%s became %s: members lost", obj, got)
		}
		for k, v := range old {
			if !bytes.Equal(now[k], v) {
				t.Fatalf("%s became %s: member %q changed", obj, got, k)
			}
		}
		// The members and commas: count them on the top level.
		members := func(b []byte) (n, usage int) {
			it, _ := newObjectIter(b)
			for {
				m, more := it.next()
				if !more {
					return n, usage
				}
				n++
				if keyIs(m.key, "usage") {
					usage++
				}
			}
		}
		n0, u0 := members(obj)
		n1, u1 := members(got)
		if u1 != 0 || n1 != n0-u0 {
			t.Fatalf("%s became %s: %d members (%d usage), want %d", obj, got, n1, u1, n0-u0)
		}
		if len(got) >= len(obj) {
			t.Fatalf("%s became %s: nothing removed", obj, got)
		}
	})
}
