package openaiwire

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	cases := []struct {
		name string
		body string
		want RequestInfo
	}{
		{"chat", chatRequest, RequestInfo{
			Model: "gpt-4o-mini", Stream: true, IncludeUsage: true, MaxTokens: 256,
			PromptChars: chatRequestChars, EstimatedPromptTokens: 16 + 2*4, Messages: 2,
		}},
		{"chat multimodal with tools", `{
  "model": "gpt-4.1",
  "messages": [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": [
      {"type": "text", "text": "What is in this image?"},
      {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}
    ]}
  ],
  "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Get weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}],
  "max_completion_tokens": 1000
}`, RequestInfo{
			Model: "gpt-4.1", MaxTokens: 1000, Messages: 2,
			// developer(9) Be brief.(9) user(4) text(4) What is in this image?(22)
			// image_url(9) https://example.com/a.png(25) low(3)
			// function(8) get_weather(11) Get weather(11) object(6) string(6) location(8)
			PromptChars:           9 + 9 + 4 + 4 + 22 + 9 + 25 + 3 + 8 + 11 + 11 + 6 + 6 + 8,
			EstimatedPromptTokens: 34 + 8,
		}},
		{"completions", `{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":7,"temperature":0}`, RequestInfo{
			Model: "gpt-3.5-turbo-instruct", MaxTokens: 7, PromptChars: 18, EstimatedPromptTokens: 5,
		}},
		{"embeddings batch", `{"model":"text-embedding-3-small","input":["The food was delicious","and the waiter..."],"encoding_format":"float"}`, RequestInfo{
			Model: "text-embedding-3-small", PromptChars: 22 + 17, Messages: 2, EstimatedPromptTokens: 10 + 8,
		}},
		{"embeddings token ids", `{"model":"text-embedding-3-small","input":[[1212,318,257]]}`, RequestInfo{
			Model: "text-embedding-3-small", Messages: 1, EstimatedPromptTokens: 4 + 3, // one item, three token ids
		}},
		{"responses string input", `{"model":"gpt-4.1","instructions":"Talk like a pirate.","input":"Are semicolons optional in JavaScript?","max_output_tokens":500,"stream":true}`, RequestInfo{
			Model: "gpt-4.1", Stream: true, MaxTokens: 500, PromptChars: 19 + 38, Messages: 1, EstimatedPromptTokens: 15 + 4,
		}},
		{"responses items", `{"model":"o4-mini","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]},{"type":"function_call_output","call_id":"call_1","output":"{\"t\":21}"}],"reasoning":{"effort":"low"}}`, RequestInfo{
			// user(4) input_text(10) hi(2) function_call_output(20) call_1(6) {"t":21}(8)
			Model: "o4-mini", Messages: 2, PromptChars: 4 + 10 + 2 + 20 + 6 + 8, EstimatedPromptTokens: 13 + 8,
		}},
		{"anthropic-style system", `{"model":"m","system":"Sys","messages":[{"role":"user","content":"x"}]}`, RequestInfo{
			Model: "m", PromptChars: 3 + 4 + 1, Messages: 1, EstimatedPromptTokens: 2 + 4,
		}},
		{"escapes and surrogates", `{"model":"m","prompt":"a\n\"b\" \u00e9 \ud83d\ude00 \ud800 \\"}`, RequestInfo{
			// a \n " b " space é space 😀 space U+FFFD space \
			Model: "m", PromptChars: 13, EstimatedPromptTokens: 4,
		}},
		{"keys are not counted", `{"prompt":{"a very long key name":"ab"}}`, RequestInfo{PromptChars: 2, EstimatedPromptTokens: 1}},
		{"other fields ignored", `{"model":"m","user":"long user id here","metadata":{"x":"yyyy"},"response_format":{"type":"json_object"}}`, RequestInfo{Model: "m"}},
		{"nulls", `{"model":null,"stream":null,"stream_options":null,"max_tokens":null,"max_completion_tokens":9}`, RequestInfo{MaxTokens: 9}},
		{"largest limit wins", `{"max_tokens":5,"max_completion_tokens":11,"max_output_tokens":9}`, RequestInfo{MaxTokens: 11}},
		{"largest limit wins, any order", `{"max_tokens":100000,"max_completion_tokens":1}`, RequestInfo{MaxTokens: 100000}},
		{"zero max_tokens", `{"max_tokens":0}`, RequestInfo{}},
		{"float max tokens", `{"max_tokens":1.5e3}`, RequestInfo{MaxTokens: 1500}},
		{"include_usage false", `{"stream":true,"stream_options":{"include_usage":false}}`, RequestInfo{Stream: true}},
		{"n", `{"n":3,"max_tokens":10}`, RequestInfo{MaxTokens: 10, Completions: 3}},
		{"best_of larger than n", `{"n":2,"best_of":5}`, RequestInfo{Completions: 5}},
		{"n zero or null", `{"n":0,"best_of":null}`, RequestInfo{Completions: 1}},
		{"prompt list times n", `{"prompt":["ab","cd","ef"],"n":2}`, RequestInfo{PromptChars: 6, EstimatedPromptTokens: 2, Completions: 6}},
		{"prompt token lists", `{"prompt":[[1,2,3],[4,5]]}`, RequestInfo{EstimatedPromptTokens: 5, Completions: 2}},
		{"prompt token ids", `{"prompt":[1,2,3,4]}`, RequestInfo{EstimatedPromptTokens: 4, Completions: 1}},
		{"empty prompt list", `{"prompt":[]}`, RequestInfo{Completions: 1}},
		{"input token ids", `{"input":[[1,2],[3]]}`, RequestInfo{Messages: 2, EstimatedPromptTokens: 2*MessageOverheadTokens + 3, Completions: 1}},
		{"huge n saturates", `{"n":9223372036854775807,"prompt":["a","b"]}`, RequestInfo{PromptChars: 2, EstimatedPromptTokens: 1, Completions: 9223372036854775807}},
		{"escaped key", `{"\u006dodel":"x"}`, RequestInfo{Model: "x"}},
		{"whitespace around", " \n\t{\"model\":\"x\"}\r\n ", RequestInfo{Model: "x"}},
		{"empty object", `{}`, RequestInfo{}},
		{"deep nesting", `{"messages":` + strings.Repeat("[", 500) + `"abcd"` + strings.Repeat("]", 500) + `}`, RequestInfo{PromptChars: 4, Messages: 1, EstimatedPromptTokens: 5}},
	}
	for _, tc := range cases {
		got, err := ParseRequest([]byte(tc.body))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if tc.want.Completions == 0 {
			tc.want.Completions = 1
		}
		if got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}

