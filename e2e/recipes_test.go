package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// recipeSite reads a provider recipe of examples/ and returns its site body
// with the upstreams replaced: the recipe is one site block whose first
// line names the site and whose last line closes it.
func recipeSite(t *testing.T, name string, upstreams map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.TrimSpace(string(b))
	lines := strings.Split(text, "\n")
	if lines[0] != "api.example.com {" || lines[len(lines)-1] != "}" {
		t.Fatalf("%s is not one site block", name)
	}
	body := strings.Join(lines[1:len(lines)-1], "\n")
	for from, to := range upstreams {
		if !strings.Contains(body, from) {
			t.Fatalf("%s does not mention %s", name, from)
		}
		body = strings.ReplaceAll(body, from, to)
	}
	return body
}

// TestRecipesAreLinkedAndAdapt: the Caddyfile reference links every recipe
// of examples/ (the recipes are not copied into the docs, so they cannot
// drift), and each adapts as a complete Caddyfile.
func TestRecipesAreLinkedAndAdapt(t *testing.T) {
	ref, err := os.ReadFile("../docs/caddyfile.md")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../examples/*.Caddyfile")
	if len(files) < 6 {
		t.Fatalf("%d recipes", len(files))
	}
	for _, f := range files {
		link := "](../examples/" + filepath.Base(f) + ")"
		if !strings.Contains(string(ref), link) {
			t.Errorf("docs/caddyfile.md does not link %s (want a link ending in %q)", f, link)
		}
		b, _ := os.ReadFile(f)
		gwtest.Adapt(t, "{\n\tai_gateway\n}\n\n"+string(b))
	}
}

// recipeChat sends a chat and a stream through the gateway with the SDK.
func recipeChat(t *testing.T, g *gwtest.Gateway, secret, model string) {
	t.Helper()
	c := btClient(g, secret)
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")}}
	if resp, err := c.Chat.Completions.New(ctx, params); err != nil || resp.Usage.TotalTokens != 17 {
		t.Fatalf("%s chat: %+v, %v", model, resp, err)
	}
	s := c.Chat.Completions.NewStreaming(ctx, params)
	n := 0
	for s.Next() {
		n++
	}
	if err := s.Err(); err != nil || n == 0 {
		t.Fatalf("%s stream: %d chunks, %v", model, n, err)
	}
}

func TestRecipes(t *testing.T) {
	for _, rc := range []struct {
		file      string
		env       map[string]string
		upstreams func(mock, mock2 *gwtest.MockProvider) map[string]string
		models    []string
		check     func(t *testing.T, reqs []gwtest.Recorded)
	}{
		{
			file: "openai.Caddyfile", env: map[string]string{"OPENAI_API_KEY": "sk-openai-test"},
			upstreams: func(m, _ *gwtest.MockProvider) map[string]string {
				return map[string]string{"https://api.openai.com": m.URL}
			},
			models: []string{"gpt-4o-mini", "gpt-4o"},
			check: func(t *testing.T, reqs []gwtest.Recorded) {
				recipeHeader(t, reqs, "Authorization", "Bearer sk-openai-test", "/v1/chat/completions")
			},
		},
		{
			file: "deepseek.Caddyfile", env: map[string]string{"DEEPSEEK_API_KEY": "ds-test"},
			upstreams: func(m, _ *gwtest.MockProvider) map[string]string {
				return map[string]string{"https://api.deepseek.com": m.URL}
			},
			models: []string{"deepseek-chat", "deepseek-reasoner"},
			check: func(t *testing.T, reqs []gwtest.Recorded) {
				recipeHeader(t, reqs, "Authorization", "Bearer ds-test", "/v1/chat/completions")
			},
		},
		{
			file: "anthropic.Caddyfile", env: map[string]string{"ANTHROPIC_API_KEY": "ant-test"},
			upstreams: func(m, _ *gwtest.MockProvider) map[string]string {
				return map[string]string{"https://api.anthropic.com": m.URL}
			},
			models: []string{"claude", "claude-haiku-4-5"},
			check: func(t *testing.T, reqs []gwtest.Recorded) {
				recipeHeader(t, reqs, "Authorization", "Bearer ant-test", "/v1/chat/completions")
				if rtModelOf(t, reqs[0].Body) != "claude-sonnet-4-5" {
					t.Fatalf("alias went upstream as %s", reqs[0].Body)
				}
			},
		},
		{
			file: "local.Caddyfile", env: map[string]string{"VLLM_API_KEY": "vllm-test"},
			upstreams: func(m, m2 *gwtest.MockProvider) map[string]string {
				return map[string]string{"localhost:11434": strings.TrimPrefix(m.URL, "http://"), "localhost:8000": strings.TrimPrefix(m2.URL, "http://")}
			},
			models: []string{"llama3.2:3b", "Qwen/Qwen2.5-7B-Instruct"},
			check: func(t *testing.T, reqs []gwtest.Recorded) {
				for _, r := range reqs {
					if rtModelOf(t, r.Body) != "llama3.2:3b" || r.Header.Get("Authorization") != "" {
						t.Fatalf("ollama got %s with Authorization %q", r.Body, r.Header.Get("Authorization"))
					}
				}
			},
		},
		{
			file: "azure.Caddyfile",
			env:  map[string]string{"AZURE_OPENAI_API_KEY": "az-test", "AZURE_GPT4O_DEPLOYMENT": "prod-gpt4o", "AZURE_OPENAI_RESOURCE": "unused"},
			upstreams: func(m, _ *gwtest.MockProvider) map[string]string {
				return map[string]string{"https://{$AZURE_OPENAI_RESOURCE}.openai.azure.com": m.URL}
			},
			models: []string{"gpt-4o"},
			check: func(t *testing.T, reqs []gwtest.Recorded) {
				recipeHeader(t, reqs, "Api-Key", "az-test", "/openai/deployments/prod-gpt4o/chat/completions")
				for _, r := range reqs {
					if r.Header.Get("Authorization") != "" {
						t.Fatalf("Azure got an Authorization header")
					}
				}
			},
		},
	} {
		t.Run(rc.file, func(t *testing.T) {
			for k, v := range rc.env {
				t.Setenv(k, v)
			}
			mock, mock2 := gwtest.NewMockProvider(t), gwtest.NewMockProvider(t)
			g := gwtest.New(t)
			g.LoadSite(recipeSite(t, rc.file, rc.upstreams(mock, mock2)))
			g.NewAccount("acme", "10")
			_, secret := g.NewKey("acme", "k")
			for _, m := range rc.models {
				recipeChat(t, g, secret, m)
			}
			reqs := append(mock.Requests(), mock2.Requests()...)
			if len(reqs) != 2*len(rc.models) {
				t.Fatalf("providers saw %d requests", len(reqs))
			}
			rc.check(t, mock.Requests())
			if gwtest.HasHeaderValue(reqs, secret) {
				t.Fatal("the gateway key reached a provider")
			}
			rows := gwtest.UsageRows(t, g)
			if len(rows) != 2*len(rc.models) {
				t.Fatalf("%d ledger rows", len(rows))
			}
			for _, r := range rows {
				if r.Estimated || r.Amount >= 0 {
					t.Fatalf("ledger row %+v", r)
				}
			}
			if rc.file == "local.Caddyfile" {
				if len(mock2.Requests()) != 2 || mock2.Requests()[0].Header.Get("Authorization") != "Bearer vllm-test" {
					t.Fatalf("vLLM requests %+v", mock2.Requests())
				}
				status, _, b, _ := gwtest.Post(g, "/v1/chat/completions", secret, `{"model":"unrouted"}`, nil)
				if status != http.StatusBadRequest || !strings.Contains(string(b), "model_not_priced") {
					t.Fatalf("unpriced model: %d %s", status, b)
				}
			}
		})
	}
}

// recipeHeader checks that every request reached path with header = value.
func recipeHeader(t *testing.T, reqs []gwtest.Recorded, header, value, path string) {
	t.Helper()
	for _, r := range reqs {
		if r.Path != path || r.Header.Get(header) != value {
			t.Fatalf("upstream got %s with %s %q, want %s with %q", r.Path, header, r.Header.Get(header), path, value)
		}
	}
}

// TestFailoverRecipe runs examples/failover.Caddyfile with a first upstream
// that answers 503 and a second one that works.
func TestFailoverRecipe(t *testing.T) {
	t.Setenv("VLLM_API_KEY", "vllm-test")
	var failing atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		failing.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(recipeSite(t, "failover.Caddyfile", map[string]string{
		"http://gpu-a:8000": "http://" + ln.Addr().String(),
		"http://gpu-b:8000": mock.URL,
	}))
	g.NewAccount("acme", "10")
	_, secret := g.NewKey("acme", "k")
	for i := 0; i < 3; i++ {
		recipeChat(t, g, secret, "meta-llama/Llama-3.1-8B-Instruct")
	}
	if failing.Load() != 1 || mock.Count() != 6 {
		t.Fatalf("failing upstream saw %d, healthy %d", failing.Load(), mock.Count())
	}
	if n := len(gwtest.UsageRows(t, g)); n != 6 {
		t.Fatalf("%d ledger rows", n)
	}
}
