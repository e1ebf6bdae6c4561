package openaiwire

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// streamRun is the result of feeding a stream through a filter.
type streamRun struct {
	out   []byte
	meter refMeter
}

// feed writes parts to a new filter (with the given line limit, 0 for the
// default) and flushes it. check, if not nil, runs after every Write with
// the number of input bytes written so far and the output so far.
func feed(t testing.TB, drop bool, limit int, parts [][]byte, check func(f *StreamFilter, written int, out []byte)) streamRun {
	t.Helper()
	f := NewStreamFilter(drop)
	if limit > 0 {
		f.maxLine = limit
	}
	var out []byte
	written := 0
	for _, p := range parts {
		out = append(out, f.Write(p)...)
		written += len(p)
		if check != nil {
			check(f, written, out)
		}
	}
	out = append(out, f.Flush()...)
	u, ok := f.Usage()
	return streamRun{out: out, meter: refMeter{usage: u, hasUsage: ok, model: f.Model(), chars: f.StreamedChars(), done: f.Done()}}
}

// chatChunkNoUsage is mkChatChunk without the usage member.
func chatChunkNoUsage(choices string) string {
	return strings.TrimSuffix(mkChatChunk(choices, "null"), `,"usage":null}`) + "}"
}

// stripNulls is what dropUsageChunk does to the fixtures' chunks that end
// in usage null.
func stripNulls(s string) string { return strings.ReplaceAll(s, `,"usage":null}`, "}") }

// whole is a stream given in one piece.
func whole(s string) [][]byte { return [][]byte{[]byte(s)} }

// splitAt cuts s into pieces at the given offsets (ascending).
func splitAt(s []byte, cuts ...int) [][]byte {
	var parts [][]byte
	prev := 0
	for _, c := range cuts {
		parts = append(parts, s[prev:c])
		prev = c
	}
	return append(parts, s[prev:])
}

// randomParts cuts s into pieces of random sizes in [1, max].
func randomParts(r *rand.Rand, s []byte, max int) [][]byte {
	var parts [][]byte
	for len(s) > 0 {
		n := 1 + r.IntN(max)
		if n > len(s) {
			n = len(s)
		}
		parts = append(parts, s[:n])
		s = s[n:]
	}
	return parts
}

// noHeldEvents checks that, after any Write, every complete event of the
// input so far has been passed on (or dropped): the output so far starts
// with what the oracle outputs for those events.
func noHeldEvents(t testing.TB, in []byte, drop bool, limit int) func(*StreamFilter, int, []byte) {
	out, _, events := refRun(in, drop, limit)
	return func(f *StreamFilter, written int, got []byte) {
		t.Helper()
		want := out[:0]
		for _, e := range events {
			if e.term >= written {
				break
			}
			want = out[:e.outEnd]
			if e.end > written && e.kept {
				// Written up to the CR of a CRLF: the LF is still to come.
				want = out[:e.outEnd-(e.end-written)]
			}
		}
		if !bytes.HasPrefix(got, want) {
			t.Fatalf("after %d bytes: output %q does not start with the complete events %q", written, got, want)
		}
	}
}

const multiLineUsageNull = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\ndata: \"usage\":null}\n\n"

