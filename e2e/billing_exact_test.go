package e2e

// Exact billing: every answer that reports usage is charged exactly that,
// on every endpoint, under concurrency.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

func TestBillingExactMixed(t *testing.T) {
	const (
		n           = 1000
		concurrency = 32
		topup       = "1000"
		topupNano   = 1000 * 1_000_000_000
	)
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))

	var keys []btKey
	accounts := []string{"acct-a", "acct-b", "acct-c"}
	for i, a := range accounts {
		g.NewAccount(a, topup)
		for j := 0; j <= i; j++ { // 1, 2 and 3 keys
			id, secret := g.NewKey(a, fmt.Sprintf("key-%d", j))
			keys = append(keys, btKey{account: a, id: id, secret: secret, client: btClient(g, secret)})
		}
	}

	rng := rand.New(rand.NewPCG(20261125, 1))
	jobs := make([]btJob, n)
	for i := range jobs {
		j := btJob{id: fmt.Sprintf("bt-%04d", i), kind: btKind(i % int(btNumKinds)), key: rng.IntN(len(keys))}
		p := 1 + rng.IntN(6000)
		c := rng.IntN(3000)
		j.usage = gwtest.Usage{Prompt: p, Completion: c}
		if rng.IntN(2) == 0 {
			j.usage.Cached = rng.IntN(p + 1)
		}
		if c > 0 && rng.IntN(3) == 0 {
			j.usage.Reasoning = rng.IntN(c + 1)
		}
		j.cut = rng.IntN(len(gwtest.StreamPieces))
		j.status = []int{500, 502, 429, 400}[rng.IntN(4)]
		if j.kind == btStreamError {
			j.status = 503
		}
		switch j.kind {
		case btEmbeddings:
			j.model = "emb-small"
		case btResponses, btResponsesStream, btResponsesCut:
			j.model = []string{"mock-resp", "big-resp"}[rng.IntN(2)]
		case btCompletions, btCompletionsStream:
			j.model = "mock-instruct"
		default:
			j.model = []string{"mock-chat", "big-chat", "mock-mini"}[rng.IntN(3)]
		}
		jobs[i] = j
	}
	rng.Shuffle(len(jobs), func(a, b int) { jobs[a], jobs[b] = jobs[b], jobs[a] })

	start := time.Now()
	var (
		mu       sync.Mutex
		problems []string
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				j := jobs[i]
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if p := btRun(ctx, j, keys[j.key].client); p != "" {
					mu.Lock()
					problems = append(problems, fmt.Sprintf("%s (%s): %s", j.id, j.kind, p))
					mu.Unlock()
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests in %v", n, time.Since(start))
	for i, p := range problems {
		if i == 20 {
			t.Errorf("... and %d more", len(problems)-20)
			break
		}
		t.Errorf("client: %s", p)
	}

	answers := gwtest.WaitAnswers(t, mock, n)
	byAnswer := map[string]gwtest.Answer{}
	for _, a := range answers {
		byAnswer[a.RequestID] = a
	}
	reqs := mock.Requests()
	if len(reqs) != n || len(byAnswer) != n {
		t.Fatalf("mock saw %d requests (%d distinct answers), want %d", len(reqs), len(byAnswer), n)
	}
	gwtest.WaitNoHolds(t, g, 5*time.Second)
	rows := gwtest.UsageRows(t, g)
	if len(rows) != n {
		t.Fatalf("%d usage rows, want one per request: %d", len(rows), n)
	}

	counts := map[string]int{}
	cancelRaced := 0
	for _, j := range jobs {
		row, ok := rows[j.id]
		if !ok {
			t.Errorf("%s (%s): no ledger row with this request id", j.id, j.kind)
			continue
		}
		ans := byAnswer[j.id]
		key := keys[j.key]
		r := btRateOf(t, j.model)
		fail := func(format string, args ...any) {
			t.Errorf("%s (%s): %s\nrow %+v\nmock usage %+v", j.id, j.kind, fmt.Sprintf(format, args...), row, ans.Usage)
		}
		if row.AccountID != key.account || row.KeyID != key.id || row.Model != j.model || row.Kind != "usage" {
			fail("row belongs to %s/%s/%s, want %s/%s/%s", row.AccountID, row.KeyID, row.Model, key.account, key.id, j.model)
			continue
		}
		class := j.kind.class()
		if j.kind == btChatStreamCancel && !row.Estimated && ans.Usage != nil && !ans.WriteFailed {
			// The whole stream got through before the cancel reached the
			// gateway: then it is billed exactly, like any complete stream.
			class = btExact
			cancelRaced++
		}
		counts[class]++
		switch class {
		case btExact:
			if ans.Usage == nil {
				fail("the mock reported no usage")
				continue
			}
			rep := *ans.Usage
			want := btCost(r, int64(rep.Prompt), int64(rep.Completion), int64(rep.Cached))
			if row.Prompt != int64(rep.Prompt) || row.Completion != int64(rep.Completion) ||
				row.Cached != int64(rep.Cached) || row.Reasoning != int64(rep.Reasoning) {
				fail("tokens differ from what the mock reported")
			}
			if -row.Amount != want {
				fail("cost %d, want %d", -row.Amount, want)
			}
			if row.Estimated || row.Note != "" || row.Status != http.StatusOK {
				fail("exact row flagged estimated=%v note=%q status=%d", row.Estimated, row.Note, row.Status)
			}
		case btFree:
			if row.Amount != 0 || row.Prompt != 0 || row.Completion != 0 || row.Estimated || row.Status != j.status {
				fail("a provider error must cost nothing and keep its status %d", j.status)
			}
			if ans.Usage != nil || ans.Status != j.status {
				fail("mock answered %d with usage %v", ans.Status, ans.Usage)
			}
		case btEstimated:
			if !row.Estimated {
				fail("not flagged estimated")
				continue
			}
			wantPrompt := btPromptEstimate(t, gwtest.UpstreamBody(t, reqs, j.id))
			var wantNote string
			lo, hi := int64(-1), int64(-1)
			switch j.kind {
			case btChatStreamCut, btResponsesCut:
				wantNote = "estimated: stream cut before usage arrived"
				lo = btCeil4(utf8.RuneCountInString(ans.Text))
				hi = lo
				if !ans.Aborted {
					fail("mock did not cut")
				}
			case btStreamNoUsage:
				wantNote = "estimated: stream ended without usage"
				lo = btCeil4(utf8.RuneCountInString(btStreamText))
				hi = lo
			case btChatNoUsage:
				wantNote = "estimated: response had no usage"
				lo = btCeil4(utf8.RuneCount(ans.Body))
				hi = lo
			case btChatStreamCancel:
				wantNote = "estimated: stream cut before usage arrived"
				lo = btCeil4(utf8.RuneCountInString(gwtest.StreamPieces[0]))
				hi = btCeil4(utf8.RuneCountInString(btStreamText))
			}
			if ans.Usage != nil && j.kind != btChatStreamCancel {
				fail("mock reported usage, yet the row is estimated")
			}
			if row.Note != wantNote {
				fail("note %q, want %q", row.Note, wantNote)
			}
			if row.Prompt != wantPrompt || row.Completion < lo || row.Completion > hi || row.Cached != 0 || row.Reasoning != 0 {
				fail("estimate: prompt %d (want %d), completion %d (want %d..%d)", row.Prompt, wantPrompt, row.Completion, lo, hi)
			}
			if want := btCost(r, row.Prompt, row.Completion, 0); -row.Amount != want {
				fail("estimated cost %d, want %d", -row.Amount, want)
			}
			if row.Status != http.StatusOK {
				fail("status %d", row.Status)
			}
		}
	}
	t.Logf("rows: %v; cancels that completed before the cancel arrived: %d", counts, cancelRaced)
	if counts[btEstimated] == 0 || counts[btFree] == 0 || counts[btExact] == 0 {
		t.Fatalf("the mix lacks a class: %v", counts)
	}

	// Balances: top-up plus the sum of the ledger, exactly.
	for _, a := range accounts {
		full := gwtest.Ledger(t, g, url.Values{"account": {a}})
		var all, usage, estimated int64
		var nUsage int64
		for _, r := range full.Rows {
			all += r.Amount
			if r.Kind == "usage" {
				usage += r.Amount
				nUsage++
				if r.Estimated {
					estimated++
				}
			}
		}
		bal := gwtest.Balance(t, g, a)
		if bal != topupNano+usage || bal != all {
			t.Errorf("%s: balance %d, top-up + usage %d, sum of ledger %d", a, bal, topupNano+usage, all)
		}
		if len(full.Rows) == 0 || full.Rows[0].BalanceAfter != bal {
			t.Errorf("%s: newest row's balance_after differs from the balance %d", a, bal)
		}
		// Rows come newest first; each balance_after is the previous one
		// plus the row's amount, starting from zero.
		var run int64
		for i := len(full.Rows) - 1; i >= 0; i-- {
			r := full.Rows[i]
			run += r.Amount
			if r.BalanceAfter != run {
				t.Errorf("%s: row %d has balance_after %d, the running sum is %d", a, r.ID, r.BalanceAfter, run)
				break
			}
		}
		if len(full.Totals) != 1 || full.Totals[0].CostNano != -usage || full.Totals[0].Requests != nUsage ||
			full.Totals[0].Estimated != estimated {
			t.Errorf("%s: totals %+v; want cost %d over %d requests, %d estimated", a, full.Totals, -usage, nUsage, estimated)
		}
		if again := gwtest.Balance(t, g, a); again != bal {
			t.Errorf("%s: balance moved after everything settled: %d then %d", a, bal, again)
		}
	}
	gwtest.AssertNoHolds(t, g)
}

// TestResponsesAndEmbeddingsMetered: Responses API (JSON and stream, with
// cached and reasoning tokens) and embeddings are charged exactly.
func TestResponsesAndEmbeddingsMetered(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme", "100")
	_, secret := g.NewKey("acme", "k")
	c := btClient(g, secret)
	ctx := context.Background()

	resp, err := c.Responses.New(ctx, responses.ResponseNewParams{
		Model: "big-model", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Hello")},
		Instructions: openai.String("Be brief"), MaxOutputTokens: openai.Int(300),
	}, option.WithHeader(gwtest.HeaderUsage, "5000,900,4000,600"), option.WithHeader(gwtest.HeaderRequestID, "re-json"))
	if err != nil {
		t.Fatal(err)
	}
	if msg := btCheckResponseUsage(resp.Usage, gwtest.Usage{Prompt: 5000, Completion: 900, Cached: 4000, Reasoning: 600}, resp.OutputText()); msg != "" {
		t.Fatal(msg)
	}
	s := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{
		Model: "mock-model", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Hello")},
	}, option.WithHeader(gwtest.HeaderUsage, "321,123,21,3"), option.WithHeader(gwtest.HeaderRequestID, "re-stream"))
	var completed bool
	for s.Next() {
		if ev := s.Current(); ev.Type == "response.completed" {
			completed = ev.Response.Usage.InputTokens == 321
		}
	}
	if s.Err() != nil || !completed {
		t.Fatalf("responses stream: %v, completed with usage %v", s.Err(), completed)
	}
	s.Close()
	emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "emb-large", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b", "c"}},
	}, option.WithHeader(gwtest.HeaderUsage, "999999,0"), option.WithHeader(gwtest.HeaderRequestID, "re-emb"))
	if err != nil || emb.Usage.PromptTokens != 999999 {
		t.Fatalf("embeddings: %v %+v", err, emb)
	}

	rows := gwtest.UsageRows(t, g)
	want := map[string][5]int64{ // prompt, completion, cached, reasoning, cost
		"re-json":   {5000, 900, 4000, 600, btCost(btRateOf(t, "big-"), 5000, 900, 4000)},
		"re-stream": {321, 123, 21, 3, btCost(btRateOf(t, "mock-"), 321, 123, 21)},
		"re-emb":    {999999, 0, 0, 0, btCost(btRateOf(t, "emb-"), 999999, 0, 0)},
	}
	var sum int64
	for id, w := range want {
		r := rows[id]
		if got := [5]int64{r.Prompt, r.Completion, r.Cached, r.Reasoning, -r.Amount}; got != w || r.Estimated || r.Status != 200 {
			t.Errorf("%s: row %v (estimated %v), want %v", id, got, r.Estimated, w)
		}
		sum += w[4]
	}
	if bal := gwtest.Balance(t, g, "acme"); bal != 100_000_000_000-sum {
		t.Fatalf("balance %d, want %d", bal, 100_000_000_000-sum)
	}
	// The upstream Responses request is unchanged (no include_usage there).
	for _, r := range mock.Requests() {
		if r.Path == "/v1/responses" && bytes.Contains(r.Body, []byte("stream_options")) {
			t.Fatalf("stream_options injected into a Responses request: %s", r.Body)
		}
	}
	gwtest.AssertNoHolds(t, g)
}

