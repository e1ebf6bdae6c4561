package openaiwire

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestValidJSON(t *testing.T) {
	docs := []string{
		``, ` `, `{}`, `[]`, `""`, `0`, `-0`, `01`, `-`, `1.`, `.5`, `1.5e`, `1e+5`, `1E-05`, `-0.0e0`, `2.`, `1e400`,
		`true`, `tru`, `truee`, `false`, `null`, `nul`, `{"a":1,}`, `[1,]`, `[,1]`, `{"a" 1}`, `{"a":}`, `{a:1}`,
		`{"a":1}x`, `{"a":1} `, "\t{\"a\":[1,2,{\"b\":null}]}\r\n", `"\u00e9\ud83d\ude00"`, `"\u00zz"`, `"\x"`, `"\/"`,
		"\"a\x01b\"", "\"a\x7fb\"", "\"\xff\xfe\"", `"unterminated`, `"\"`, `[1 2]`, `{"a":1 "b":2}`, `{} {}`,
		chatResponse, responsesResponse, chatRequest,
	}
	for _, depth := range []int{9999, 10000, 10001} {
		docs = append(docs, strings.Repeat("[", depth)+strings.Repeat("]", depth))
		docs = append(docs, strings.Repeat(`{"a":`, depth)+"1"+strings.Repeat("}", depth))
	}
	for _, d := range docs {
		if got, want := validJSON([]byte(d)), json.Valid([]byte(d)); got != want {
			t.Errorf("validJSON(%.60q) = %v, json.Valid says %v", d, got, want)
		}
	}
}

func BenchmarkValidJSON(b *testing.B) {
	doc := []byte(mkChatChunk(`[{"index":0,"delta":{"content":"Hello there"},"logprobs":null,"finish_reason":null}]`, "null"))
	b.Run("validJSON", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			validJSON(doc)
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			json.Valid(doc)
		}
	})
}
