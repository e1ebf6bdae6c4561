package openaiwire

import (
	"errors"
	"strings"
	"testing"
)

func TestParseResponseUsage(t *testing.T) {
	cases := []struct {
		name string
		body string
		want Usage
		ok   bool
	}{
		{"chat", chatResponse, Usage{PromptTokens: 1117, CompletionTokens: 46, TotalTokens: 1163, CachedTokens: 1024, ReasoningTokens: 12}, true},
		{"completions", completionsResponse, Usage{PromptTokens: 5, CompletionTokens: 7, TotalTokens: 12}, true},
		{"embeddings", embeddingsResponse, Usage{PromptTokens: 8, TotalTokens: 8}, true},
		{"responses", responsesResponse, Usage{PromptTokens: 36, CompletionTokens: 87, TotalTokens: 123, CachedTokens: 4, ReasoningTokens: 2}, true},
		{"no total", `{"usage":{"prompt_tokens":3,"completion_tokens":4}}`, Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}, true},
		{"responses no total", `{"usage":{"input_tokens":3,"output_tokens":4}}`, Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}, true},
		{"null details", `{"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":null,"completion_tokens_details":null}}`,
			Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}, true},
		{"deepseek cache", `{"usage":{"prompt_tokens":30,"completion_tokens":4,"total_tokens":34,"prompt_cache_hit_tokens":20,"prompt_cache_miss_tokens":10}}`,
			Usage{PromptTokens: 30, CompletionTokens: 4, TotalTokens: 34, CachedTokens: 20}, true},
		{"float counts", `{"usage":{"prompt_tokens":3.0,"completion_tokens":4e0}}`, Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}, true},
		{"no usage", `{"id":"x","choices":[]}`, Usage{}, false},
		{"null usage", `{"usage":null}`, Usage{}, false},
		{"empty usage", `{"usage":{}}`, Usage{}, false},
		{"nested usage is not top-level", `{"data":{"usage":{"prompt_tokens":1}}}`, Usage{}, false},
		{"array body", `[{"usage":{"prompt_tokens":1}}]`, Usage{}, false},
		{"error body", `{"error":{"message":"Rate limit","type":"requests","param":null,"code":"rate_limit_exceeded"}}`, Usage{}, false},
		{"duplicate usage last wins", `{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}`, Usage{PromptTokens: 2, TotalTokens: 2}, true},
		{"string details ignored when unread", `{"usage":{"prompt_tokens":1,"completion_tokens_details":{"audio_tokens":"x"}}}`, Usage{PromptTokens: 1, TotalTokens: 1}, true},
	}
	for _, tc := range cases {
		got, ok, err := ParseResponseUsage([]byte(tc.body))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: got %+v %v, want %+v %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseResponseUsageErrors(t *testing.T) {
	cases := []struct{ name, body, msg string }{
		{"empty", ``, "response body is empty"},
		{"not json", `<html>502 Bad Gateway</html>`, "not valid JSON"},
		{"truncated", chatResponse[:len(chatResponse)/2], "not valid JSON"},
		{"negative", `{"usage":{"prompt_tokens":-3}}`, "usage.prompt_tokens must not be negative"},
		{"fraction", `{"usage":{"completion_tokens":1.5}}`, "usage.completion_tokens must be an integer"},
		{"string", `{"usage":{"total_tokens":"12"}}`, "usage.total_tokens must be a number"},
		{"huge", `{"usage":{"input_tokens":1e30}}`, "usage.input_tokens is out of range"},
		{"usage array", `{"usage":[1]}`, "usage is not an object"},
		{"bad cached", `{"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":-1}}}`, "usage.prompt_tokens_details.cached_tokens must not be negative"},
		{"details not object", `{"usage":{"input_tokens":3,"input_tokens_details":7}}`, "usage.input_tokens_details is not an object"},
	}
	for _, tc := range cases {
		_, ok, err := ParseResponseUsage([]byte(tc.body))
		if err == nil || ok {
			t.Errorf("%s: ok=%v err=%v", tc.name, ok, err)
			continue
		}
		if !errors.Is(err, ErrInvalidJSON) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %q, want ErrInvalidJSON saying %q", tc.name, err, tc.msg)
		}
	}
}