// TestRequestIDFallbackIsRaceFree: when the provider sends no request id the
// row carries one the gateway made up, distinct per request. Under -race an
// earlier version failed here: it used Caddy's request UUID, which Caddy
// creates lazily in the request's vars, and settlement created it after
// reverse_proxy had returned, while a dial the transport started for that
// request could still be reading those vars on another goroutine.
func TestRequestIDFallbackIsRaceFree(t *testing.T) {
	const rounds, concurrency = 12, 64
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(btSite(mock.URL, "", ""))
	g.NewAccount("acme", "100")
	_, secret := g.NewKey("acme", "k")
	body := `{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}`
	for round := 0; round < rounds; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, concurrency)
		for i := 0; i < concurrency; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// A fresh client each time: cold connection pools make the
				// gateway's transport dial while other requests finish.
				req, _ := http.NewRequest("POST", g.BaseURL+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+secret)
				req.Header.Set("Content-Type", "application/json")
				resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	rows := gwtest.UsageRows(t, g)
	if len(rows) != rounds*concurrency {
		t.Fatalf("%d rows with distinct request ids, want %d", len(rows), rounds*concurrency)
	}
	for id := range rows {
		if len(id) != len("gw-")+16 || !strings.HasPrefix(id, "gw-") {
			t.Fatalf("request id %q is not a gateway request id (gw- and 16 hex digits)", id)
		}
	}
}
