package e2e

// The image and audio endpoints end to end: the official OpenAI Go SDK (or
// raw HTTP for what it cannot send) through the gateway to the mock, with
// exact nano-unit ledger costs, holds that cover n images, the model
// allowlist whatever the body's encoding, and refusals of models without a
// price or without a model at all.

import (
	"bytes"
	"context"
	"fmt"
	"math/big"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

// mediaPaths are the image and audio endpoints of the catalogue.
var mediaPaths = map[string]bool{
	"/v1/images/generations": true, "/v1/images/edits": true, "/v1/images/variations": true,
	"/v1/audio/speech": true, "/v1/audio/transcriptions": true, "/v1/audio/translations": true,
}

// needsFile reports whether an endpoint takes a multipart upload.
func needsFile(path string) bool {
	return path != "/v1/images/generations" && path != "/v1/audio/speech"
}

// multipartBody is a multipart/form-data body with the fields and one file.
func multipartBody(t testing.TB, fields map[string]string, fileField, fileName string, file []byte) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	fw, err := mw.CreateFormFile(fileField, fileName)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Write(file)
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.Bytes()
}

// postTyped sends a POST with a content type and returns status, headers
// and body.
func postTyped(t testing.TB, g *gwtest.Gateway, path, key, ct string, body []byte, headers map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", g.BaseURL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+key)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := gwtest.RawHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, resp.Header, b.Bytes()
}

// ceilDiv is ceil(a × b / 1,000,000) in math/big.
func ceilPerM(a, b int64) int64 {
	sum := new(big.Int).Mul(big.NewInt(a), big.NewInt(b))
	q, rem := new(big.Int).QuoRem(sum, big.NewInt(1_000_000), new(big.Int))
	if rem.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	return q.Int64()
}

const mediaGuard = `
			price dall-e-3 image 1024x1024 standard 0.04
			price dall-e-3 image 1024x1792 hd 0.12
			price dall-e-3 image 1024x1792 standard 0.080000001
			price dall-e-2 image 1024x1024 0.02
			price gpt-image-1 input 5.000000001 output 40.00
			price tts-1 characters 15.000000001
			price whisper-1 request 0.006
			price gpt-4o-mini-transcribe input 1.25 output 5.000000003`

// reqID is an SDK option that names the request for the mock and the ledger.
func reqID(id string) option.RequestOption { return option.WithHeader(gwtest.HeaderRequestID, id) }