var streamCases = []struct {
	name      string
	in        string
	usage     Usage
	hasUsage  bool
	model     string
	chars     int64
	done      bool
	dropped   string // the event dropUsageChunk removes
	dropCount int
	// What dropUsageChunk makes of the stream, when it is not the stream
	// without the dropped event and with every `,"usage":null}` (the end of
	// a chunk that has usage null) turned into `}`.
	wantDrop string
}{
	{"chat", chatStream, chatStreamUsage, true, "gpt-4o-2024-08-06", chatStreamChars, true, chatUsageEvent, 1, ""},
	{"chat crlf", crlf(chatStream), chatStreamUsage, true, "gpt-4o-2024-08-06", chatStreamChars, true, crlf(chatUsageEvent), 1, ""},
	{"chat cr", crOnly(chatStream), chatStreamUsage, true, "gpt-4o-2024-08-06", chatStreamChars, true, crOnly(chatUsageEvent), 1, ""},
	{"chat no usage", chatStreamBody + "data: [DONE]\n\n", Usage{}, false, "gpt-4o-2024-08-06", chatStreamChars, true, "", 0, ""},
	{"tool calls", toolCallStream,
		Usage{PromptTokens: 80, CompletionTokens: 17, TotalTokens: 97, CachedTokens: 64, ReasoningTokens: 5}, true,
		"gpt-4o-2024-08-06", toolCallStreamChars, true,
		"data: " + mkChatChunk(`[]`, `{"prompt_tokens":80,"completion_tokens":17,"total_tokens":97,"prompt_tokens_details":{"cached_tokens":64},"completion_tokens_details":{"reasoning_tokens":5}}`) + "\n\n", 1, ""},
	{"completions", completionsStream, Usage{PromptTokens: 5, CompletionTokens: 4, TotalTokens: 9}, true, "gpt-3.5-turbo-instruct", 14, true,
		`data: {"id":"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe","object":"text_completion","created":1690759702,"choices":[],"model":"gpt-3.5-turbo-instruct","usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}` + "\n\n", 1, ""},
	{"responses", responsesStream, responsesStreamUsage, true, "gpt-4.1-2025-04-14", responsesStreamChars, true, "", 0, ""},
	{"responses crlf", crlf(responsesStream), responsesStreamUsage, true, "gpt-4.1-2025-04-14", responsesStreamChars, true, "", 0, ""},
	{"comments and fields", ": ping\n\nretry: 3000\n\nid: 7\nevent: message\n: keep-alive\n" + chatUsageEvent + ": ping\n\n" + "data: [DONE]\n\n",
		chatStreamUsage, true, "gpt-4o-2024-08-06", 0, true, "id: 7\nevent: message\n: keep-alive\n" + chatUsageEvent, 1, ""},
	{"multi-line data", "data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
		Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}, true, "", 0, true,
		"data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n", 1, ""},
	{"cut mid-event", chatStreamBody + chatUsageEvent[:40], Usage{}, false, "gpt-4o-2024-08-06", chatStreamChars, false, "", 0, ""},
	{"cut after usage data line", chatStreamBody + strings.TrimSuffix(chatUsageEvent, "\n"), chatStreamUsage, true, "gpt-4o-2024-08-06", chatStreamChars, false, "", 0, ""},
	{"no space after colon", "data:" + mkChatChunk(`[]`, chatUsage) + "\n\ndata:[DONE]\n\n", chatStreamUsage, true, "gpt-4o-2024-08-06", 0, true,
		"data:" + mkChatChunk(`[]`, chatUsage) + "\n\n", 1, ""},
	{"bom", "\uFEFF" + chatStream, chatStreamUsage, true, "gpt-4o-2024-08-06", chatStreamChars, true, chatUsageEvent, 1, ""},
	{"extra blank lines", "\n\n" + strings.ReplaceAll(chatStream, "\n\n", "\n\n\n"), chatStreamUsage, true, "gpt-4o-2024-08-06", chatStreamChars, true, chatUsageEvent, 1, ""},
	{"cumulative usage", "data: " + mkChatChunk(`[{"index":0,"delta":{"content":"ab"}}]`, `{"prompt_tokens":4,"completion_tokens":1,"total_tokens":5}`) + "\n\n" +
		"data: " + mkChatChunk(`[{"index":0,"delta":{"content":"cd"}}]`, `{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}`) + "\n\n",
		Usage{PromptTokens: 4, CompletionTokens: 2, TotalTokens: 6}, true, "gpt-4o-2024-08-06", 4, false, "", 0,
		"data: " + chatChunkNoUsage(`[{"index":0,"delta":{"content":"ab"}}]`) + "\n\n" +
			"data: " + chatChunkNoUsage(`[{"index":0,"delta":{"content":"cd"}}]`) + "\n\n"},
	{"usage in the last content chunk", "id: 3\r\nevent: chunk\r\ndata:" + mkChatChunk(`[{"index":0,"delta":{},"finish_reason":"stop"}]`, chatUsage) + "\r\n\r\ndata: [DONE]\r\n\r\n",
		chatStreamUsage, true, "gpt-4o-2024-08-06", 0, true, "", 0,
		"id: 3\r\nevent: chunk\r\ndata:" + chatChunkNoUsage(`[{"index":0,"delta":{},"finish_reason":"stop"}]`) + "\r\n\r\ndata: [DONE]\r\n\r\n"},
	// An object spread over data lines keeps its usage member.
	{"multi-line chunk with usage null", multiLineUsageNull, Usage{}, false, "", 2, false, "", 0, multiLineUsageNull},
	{"not json", "data: {not json\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}} trailing\n\n", Usage{}, false, "", 0, false, "", 0, ""},
}

