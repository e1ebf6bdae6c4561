package caddyproxy

import (
	"net/http"
	"net/url"
	"testing"
)

func TestEndpointOf(t *testing.T) {
	cases := []struct {
		method, path string
		want         endpoint
	}{
		{"POST", "/v1/chat/completions", epChat},
		{"POST", "/v1/chat/completions/", epChat},
		{"POST", "/v1/Chat/Completions", epChat},
		{"POST", "/V1/CHAT/COMPLETIONS//", epChat},
		{"POST", "/v1/chat/completions;x", epChat},
		{"POST", "/v1/chat/completions;a=b/", epChat},
		{"POST", "/openai/deployments/gpt/chat/completions", epChat},
		{"POST", "/v1/completions", epCompletions},
		{"POST", "/v1/Completions;v=1", epCompletions},
		{"POST", "/v1/embeddings", epEmbeddings},
		{"POST", "/v1/EMBEDDINGS", epEmbeddings},
		{"POST", "/v1/responses", epResponses},
		{"POST", "/v1/Responses/", epResponses},
		{"POST", "/v1/chat/completions/.", epChat},
		{"POST", "/v1/chat/completions/./", epChat},
		{"POST", "/v1/chat/x/../completions", epChat},
		{"POST", "/v1/./chat/completions", epChat},
		{"POST", "/v1/chat/completions ", epChat},
		{"POST", "/v1/chat/completions\x00", epChat},
		{"POST", "/v1/chat/completions.", epChat},
		{"POST", "/v1/embeddings;x/ ", epEmbeddings},
		{"post", "/v1/chat/completions", epChat},
		{"Post", "/v1/responses", epResponses},
		{"GET", "/v1/chat/completions", epNone},
		{"POST", "/v1/chat/completions/..", epNone}, // that is /v1/chat
		{"POST", "/v1/chat/completions.json", epNone},
		{"POST", "/v1/chat/completions/chatcmpl-1", epNone},
		{"POST", "/v1/responses/input_tokens", epNone},
		{"POST", "/v1/embeddings-v2", epNone},
		{"POST", "/v1/images/generations", epNone},
		{"POST", "/v1/chat/completions/x", epNone},
		{"POST", "/v1/responses/resp_1/cancel", epNone},
		{"POST", "/", epNone},
		{"POST", "", epNone},
	}
	for _, tc := range cases {
		r := &http.Request{Method: tc.method, URL: &url.URL{Path: tc.path}}
		if got := endpointOf(r); got != tc.want {
			t.Errorf("%s %q: endpoint %d, want %d", tc.method, tc.path, got, tc.want)
		}
	}
}