func TestMediaBilling(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	mock.SetRecording(true)
	g := gwtest.New(t)
	g.LoadSite(epSite(mock.URL, mediaGuard))
	g.NewAccount("acme", "100")
	_, secret := g.NewKey("acme", "k")
	c := gwtest.Client(g, secret)
	ctx := context.Background()

	// dall-e-3: 2 images of 1024x1792 hd at 0.12
	img, err := c.Images.Generate(ctx, openai.ImageGenerateParams{
		Model: "dall-e-3", Prompt: "a cat", N: openai.Int(2),
		Size: "1024x1792", Quality: openai.ImageGenerateParamsQualityHD,
	}, reqID("img-dalle"))
	if err != nil || len(img.Data) != 2 {
		t.Fatalf("images.generate: %v %+v", err, img)
	}
	// gpt-image-1: reported usage at the token prices (image input tokens
	// are input tokens)
	img, err = c.Images.Generate(ctx, openai.ImageGenerateParams{Model: "gpt-image-1", Prompt: "a dog"},
		reqID("img-gpt"), option.WithHeader(gwtest.HeaderUsage, "37,4161,5"))
	if err != nil || img.Usage.OutputTokens != 4161 {
		t.Fatalf("gpt-image-1: %v %+v", err, img)
	}
	// dall-e-3 without a quality: the largest price of its size
	if _, err := c.Images.Generate(ctx, openai.ImageGenerateParams{Model: "dall-e-3", Prompt: "x", Size: "1024x1792"}, reqID("img-noq")); err != nil {
		t.Fatal(err)
	}
	// speech: characters are Unicode code points, an emoji is one
	input := "Héllo wörld 😀, this is the gateway."
	resp, err := c.Audio.Speech.New(ctx, openai.AudioSpeechNewParams{
		Model: "tts-1", Input: input, Voice: openai.AudioSpeechNewParamsVoiceUnion{OfString: openai.String("alloy")},
	}, reqID("tts"))
	if err != nil {
		t.Fatal(err)
	}
	var audio bytes.Buffer
	_, _ = audio.ReadFrom(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(audio.Bytes(), gwtest.MockSpeechAudio) {
		t.Fatalf("speech body %q", audio.Bytes())
	}
	// transcriptions: whisper-1 per request, gpt-4o-mini-transcribe by usage
	tr, err := c.Audio.Transcriptions.New(ctx, openai.AudioTranscriptionNewParams{
		Model: "whisper-1", File: openai.File(strings.NewReader("RIFF....WAVEfmt "), "a.wav", "audio/wav"),
	}, reqID("whisper"))
	if err != nil || tr.Text != gwtest.MockTranscript {
		t.Fatalf("transcription: %v %+v", err, tr)
	}
	tr, err = c.Audio.Transcriptions.New(ctx, openai.AudioTranscriptionNewParams{
		Model: "gpt-4o-mini-transcribe", File: openai.File(strings.NewReader("RIFF....WAVEfmt "), "a.wav", "audio/wav"),
	}, reqID("transcribe"), option.WithHeader(gwtest.HeaderUsage, "120,31"))
	if err != nil || tr.Usage.OutputTokens != 31 {
		t.Fatalf("gpt-4o-mini-transcribe: %v %+v", err, tr)
	}
	tl, err := c.Audio.Translations.New(ctx, openai.AudioTranslationNewParams{
		Model: "whisper-1", File: openai.File(strings.NewReader("RIFF....WAVEfmt "), "b.wav", "audio/wav"),
	}, reqID("translate"))
	if err != nil || tl.Text != gwtest.MockTranscript {
		t.Fatalf("translation: %v %+v", err, tl)
	}
	// variations and edits: multipart, raw
	ct, body := multipartBody(t, map[string]string{"model": "dall-e-2", "n": "3", "size": "1024x1024"}, "image", "a.png", []byte("\x89PNG mock"))
	if st, _, b := postTyped(t, g, "/v1/images/variations", secret, ct, body, map[string]string{gwtest.HeaderRequestID: "variations"}); st != 200 {
		t.Fatalf("variations: %d %s", st, b)
	}
	if up := gwtest.UpstreamBody(t, mock.Requests(), "variations"); !bytes.Equal(up, body) {
		t.Fatal("the multipart body did not reach the provider intact")
	}
	ct, body = multipartBody(t, map[string]string{"model": "gpt-image-1", "prompt": "hat"}, "image", "a.png", []byte("\x89PNG mock"))
	if st, _, b := postTyped(t, g, "/v1/images/edits", secret, ct, body, map[string]string{gwtest.HeaderRequestID: "edits", gwtest.HeaderUsage: "1000,272"}); st != 200 {
		t.Fatalf("edits: %d %s", st, b)
	}
	// an upstream error without usage costs nothing
	if _, err := c.Images.Generate(ctx, openai.ImageGenerateParams{Model: "dall-e-3", Prompt: "x", Size: "1024x1024", Quality: "standard"},
		reqID("img-500"), option.WithHeader(gwtest.HeaderStatus, "500")); err == nil {
		t.Fatal("want the upstream error")
	}

	want := map[string]struct {
		cost, prompt, completion int64
		note                     string
	}{
		"img-dalle":  {2 * 120_000_000, 0, 0, "images: 2 × 1024x1792 hd at 0.12"},
		"img-gpt":    {ceilPerM(37, 5_000_000_001) + ceilPerM(4161, 40_000_000_000), 37, 4161, "images: 1, billed by reported usage"},
		"img-noq":    {120_000_000, 0, 0, "images: 1 × 1024x1792 hd at 0.12"},
		"tts":        {ceilPerM(int64(utf8.RuneCountInString(input)), 15_000_000_001), 0, 0, fmt.Sprintf("characters: %d at 15.000000001 per 1M", utf8.RuneCountInString(input))},
		"whisper":    {6_000_000, 0, 0, "per request: 0.006"},
		"transcribe": {ceilPerM(1, 120*1_250_000_000+31*5_000_000_003), 120, 31, ""},
		"translate":  {6_000_000, 0, 0, "per request: 0.006"},
		"variations": {3 * 20_000_000, 0, 0, "images: 3 × 1024x1024 * at 0.02"},
		"edits":      {ceilPerM(1, 1000*5_000_000_001+272*40_000_000_000), 1000, 272, "images: 1, billed by reported usage"},
		"img-500":    {0, 0, 0, ""},
	}
	rows := gwtest.UsageRows(t, g)
	var total int64
	for id, w := range want {
		r, ok := rows[id]
		if !ok {
			t.Errorf("%s: no ledger row", id)
			continue
		}
		if -r.Amount != w.cost || r.Prompt != w.prompt || r.Completion != w.completion || r.Note != w.note || r.Estimated {
			t.Errorf("%s: row %+v\nwant cost %d, tokens %d/%d, note %q", id, r, w.cost, w.prompt, w.completion, w.note)
		}
		total += w.cost
	}
	if len(rows) != len(want) {
		t.Errorf("%d rows, want %d", len(rows), len(want))
	}
	if bal := gwtest.Balance(t, g, "acme"); bal != 100_000_000_000-total {
		t.Errorf("balance %d, want %d", bal, 100_000_000_000-total)
	}
	gwtest.AssertNoHolds(t, g)
}

// TestMediaHoldCoversN: the hold of an image request is n times its price
// per image, or n times default_max_tokens output tokens at the token
// prices.
func TestMediaHoldCoversN(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(epSite(mock.URL, mediaGuard+"\n\t\t\tdefault_max_tokens 1000"))
	g.NewAccount("acme", "100")
	_, secret := g.NewKey("acme", "k")
	for _, tc := range []struct {
		name, body string
		want       int64
	}{
		{"per image", `{"model":"dall-e-3","prompt":"x","n":4,"size":"1024x1792","quality":"standard"}`, 4 * 80_000_001},
		{"per image, any quality: the largest", `{"model":"dall-e-3","prompt":"x","n":3,"size":"1024x1792"}`, 3 * 120_000_000},
		{"tokens", `{"model":"gpt-image-1","prompt":"abcdefgh","n":2}`, ceilPerM(2, 5_000_000_001) + ceilPerM(2000, 40_000_000_000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan int, 1)
			go func() {
				s, _, _, _ := gwtest.Post(g, "/v1/images/generations", secret, tc.body, map[string]string{gwtest.HeaderWaitMs: "600"})
				done <- s
			}()
			var held int64
			gwtest.Eventually(t, 500*time.Millisecond, func() string {
				var a struct {
					HeldNano int64 `json:"held_nano"`
				}
				g.MustAdmin("GET", "/ai-gateway/accounts/acme", nil, http.StatusOK, &a)
				if held = a.HeldNano; held == 0 {
					return "nothing held yet"
				}
				return ""
			})
			if held != tc.want {
				t.Errorf("held %d, want %d", held, tc.want)
			}
			if s := <-done; s != http.StatusOK {
				t.Fatalf("status %d", s)
			}
		})
	}
	gwtest.AssertNoHolds(t, g)
}