func TestStreamFilter(t *testing.T) {
	for _, tc := range streamCases {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			for _, drop := range []bool{false, true} {
				got := feed(t, drop, 0, whole(tc.in), nil)
				want := tc.in
				if drop {
					if n := strings.Count(tc.in, tc.dropped); tc.dropped != "" && n != 1 {
						t.Fatalf("test bug: dropped event occurs %d times", n)
					}
					want = stripNulls(strings.Replace(tc.in, tc.dropped, "", tc.dropCount))
					if tc.wantDrop != "" {
						want = tc.wantDrop
					}
				}
				if string(got.out) != want {
					t.Errorf("drop=%v: output\n%q\nwant\n%q", drop, got.out, want)
				}
				m := got.meter
				if m.usage != tc.usage || m.hasUsage != tc.hasUsage {
					t.Errorf("drop=%v: usage %+v %v, want %+v %v", drop, m.usage, m.hasUsage, tc.usage, tc.hasUsage)
				}
				if m.model != tc.model || m.chars != tc.chars || m.done != tc.done {
					t.Errorf("drop=%v: model %q chars %d done %v, want %q %d %v", drop, m.model, m.chars, m.done, tc.model, tc.chars, tc.done)
				}
				refOut, refM := refResult(in, drop, MaxLineBytes)
				if !bytes.Equal(refOut, got.out) || refM != m {
					t.Errorf("drop=%v: oracle disagrees: %q %+v", drop, refOut, refM)
				}
			}
		})
	}
}

// TestStreamFilterEverySplit cuts every stream at every byte boundary (and
// in two places for the shorter streams) and checks the output and meter
// readings never change and complete events are never held back.
func TestStreamFilterEverySplit(t *testing.T) {
	for _, tc := range streamCases {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			for _, drop := range []bool{false, true} {
				want := feed(t, drop, 0, whole(tc.in), nil)
				check := noHeldEvents(t, in, drop, MaxLineBytes)
				for k := 0; k <= len(in); k++ {
					got := feed(t, drop, 0, splitAt(in, k), check)
					if !bytes.Equal(got.out, want.out) || got.meter != want.meter {
						t.Fatalf("drop=%v split at %d: got %q %+v, want %q %+v", drop, k, got.out, got.meter, want.out, want.meter)
					}
				}
				if len(in) > 400 {
					continue
				}
				for a := 0; a <= len(in); a++ {
					for b := a; b <= len(in); b++ {
						got := feed(t, drop, 0, splitAt(in, a, b), nil)
						if !bytes.Equal(got.out, want.out) || got.meter != want.meter {
							t.Fatalf("drop=%v split at %d,%d: got %q, want %q", drop, a, b, got.out, want.out)
						}
					}
				}
			}
		})
	}
}

func TestStreamFilterRandomChunks(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range streamCases {
		in := []byte(tc.in)
		for _, drop := range []bool{false, true} {
			want := feed(t, drop, 0, whole(tc.in), nil)
			check := noHeldEvents(t, in, drop, MaxLineBytes)
			for n := range 200 {
				parts := randomParts(r, in, 1+r.IntN(64))
				c := check
				if n >= 10 {
					c = nil // the per-Write check is slow; do it on a few runs
				}
				got := feed(t, drop, 0, parts, c)
				if !bytes.Equal(got.out, want.out) || got.meter != want.meter {
					t.Fatalf("%s drop=%v: random chunks give %q %+v, want %q %+v", tc.name, drop, got.out, got.meter, want.out, want.meter)
				}
			}
			// One byte at a time, with a small line limit too.
			for _, limit := range []int{0, 64, 300} {
				parts := randomParts(r, in, 1)
				got := feed(t, drop, limit, parts, nil)
				refLimit := limit
				if refLimit == 0 {
					refLimit = MaxLineBytes
				}
				refOut, refM := refResult(in, drop, refLimit)
				if !bytes.Equal(got.out, refOut) || got.meter != refM {
					t.Fatalf("%s drop=%v limit=%d: bytewise %q %+v, oracle %q %+v", tc.name, drop, limit, got.out, got.meter, refOut, refM)
				}
			}
		}
	}
}

// TestStreamFilterPassThrough checks that without dropping, Write returns
// its input slice itself, and that with dropping a stream written one event
// per Write comes out one event per Write.
func TestStreamFilterPassThrough(t *testing.T) {
	events := strings.SplitAfter(chatStream, "\n\n")
	f := NewStreamFilter(false)
	for _, e := range events {
		p := []byte(e)
		if out := f.Write(p); len(p) > 0 && (len(out) != len(p) || &out[0] != &p[0]) {
			t.Fatalf("Write did not return its input for %q", e)
		}
	}
	g := NewStreamFilter(true)
	for _, e := range events {
		out := g.Write([]byte(e))
		want := stripNulls(e)
		if e == chatUsageEvent {
			want = ""
		}
		if string(out) != want {
			t.Fatalf("drop: Write(%q) = %q", e, out)
		}
	}
	if out := g.Flush(); len(out) != 0 {
		t.Fatalf("Flush returned %q", out)
	}
}