func TestParseRequestErrors(t *testing.T) {
	cases := []struct {
		name, body, msg string
	}{
		{"empty", ``, "request body is empty"},
		{"only space", " \n ", "request body is empty"},
		{"array", `[]`, "not a JSON object"},
		{"string", `"x"`, "not a JSON object"},
		{"null", `null`, "not a JSON object"},
		{"not json", `model=gpt-4`, "not valid JSON"},
		{"truncated", `{"model":"x"`, "not valid JSON"},
		{"trailing garbage", `{"model":"x"} x`, "not valid JSON"},
		{"two objects", `{"model":"x"}{"model":"y"}`, "not valid JSON"},
		{"model number", `{"model":5}`, "model must be a string"},
		{"model object", `{"model":{"name":"x"}}`, "model must be a string"},
		{"stream string", `{"stream":"true"}`, "stream must be a boolean"},
		{"stream_options array", `{"stream_options":[]}`, "stream_options must be an object"},
		{"include_usage string", `{"stream_options":{"include_usage":"yes"}}`, "stream_options.include_usage must be a boolean"},
		{"negative max_tokens", `{"max_tokens":-1}`, "max_tokens must not be negative"},
		{"fractional max_tokens", `{"max_tokens":1.5}`, "max_tokens must be an integer"},
		{"huge max_tokens", `{"max_tokens":99999999999999999999}`, "max_tokens is out of range"},
		{"huge float max_tokens", `{"max_completion_tokens":1e400}`, "max_completion_tokens is out of range"},
		{"negative huge", `{"max_output_tokens":-1e400}`, "max_output_tokens must not be negative"},
		{"max_tokens string", `{"max_tokens":"100"}`, "max_tokens must be a number"},
		{"later limit invalid", `{"max_tokens":5,"max_output_tokens":-5}`, "max_output_tokens must not be negative"},
		{"invalid utf8 outside strings", "{\"model\":\"x\"}\xff", "not valid JSON"},
		{"duplicate model", `{"model":"gpt-4o","model":"cheap"}`, `member "model" appears more than once`},
		{"duplicate escaped key", `{"model":"a","\u006dodel":"b"}`, `member "model" appears more than once`},
		{"duplicate stream", `{"stream":false,"stream":true}`, `member "stream" appears more than once`},
		{"duplicate max_tokens", `{"max_tokens":1,"max_tokens":2}`, `member "max_tokens" appears more than once`},
		{"duplicate n", `{"n":1,"n":20}`, `member "n" appears more than once`},
		{"duplicate messages", `{"messages":[],"messages":[]}`, `member "messages" appears more than once`},
		{"duplicate include_usage", `{"stream_options":{"include_usage":false,"include_usage":true}}`, `"stream_options.include_usage" appears more than once`},
		{"negative n", `{"n":-1}`, "n must not be negative"},
		{"n string", `{"n":"2"}`, "n must be a number"},
		{"fractional best_of", `{"best_of":1.5}`, "best_of must be an integer"},
	}
	for _, tc := range cases {
		_, err := ParseRequest([]byte(tc.body))
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if !errors.Is(err, ErrInvalidJSON) {
			t.Errorf("%s: %v does not wrap ErrInvalidJSON", tc.name, err)
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %q does not say %q", tc.name, err, tc.msg)
		}
	}
}

// TestParseRequestHugeNumbers checks that numbers nobody reads may be any
// size, and that big valid limits are kept exactly.
func TestParseRequestHugeNumbers(t *testing.T) {
	got, err := ParseRequest([]byte(`{"temperature":1e400,"seed":123456789012345678901234567890,"max_tokens":9223372036854775807}`))
	if err != nil {
		t.Fatal(err)
	}
	if got.MaxTokens != 9223372036854775807 {
		t.Fatalf("MaxTokens = %d", got.MaxTokens)
	}
	if _, err := ParseRequest([]byte(`{"max_tokens":9223372036854775808}`)); err == nil {
		t.Fatal("max_tokens of 2^63 accepted")
	}
}

func TestEstimateTokens(t *testing.T) {
	for _, tc := range []struct{ chars, want int64 }{
		{-5, 0}, {0, 0}, {1, 1}, {3, 1}, {4, 1}, {5, 2}, {8, 2}, {9, 3},
		{9223372036854775807, 2305843009213693952},
	} {
		if got := EstimateTokens(tc.chars); got != tc.want {
			t.Errorf("EstimateTokens(%d) = %d, want %d", tc.chars, got, tc.want)
		}
	}
}
