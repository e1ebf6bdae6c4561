package caddyproxy

import (
	"net/http"
	"net/url"
	"testing"
)

// TestRouteOf: the endpoint policy on the request as net/http parsed it.
// Only canonical spellings of known endpoints go on; every other spelling,
// which a lenient provider might route to a metered endpoint or another
// one, is refused (before, many of these were metered as chat, and the
// others forwarded for free).
func TestRouteOf(t *testing.T) {
	g := &BalanceGuard{ModelsEndpoint: modelsFromGateway, Endpoints: []Endpoint{
		{Method: "POST", Path: "/v1/images/generations", Price: "0.04"},
		{Method: "GET", Path: "/v1/files", Free: true},
	}}
	if err := g.provisionEndpoints(); err != nil {
		t.Fatal(err)
	}
	type want struct {
		kind routeKind
		ep   endpoint
	}
	refused := want{routeRefused, 0}
	cases := []struct {
		method, target string
		want           want
	}{
		{"POST", "/v1/chat/completions", want{routeMetered, epChat}},
		{"POST", "/v1/completions", want{routeMetered, epCompletions}},
		{"POST", "/v1/embeddings", want{routeMetered, epEmbeddings}},
		{"POST", "/v1/responses", want{routeMetered, epResponses}},
		{"POST", "/v1/chat/completions?x=1", want{routeMetered, epChat}},
		{"POST", "/team/v1/chat/completions", want{routeMetered, epChat}}, // under another prefix
		{"POST", "/v1/moderations", want{routeFree, 0}},
		{"GET", "/v1/models", want{routeCatalog, 0}},
		{"HEAD", "/v1/models", want{routeCatalog, 0}},
		{"GET", "/v1/models/meta-llama/Llama-3.1-8B", want{routeCatalog, 0}},
		{"POST", "/v1/images/generations", want{routePriced, 0}},
		{"GET", "/v1/files", want{routeFree, 0}},

		{"GET", "/v1/chat/completions", refused},
		{"PUT", "/v1/chat/completions", refused},
		{"DELETE", "/v1/responses", refused},
		{"post", "/v1/chat/completions", refused},
		{"POST", "/v1/models", refused},
		{"GET", "/v1/models/", refused},
		{"GET", "/v1/images/generations", refused},
		{"POST", "/v1/files", refused},
		{"POST", "/v1/chat/completions/", refused},
		{"POST", "/v1/Chat/Completions", refused},
		{"POST", "/V1/chat/completions", refused},
		{"POST", "/v1/chat/completions;x", refused},
		{"POST", "/v1/chat/completions.json", refused},
		{"POST", "/v1/chat/completionsX", refused},
		{"POST", "/v1/chat/completions/x", refused},
		{"POST", "/v1/chat/completions/.", refused},
		{"POST", "/v1/chat/completions/..", refused},
		{"POST", "/v1/chat/x/../completions", refused},
		{"POST", "/v1/./chat/completions", refused},
		{"POST", "/v1//chat/completions", refused},
		{"POST", "//v1/chat/completions", refused},
		{"POST", "/v1/chat%2Fcompletions", refused},
		{"POST", "/v1/chat/completions%3F", refused},
		{"POST", "/v1/chat/completions%5C", refused},
		{"POST", "/v1/ch%61t/completions", refused},
		{"POST", "/v1/chat/completions%00", refused},
		{"POST", "/v1/chat/completions%E2%80%8B", refused}, // zero-width space
		{"POST", "/v1/chat/completions/chatcmpl-1", refused},
		{"POST", "/v1/responses/resp_1/cancel", refused},
		{"POST", "/v1/audio/speech", want{routeMedia, epSpeech}},
		{"POST", "/v1/images/edits", want{routeMedia, epImageEdits}},
		{"POST", "/team/v1/images/variations", want{routeMedia, epImageVariations}},
		{"POST", "/v1/audio/transcriptions", want{routeMedia, epTranscriptions}},
		{"POST", "/v1/audio/translations", want{routeMedia, epTranslations}},
		{"GET", "/v1/audio/speech", refused},
		{"POST", "/v1/Audio/Speech", refused},
		{"POST", "/openai/deployments/gpt/chat/completions", refused},
		{"POST", "/chat/completions", refused},
		{"POST", "/", refused},
	}
	for _, tc := range cases {
		u, err := url.ParseRequestURI(tc.target)
		if err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		r := &http.Request{Method: tc.method, URL: u, Header: http.Header{}}
		got := g.routeOf(r)
		if got.kind != tc.want.kind || got.ep != tc.want.ep {
			t.Errorf("%s %s: route %d/%d, want %d/%d", tc.method, tc.target, got.kind, got.ep, tc.want.kind, tc.want.ep)
		}
		if got.kind == routeRefused && (got.refusal == nil || got.refusal.Code != "endpoint_not_allowed" || got.refusal.Status != http.StatusForbidden) {
			t.Errorf("%s %s: refusal %+v", tc.method, tc.target, got.refusal)
		}
	}

	// paths net/http would not parse, set directly
	for _, p := range []string{"/v1/chat/completions\x00", "/v1/chat/completions ", "/v1/chat\\completions", "/v1/chat/completions\u200b", "/v1/chat/cömpletions"} {
		r := &http.Request{Method: "POST", URL: &url.URL{Path: p}, Header: http.Header{}}
		if got := g.routeOf(r); got.kind != routeRefused {
			t.Errorf("POST %q: route %d, want refused", p, got.kind)
		}
	}

	// a WebSocket upgrade is refused wherever it goes
	for _, h := range []http.Header{{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}, {"Connection": {"keep-alive, upgrade"}}, {"Upgrade": {"h2c"}}} {
		for _, target := range []string{"/v1/realtime", "/v1/chat/completions"} {
			r := &http.Request{Method: "GET", URL: &url.URL{Path: target}, Header: h}
			if got := g.routeOf(r); got.kind != routeRefused {
				t.Errorf("upgrade %v to %s: route %d, want refused", h, target, got.kind)
			}
		}
	}

	// with models_endpoint upstream, the model list is forwarded for free
	g.ModelsEndpoint = modelsFromUpstream
	r := &http.Request{Method: "GET", URL: &url.URL{Path: "/v1/models"}, Header: http.Header{}}
	if got := g.routeOf(r); got.kind != routeFree {
		t.Errorf("GET /v1/models upstream: route %d, want free", got.kind)
	}
}