// TestMediaAllowlistAndRefusals: a key limited to dall-e-3 cannot reach
// another model through JSON, multipart, urlencoded bodies or ?model=; a
// model without a price, a size without a price, a request without a model
// and an ambiguous form are refused; none reaches the provider.
func TestMediaAllowlistAndRefusals(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(epSite(mock.URL, mediaGuard))
	g.NewAccount("acme", "100")
	keyID, secret := g.NewKey("acme", "k")
	g.MustAdmin("PATCH", "/ai-gateway/keys/"+keyID, map[string]any{"allowed_models": []string{"dall-e-3"}}, http.StatusOK, nil)

	form := url.Values{"model": {"gpt-image-1"}, "prompt": {"x"}}.Encode()
	mpCT, mp := multipartBody(t, map[string]string{"model": "gpt-image-1", "prompt": "x"}, "image", "a.png", []byte("png"))
	dupCT, dup := multipartBody(t, map[string]string{"model": "dall-e-3", "prompt": "x"}, "model", "m.txt", []byte("gpt-image-1"))
	noCT, noModel := multipartBody(t, map[string]string{"prompt": "x"}, "file", "a.wav", []byte("RIFF"))
	for _, tc := range []struct {
		name, path, ct, body string
		status               int
		code                 string
	}{
		{"json", "/v1/images/generations", "application/json", `{"model":"gpt-image-1","prompt":"x"}`, 403, "model_not_allowed"},
		{"multipart", "/v1/images/edits", mpCT, string(mp), 403, "model_not_allowed"},
		{"urlencoded", "/v1/images/generations", "application/x-www-form-urlencoded", form, 403, "model_not_allowed"},
		{"query", "/v1/images/generations?model=gpt-image-1", "application/json", `{"model":"dall-e-3","prompt":"x","size":"1024x1024","quality":"standard"}`, 403, "model_not_allowed"},
		{"query on chat", "/v1/chat/completions?model=gpt-image-1", "application/json", `{"model":"dall-e-3","messages":[]}`, 403, "model_not_allowed"},
		{"size without a price", "/v1/images/generations", "application/json", `{"model":"dall-e-3","prompt":"x","size":"256x256"}`, 400, "model_not_priced"},
		{"no model", "/v1/audio/transcriptions", noCT, string(noModel), 400, "model_required"},
		{"model twice", "/v1/images/edits", dupCT, string(dup), 400, "invalid_request"},
		{"unreadable type", "/v1/audio/speech", "text/plain", "model=dall-e-3", 400, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := mock.Count()
			st, h, b := postTyped(t, g, tc.path, secret, tc.ct, []byte(tc.body), nil)
			gwtest.CheckError(t, st, h, b, tc.status, "invalid_request_error", tc.code)
			if mock.Count() != before {
				t.Fatal("a refused request reached the provider")
			}
		})
	}
	// an unpriced model, for a key that may use any model
	_, anyKey := g.NewKey("acme", "any")
	st, h, b := postTyped(t, g, "/v1/audio/speech", anyKey, "application/json", []byte(`{"model":"tts-9","input":"hi","voice":"alloy"}`), nil)
	gwtest.CheckError(t, st, h, b, 400, "invalid_request_error", "model_not_priced")
	if mock.Count() != 0 {
		t.Fatal("a refused request reached the provider")
	}
	if rows := gwtest.UsageRows(t, g); len(rows) != 0 {
		t.Fatalf("refused requests left %d rows", len(rows))
	}
}