// TestStreamFilterHoldsOnlyCandidates checks what is kept back with
// dropping on: a usage chunk line waits for its blank line, and nothing
// else does.
func TestStreamFilterHoldsOnlyCandidates(t *testing.T) {
	f := NewStreamFilter(true)
	usageLine := strings.TrimSuffix(chatUsageEvent, "\n")
	if out := f.Write([]byte(usageLine)); len(out) != 0 {
		t.Fatalf("usage line passed before its event ended: %q", out)
	}
	if out := f.Write([]byte("\n")); len(out) != 0 {
		t.Fatalf("usage event not dropped: %q", out)
	}
	chunkLine := "data: " + mkChatChunk(`[{"index":0,"delta":{"content":"x"}}]`, "null") + "\n"
	if out := f.Write([]byte(chunkLine)); string(out) != stripNulls(chunkLine) {
		t.Fatalf("content chunk line held back: %q", out)
	}
	if out := f.Write([]byte("\ndata: [DO")); string(out) != "\n" {
		t.Fatalf("got %q", out)
	}
	if out := f.Write([]byte("NE]\n")); string(out) != "data: [DONE]\n" {
		t.Fatalf("[DONE] line held back: %q", out)
	}
	if f.Done() {
		t.Fatal("done before the [DONE] event ended")
	}
	if out := f.Write([]byte("\n")); string(out) != "\n" {
		t.Fatalf("got %q", out)
	}
	if u, ok := f.Usage(); !ok || u != chatStreamUsage {
		t.Fatalf("usage of the dropped chunk not recorded: %+v %v", u, ok)
	}
	if !f.Done() || f.StreamedChars() != 1 {
		t.Fatalf("done %v chars %d", f.Done(), f.StreamedChars())
	}
}

// TestStreamFilterCRLFSplit drops a CRLF usage event whose final CR and LF
// arrive in different Writes.
func TestStreamFilterCRLFSplit(t *testing.T) {
	ev := crlf(chatUsageEvent)
	f := NewStreamFilter(true)
	var out []byte
	out = append(out, f.Write([]byte(ev[:len(ev)-1]))...)
	out = append(out, f.Write([]byte("\ndata: [DONE]\r\n\r\n"))...)
	out = append(out, f.Flush()...)
	if string(out) != "data: [DONE]\r\n\r\n" {
		t.Fatalf("got %q", out)
	}
}

// TestStreamFilterLongLine feeds lines longer than MaxLineBytes: they pass
// through unchanged, buffers stay bounded, their characters count as
// streamed text, and later events are metered.
func TestStreamFilterLongLine(t *testing.T) {
	long := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1},\"pad\":\"" + strings.Repeat("x", 3*MaxLineBytes) + "\"}\n\n"
	in := []byte(long + chatStream)
	for _, drop := range []bool{false, true} {
		check := func(f *StreamFilter, _ int, _ []byte) {
			if len(f.line) > MaxLineBytes || len(f.data) > MaxLineBytes || len(f.held) > 4*MaxLineBytes+2 || cap(f.line) > 2*MaxLineBytes+64<<10 {
				t.Fatalf("buffers grew: line %d data %d held %d", len(f.line), len(f.data), len(f.held))
			}
		}
		got := feed(t, drop, 0, randomParts(rand.New(rand.NewPCG(3, 4)), in, 64<<10), check)
		want := string(in)
		if drop {
			want = stripNulls(strings.Replace(want, chatUsageEvent, "", 1))
		}
		if string(got.out) != want {
			t.Fatalf("drop=%v: output differs (len %d, want %d)", drop, len(got.out), len(want))
		}
		overlong := int64(len(long) - len("\n\n")) // ASCII: one character a byte
		if got.meter.usage != chatStreamUsage || got.meter.chars != chatStreamChars+overlong || !got.meter.done {
			t.Fatalf("drop=%v: meter %+v", drop, got.meter)
		}
	}
}

