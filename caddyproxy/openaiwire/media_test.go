package openaiwire

import (
	"bytes"
	"errors"
	"mime/multipart"
	"strings"
	"testing"
)

func TestParseMediaJSON(t *testing.T) {
	req, err := ParseMediaJSON([]byte(`{"model":"tts-1","input":"h\u00e9llo \uD83D\uDE00 😀\n","voice":"alloy","n":null}`))
	if err != nil {
		t.Fatal(err)
	}
	// h é l l o space 😀 space 😀 \n = 10 code points
	if req.Model != "tts-1" || req.InputChars != 10 || req.Images != 1 {
		t.Fatalf("%+v", req)
	}
	req, err = ParseMediaJSON([]byte(`{"model":"dall-e-3","prompt":"a cat","n":3,"size":"1024x1792","quality":"hd"}`))
	if err != nil || req.Images != 3 || req.Size != "1024x1792" || req.Quality != "hd" || req.PromptChars != 5 {
		t.Fatalf("%+v %v", req, err)
	}
	for _, bad := range []string{
		`{"model":"a","model":"b"}`, `{"model":1}`, `{"n":-1}`, `{"n":1.5}`, `{"size":2}`,
		`{"input":["x"]}`, `[]`, `{`, `{"quality":"hd","quality":"standard"}`,
	} {
		if _, err := ParseMediaJSON([]byte(bad)); !errors.Is(err, ErrInvalidJSON) {
			t.Errorf("%s: %v, want an invalid json error", bad, err)
		}
	}
}

// form writes a multipart body from parts of (name, filename, value).
func form(t *testing.T, parts ...[3]string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w interface{ Write([]byte) (int, error) }
		var err error
		if p[1] != "" {
			w, err = mw.CreateFormFile(p[0], p[1])
		} else {
			w, err = mw.CreateFormField(p[0])
		}
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(p[2]))
	}
	_ = mw.Close()
	return buf.Bytes(), mw.Boundary()
}

func TestParseMediaMultipart(t *testing.T) {
	body, b := form(t, [3]string{"image", "a.png", "\x89PNG model=x"}, [3]string{"model", "", "dall-e-2"}, [3]string{"n", "", "2"}, [3]string{"size", "", "512x512"})
	req, err := ParseMediaMultipart(body, b)
	if err != nil || req.Model != "dall-e-2" || req.Images != 2 || req.Size != "512x512" {
		t.Fatalf("%+v %v", req, err)
	}
	// another boundary: no part at all, so no model (refused by the guard)
	if req, err := ParseMediaMultipart(body, "nope"); err != nil || req.Model != "" {
		t.Fatalf("wrong boundary: %+v %v", req, err)
	}
	for name, c := range map[string]struct {
		body     []byte
		boundary string
	}{
		"model twice": func() struct {
			body     []byte
			boundary string
		} {
			x, y := form(t, [3]string{"model", "", "a"}, [3]string{"model", "m.txt", "b"})
			return struct {
				body     []byte
				boundary string
			}{x, y}
		}(),
		"bad n": func() struct {
			body     []byte
			boundary string
		} {
			x, y := form(t, [3]string{"model", "", "a"}, [3]string{"n", "", "two"})
			return struct {
				body     []byte
				boundary string
			}{x, y}
		}(),
		"field too long": func() struct {
			body     []byte
			boundary string
		} {
			x, y := form(t, [3]string{"prompt", "", strings.Repeat("x", MaxMediaField+1)})
			return struct {
				body     []byte
				boundary string
			}{x, y}
		}(),
		"no boundary":      {body, ""},
		"cut before close": {body[:len(body)-10], b},
		"encoded model":    {[]byte("--B\r\nContent-Disposition: form-data; name=\"model\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ngpt=2Dimage\r\n--B--\r\n"), "B"},
	} {
		if _, err := ParseMediaMultipart(c.body, c.boundary); !errors.Is(err, ErrInvalidForm) {
			t.Errorf("%s: %v, want an invalid form error", name, err)
		}
	}
}

func TestParseMediaForm(t *testing.T) {
	req, err := ParseMediaForm([]byte("model=dall-e-3&n=2&quality=hd&prompt=caf%C3%A9"))
	if err != nil || req.Model != "dall-e-3" || req.Images != 2 || req.Quality != "hd" || req.PromptChars != 4 {
		t.Fatalf("%+v %v", req, err)
	}
	for _, bad := range []string{"model=a&model=b", "model=%zz", "model=a&n=-1"} {
		if _, err := ParseMediaForm([]byte(bad)); !errors.Is(err, ErrInvalidForm) {
			t.Errorf("%s: %v, want an invalid form error", bad, err)
		}
	}
}