// TestImagesOnATinyBalance is the first row of the fail-closed issue: 100
// requests for 10 images each on a balance of one nano-unit were all served
// for free. Now each is refused (the hold for 10 images is not covered),
// none reaches the provider, and the ledger and balance are untouched.
func TestImagesOnATinyBalance(t *testing.T) {
	mock := gwtest.NewMockProvider(t)
	g := gwtest.New(t)
	g.LoadSite(epSite(mock.URL, mediaGuard))
	g.NewAccount("acme", "0.000000001")
	_, key := g.NewKey("acme", "k")
	body := `{"model":"dall-e-3","prompt":"a cat","n":10,"size":"1024x1024","quality":"standard"}`
	for i := 0; i < 100; i++ {
		status, h, b, err := gwtest.Post(g, "/v1/images/generations", key, body, nil)
		if err != nil {
			t.Fatal(err)
		}
		gwtest.CheckError(t, status, h, b, http.StatusForbidden, "insufficient_quota", "insufficient_balance")
	}
	if mock.Count() != 0 {
		t.Fatalf("the provider saw %d image requests", mock.Count())
	}
	if rows := gwtest.UsageRows(t, g); len(rows) != 0 {
		t.Fatalf("%d ledger rows for refused requests", len(rows))
	}
	if bal := gwtest.Balance(t, g, "acme"); bal != 1 {
		t.Fatalf("balance %d nano, want 1", bal)
	}
}