// TestStreamFilterManyDataLines checks an event of many short data lines
// is handled in linear time and is not held beyond its end.
func TestStreamFilterManyDataLines(t *testing.T) {
	var b strings.Builder
	b.WriteString("data: {\"choices\":[]\n")
	for range 60000 {
		b.WriteString("data: ,\"k\":{}\n") // each line could end the object
	}
	b.WriteString("data: ,\"usage\":{\"prompt_tokens\":3}}\n\n")
	in := []byte(b.String())
	got := feed(t, true, 0, whole(b.String()), nil)
	if len(got.out) != 0 || got.meter.usage.PromptTokens != 3 {
		t.Fatalf("out %d bytes, meter %+v", len(got.out), got.meter)
	}
	got = feed(t, true, 0, randomParts(rand.New(rand.NewPCG(5, 6)), in, 4096), nil)
	if len(got.out) != 0 || got.meter.usage.PromptTokens != 3 {
		t.Fatalf("out %d bytes, meter %+v", len(got.out), got.meter)
	}
}

func TestStreamFilterFlushReuse(t *testing.T) {
	f := NewStreamFilter(true)
	out := append([]byte(nil), f.Write([]byte(chatUsageEvent[:30]))...)
	out = append(out, f.Flush()...)
	if string(out) != chatUsageEvent[:30] {
		t.Fatalf("incomplete event not passed on: %q", out)
	}
	out = append(out[:0], f.Write([]byte(chatUsageEvent))...)
	if len(out) != 0 {
		t.Fatalf("after Flush the filter does not drop: %q", out)
	}
}

func TestParseChunkUsage(t *testing.T) {
	cases := []struct {
		name string
		data string
		want Usage
		ok   bool
	}{
		{"chat usage chunk", mkChatChunk(`[]`, chatUsage), chatStreamUsage, true},
		{"chat normal chunk", mkChatChunk(`[{"index":0,"delta":{"content":"x"}}]`, `null`), Usage{}, false},
		{"no usage member", `{"id":"x","choices":[]}`, Usage{}, false},
		{"responses completed", `{"type":"response.completed","response":` + responsesObject("completed", "[]", `{"input_tokens":37,"input_tokens_details":{"cached_tokens":5},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":3},"total_tokens":48}`) + `}`,
			Usage{PromptTokens: 37, CompletionTokens: 11, TotalTokens: 48, CachedTokens: 5, ReasoningTokens: 3}, true},
		{"responses incomplete", `{"type":"response.incomplete","response":{"usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3}}}`, Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}, true},
		{"responses failed null usage", `{"type":"response.failed","response":{"usage":null}}`, Usage{}, false},
		{"responses created", `{"type":"response.created","response":` + responsesObject("in_progress", "[]", "null") + `}`, Usage{}, false},
		{"responses delta", `{"type":"response.output_text.delta","delta":"x"}`, Usage{}, false},
		{"negative", `{"choices":[],"usage":{"prompt_tokens":-1}}`, Usage{}, false},
		{"done", `[DONE]`, Usage{}, false},
		{"garbage", `{"usage":`, Usage{}, false},
		{"array", `[{"usage":{"prompt_tokens":1}}]`, Usage{}, false},
	}
	for _, tc := range cases {
		got, ok := ParseChunkUsage([]byte(tc.data))
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: got %+v %v, want %+v %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestStreamFilterZeroValue(t *testing.T) {
	var f StreamFilter
	out := append([]byte(nil), f.Write([]byte(chatStream))...)
	out = append(out, f.Flush()...)
	if string(out) != chatStream {
		t.Fatal("zero StreamFilter changed the stream")
	}
	if u, ok := f.Usage(); !ok || u != chatStreamUsage || f.StreamedChars() != chatStreamChars || !f.Done() {
		t.Fatalf("zero StreamFilter metered %+v %v %d %v", u, ok, f.StreamedChars(), f.Done())
	}
}

// TestStreamFilterLinearTime feeds large single Writes of CR-only and mixed
// line endings, which a naive search for LF would make quadratic.
func TestStreamFilterLinearTime(t *testing.T) {
	for _, sep := range []string{"\r", "\n", "\r\n", "\r\r\n"} {
		in := []byte(strings.Repeat("data: "+mkChatChunk(`[{"index":0,"delta":{"content":"ab"}}]`, "null")+sep+sep, 20000))
		for _, drop := range []bool{false, true} {
			got := feed(t, drop, 0, whole(string(in)), nil)
			want := in
			if drop {
				want = []byte(stripNulls(string(in)))
			}
			if !bytes.Equal(got.out, want) || got.meter.chars != 40000 {
				t.Fatalf("sep %q drop %v: output as expected %v, chars %d", sep, drop, bytes.Equal(got.out, want), got.meter.chars)
			}
		}
	}
}
