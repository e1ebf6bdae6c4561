package openaiwire

import (
	"fmt"
	"strings"
	"testing"
)

// benchChatStream is a 300-chunk chat completion stream with include_usage,
// cut into one Write per event as a provider flushes them.
func benchChatStream() [][]byte {
	var events []string
	events = append(events, "data: "+mkChatChunk(`[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]`, "null")+"\n\n")
	words := []string{"The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".", " Ünïcødé", " \\\"quoted\\\"", "\\n"}
	for i := range 300 {
		events = append(events, "data: "+mkChatChunk(`[{"index":0,"delta":{"content":"`+words[i%len(words)]+`"},"logprobs":null,"finish_reason":null}]`, "null")+"\n\n")
	}
	events = append(events,
		"data: "+mkChatChunk(`[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]`, "null")+"\n\n",
		chatUsageEvent,
		"data: [DONE]\n\n")
	parts := make([][]byte, len(events))
	for i, e := range events {
		parts[i] = []byte(e)
	}
	return parts
}

// benchResponsesStream is a Responses API stream with 300 text deltas.
func benchResponsesStream() [][]byte {
	var parts [][]byte
	ev := func(s string) { parts = append(parts, []byte(s)) }
	ev("event: response.created\n" + `data: {"type":"response.created","sequence_number":0,"response":` + responsesObject("in_progress", "[]", "null") + "}\n\n")
	for i := range 300 {
		ev("event: response.output_text.delta\n" + fmt.Sprintf(`data: {"type":"response.output_text.delta","sequence_number":%d,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"delta":" word","obfuscation":"x1Yz"}`, i+1) + "\n\n")
	}
	ev("event: response.completed\n" + `data: {"type":"response.completed","sequence_number":301,"response":` + responsesObject("completed", "[]", `{"input_tokens":37,"input_tokens_details":{"cached_tokens":0},"output_tokens":300,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":337}`) + "}\n\n")
	return parts
}

// BenchmarkStreamFilter meters whole streams written one event per Write;
// the reported bytes are the stream's size, ns/op is per stream.
func BenchmarkStreamFilter(b *testing.B) {
	for _, bc := range []struct {
		name  string
		parts [][]byte
		drop  bool
	}{
		{"chat", benchChatStream(), false},
		{"chat-drop-usage", benchChatStream(), true},
		{"responses", benchResponsesStream(), false},
		{"chat-64B-writes", fixedPieces([]byte(strings.Join(func() []string {
			var s []string
			for _, p := range benchChatStream() {
				s = append(s, string(p))
			}
			return s
		}(), "")), 64), true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			size := 0
			for _, p := range bc.parts {
				size += len(p)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				f := NewStreamFilter(bc.drop)
				for _, p := range bc.parts {
					f.Write(p)
				}
				f.Flush()
				if _, ok := f.Usage(); !ok || !f.Done() {
					b.Fatal("stream not metered")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(bc.parts)), "ns/write")
		})
	}
}

// benchRequest is a chat request with a 20-turn conversation and tools,
// about 16 KiB.
func benchRequest() []byte {
	var msgs []string
	msgs = append(msgs, `{"role":"system","content":"You are a helpful assistant. Answer briefly and cite sources when you can."}`)
	for i := range 20 {
		msgs = append(msgs,
			fmt.Sprintf(`{"role":"user","content":"Question %d: %s"}`, i, strings.Repeat("Tell me about the history of Unicode (ünïcødé) \u00e9. ", 6)),
			fmt.Sprintf(`{"role":"assistant","content":"Answer %d: %s"}`, i, strings.Repeat("Unicode began in 1987 as a project between Xerox and Apple.\\n", 5)))
	}
	return []byte(`{"model":"gpt-4o-mini","messages":[` + strings.Join(msgs, ",") + `],` +
		`"tools":[{"type":"function","function":{"name":"search","description":"Search the web","parameters":{"type":"object","properties":{"q":{"type":"string"}},"required":["q"]}}}],` +
		`"temperature":0.2,"max_tokens":1024,"stream":true}`)
}

func BenchmarkParseRequest(b *testing.B) {
	body := benchRequest()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRequest(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInjectIncludeUsage(b *testing.B) {
	body := benchRequest()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := InjectIncludeUsage(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseResponseUsage(b *testing.B) {
	body := []byte(chatResponse)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := ParseResponseUsage(body); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// benchLargeBody is a JSON response of about 5 MiB with its usage last:
// an embeddings batch (mostly numbers), or a chat completion with long
// message texts (mostly strings, some escapes).
func benchLargeBody(kind string) []byte {
	var b strings.Builder
	b.WriteString(`{"object":"list","model":"m","data":[`)
	for i := 0; b.Len() < 5<<20; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		if kind == "embeddings" {
			fmt.Fprintf(&b, `{"object":"embedding","index":%d,"embedding":[0.0023064255,-0.009327292,-0.0028842222,0.0154231,1.5e-3,-0.75]}`, i)
		} else {
			fmt.Fprintf(&b, `{"index":%d,"message":{"role":"assistant","content":"%s"}}`, i, strings.Repeat(`The quick brown fox jumps over the lazy dog, \"twice\".\n`, 20))
		}
	}
	b.WriteString(`],"usage":{"prompt_tokens":123,"total_tokens":123}}`)
	return []byte(b.String())
}

// BenchmarkUsageScanner scans 5 MiB bodies written in 32 KiB pieces, as
// the meter does with a body too large to keep; the reported bytes are the
// body's size, ns/op is per body.
func BenchmarkUsageScanner(b *testing.B) {
	for _, kind := range []string{"embeddings", "text"} {
		b.Run(kind, func(b *testing.B) {
			body := benchLargeBody(kind)
			parts := fixedPieces(body, 32<<10)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				var s UsageScanner
				for _, p := range parts {
					_, _ = s.Write(p)
				}
				if u, ok, err := s.Usage(); !ok || err != nil || u.PromptTokens != 123 {
					b.Fatal(u, ok, err)
				}
			}
		})
	}
}
