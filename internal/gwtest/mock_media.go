package gwtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// The mock's image and audio endpoints, answered as OpenAI answers them:
//
//   - images/generations (JSON), images/edits and variations (multipart):
//     {"created":…,"data":[…n images…]}, and for gpt-image-* models a usage
//     object {input_tokens, output_tokens, total_tokens,
//     input_tokens_details{text_tokens, image_tokens}} (Usage.Prompt is
//     input_tokens, Cached its image tokens, Completion output_tokens);
//   - audio/speech (JSON): binary audio (audio/mpeg), no usage;
//   - audio/transcriptions and translations (multipart with a file and a
//     model): {"text":…} and, for gpt-4o-*-transcribe models, usage
//     {type:"tokens", input_tokens, output_tokens, total_tokens,
//     input_token_details{text_tokens, audio_tokens}}.
//
// X-Mock-No-Usage leaves the usage out; X-Mock-Status answers an error.

// MockSpeechAudio is the body of every audio/speech answer.
var MockSpeechAudio = []byte("ID3\x04\x00\x00\x00\x00\x00\x00mock-mp3-frames\xff\xfb\x90\x00")

// MockTranscript is the text of every transcription and translation.
const MockTranscript = "Hello from the mock transcriber."

// mediaFields reads the model, n and whether a file was sent from a JSON,
// multipart or urlencoded body.
func mediaFields(r *http.Request, body []byte) (model string, n int, files int, err error) {
	n = 1
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	fields := map[string]string{}
	switch mt {
	case "multipart/form-data":
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for {
			p, perr := mr.NextPart()
			if errors.Is(perr, io.EOF) {
				break
			}
			if perr != nil {
				return "", 0, 0, perr
			}
			v, _ := io.ReadAll(p)
			if p.FileName() != "" {
				files++
				continue
			}
			fields[p.FormName()] = string(v)
		}
	case "application/x-www-form-urlencoded":
		q, perr := url.ParseQuery(string(body))
		if perr != nil {
			return "", 0, 0, perr
		}
		for k := range q {
			fields[k] = q.Get(k)
		}
	default:
		var req struct {
			Model string `json:"model"`
			N     *int   `json:"n"`
		}
		if jerr := json.Unmarshal(body, &req); jerr != nil {
			return "", 0, 0, jerr
		}
		if req.N != nil {
			n = *req.N
		}
		return req.Model, n, 0, nil
	}
	if v, ok := fields["n"]; ok {
		if n, err = strconv.Atoi(v); err != nil {
			return "", 0, 0, err
		}
	}
	return fields["model"], n, files, nil
}

func (m *MockProvider) images(aw *answerWriter, r *http.Request, body []byte) {
	model, n, files, err := mediaFields(r, body)
	if err != nil || model == "" || n < 1 {
		aw.json(http.StatusBadRequest, errBody("mock: bad image request", "invalid_request"))
		return
	}
	if !strings.HasSuffix(r.URL.Path, "/generations") && files == 0 {
		aw.json(http.StatusBadRequest, errBody("mock: an image file is required", "invalid_request"))
		return
	}
	data := make([]any, n)
	for i := range data {
		data[i] = map[string]any{"b64_json": "iVBORw0KGgo="}
	}
	resp := map[string]any{"created": 1700000000, "data": data}
	if strings.HasPrefix(model, "gpt-image-") {
		if u := aw.usage(); u != nil {
			resp["usage"] = map[string]any{
				"input_tokens": u.Prompt, "output_tokens": u.Completion, "total_tokens": u.Prompt + u.Completion,
				"input_tokens_details": map[string]any{"text_tokens": u.Prompt - u.Cached, "image_tokens": u.Cached},
			}
			u.Cached = 0 // image input tokens are not cached tokens
		}
	}
	aw.json(http.StatusOK, resp)
}

func (m *MockProvider) speech(aw *answerWriter, r *http.Request, body []byte) {
	var req struct {
		Model string `json:"model"`
		Input string `json:"input"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Model == "" || req.Input == "" {
		aw.json(http.StatusBadRequest, errBody("mock: bad speech request", "invalid_request"))
		return
	}
	aw.a.Status = http.StatusOK
	aw.w.Header().Set("Content-Type", "audio/mpeg")
	aw.w.WriteHeader(http.StatusOK)
	aw.write(MockSpeechAudio)
}

func (m *MockProvider) transcription(aw *answerWriter, r *http.Request, body []byte) {
	model, _, files, err := mediaFields(r, body)
	if err != nil || model == "" || files != 1 {
		aw.json(http.StatusBadRequest, errBody("mock: a transcription needs a model and one file", "invalid_request"))
		return
	}
	resp := map[string]any{"text": MockTranscript}
	aw.a.Text = MockTranscript
	if strings.HasPrefix(model, "gpt-4o") && strings.HasSuffix(model, "-transcribe") {
		if u := aw.usage(); u != nil {
			resp["usage"] = map[string]any{
				"type": "tokens", "input_tokens": u.Prompt, "output_tokens": u.Completion, "total_tokens": u.Prompt + u.Completion,
				"input_token_details": map[string]any{"text_tokens": 0, "audio_tokens": u.Prompt},
			}
			u.Cached, u.Reasoning = 0, 0
		}
	}
	aw.json(http.StatusOK, resp)
}
