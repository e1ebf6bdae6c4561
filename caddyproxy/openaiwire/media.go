package openaiwire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MediaRequest is what the gateway reads from a request to an image or
// audio endpoint (images/generations, edits and variations; audio/speech,
// transcriptions and translations), whatever its encoding: JSON,
// multipart/form-data or application/x-www-form-urlencoded.
type MediaRequest struct {
	// Model is the "model" field; "" when absent (or JSON null).
	Model string
	// Images is how many images the request asks for: "n", at least 1.
	Images int64
	// Size and Quality are the "size" and "quality" fields as sent ("" when
	// absent).
	Size, Quality string
	// InputChars is the number of Unicode code points of the "input" text
	// (audio/speech): an escape is one, a surrogate pair one.
	InputChars int64
	// PromptChars is the number of Unicode code points of the "prompt"
	// text (images, transcriptions).
	PromptChars int64
}

// mediaFields are the members and form fields ParseMedia* read; each may
// appear only once, as parsers disagree on which copy wins.
var mediaFields = [...]string{"model", "n", "size", "quality", "input", "prompt"}

// MaxMediaField is the largest form field value ParseMediaMultipart and
// ParseMediaForm read, in bytes: 64 KiB (OpenAI's speech input is 4096
// characters, image prompts 32,000).
const MaxMediaField = 64 << 10

// ParseMediaJSON reads a JSON media request: one object whose "model",
// "size" and "quality" are strings, "n" a non-negative integer, "input"
// and "prompt" strings, each when present and not null, and none given
// twice. Every error wraps ErrInvalidJSON.
func ParseMediaJSON(body []byte) (MediaRequest, error) {
	var req MediaRequest
	if err := validObject(body, "request body"); err != nil {
		return req, err
	}
	var vals [len(mediaFields)][]byte
	var variant error // reported after repeated members, as ParseRequest does
	it, _ := newObjectIter(body)
	for {
		m, more := it.next()
		if !more {
			break
		}
		for i, name := range mediaFields {
			if keyIs(m.key, name) {
				if vals[i] != nil {
					return req, fmt.Errorf("%w: member %q appears more than once", ErrInvalidJSON, name)
				}
				vals[i] = m.val
			}
		}
		if key, name, ok := caseVariant(m.key, mediaFields[:]); ok && variant == nil {
			variant = fmt.Errorf("%w: member %q differs from %q only in letter case (parsers disagree on whether they are the same member)", ErrInvalidJSON, key, name)
		}
	}
	if !it.ok {
		return req, fmt.Errorf("%w: request body is not a JSON object", ErrInvalidJSON)
	}
	if variant != nil {
		return req, variant
	}
	req.Images = 1
	for i, name := range mediaFields {
		v := vals[i]
		if isNull(v) {
			continue
		}
		if name == "n" {
			n, problem := parseCount(v)
			if problem != "" {
				return req, fmt.Errorf("%w: n %s", ErrInvalidJSON, problem)
			}
			req.Images = max(n, 1)
			continue
		}
		if kind(v) != '"' {
			return req, fmt.Errorf("%w: %s must be a string", ErrInvalidJSON, name)
		}
		switch name {
		case "input":
			req.InputChars = stringChars(v)
		case "prompt":
			req.PromptChars = stringChars(v)
		default:
			s, ok := stringValue(v)
			if !ok {
				return req, fmt.Errorf("%w: %s must be a string", ErrInvalidJSON, name)
			}
			req.set(name, s)
		}
	}
	return req, nil
}

// set stores a string field read from a form.
func (req *MediaRequest) set(name, s string) {
	switch name {
	case "model":
		req.Model = s
	case "size":
		req.Size = s
	case "quality":
		req.Quality = s
	case "input":
		req.InputChars = int64(utf8.RuneCountInString(s))
	case "prompt":
		req.PromptChars = int64(utf8.RuneCountInString(s))
	}
}

// ErrInvalidForm is wrapped by every error about a multipart or
// urlencoded form the gateway cannot read unambiguously.
var ErrInvalidForm = errors.New("invalid form")

// fromFields builds a MediaRequest from form fields (each seen once).
func fromFields(fields map[string]string) (MediaRequest, error) {
	req := MediaRequest{Images: 1}
	for name, v := range fields {
		if name != "n" {
			req.set(name, v)
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 {
			return req, fmt.Errorf("%w: n must be a non-negative integer, got %q", ErrInvalidForm, v)
		}
		req.Images = max(n, 1)
	}
	return req, nil
}

// isMediaField reports whether name is a field the gateway reads.
func isMediaField(name string) bool {
	for _, f := range mediaFields {
		if f == name {
			return true
		}
	}
	return false
}

// ParseMediaMultipart reads the fields the gateway needs from a
// multipart/form-data body with the given boundary. Parts are read as they
// are (no Content-Transfer-Encoding is undone: a field the gateway reads
// that declares one other than 7bit, 8bit or binary is refused, since the
// provider could decode it otherwise); file parts are skipped; a field the
// gateway reads may appear once and hold at most MaxMediaField bytes. The
// whole body must be well formed, closing boundary included. Every error
// wraps ErrInvalidForm.
func ParseMediaMultipart(body []byte, boundary string) (MediaRequest, error) {
	if boundary == "" {
		return MediaRequest{}, fmt.Errorf("%w: multipart content type without a boundary", ErrInvalidForm)
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	fields := map[string]string{}
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return MediaRequest{}, fmt.Errorf("%w: malformed multipart body: %w", ErrInvalidForm, err)
		}
		name := p.FormName()
		if v := caseVariantField(name); v != "" {
			return MediaRequest{}, fmt.Errorf("%w: field %q differs from %q only in letter case", ErrInvalidForm, name, v)
		}
		if !isMediaField(name) {
			if _, err := io.Copy(io.Discard, p); err != nil {
				return MediaRequest{}, fmt.Errorf("%w: malformed multipart body: %w", ErrInvalidForm, err)
			}
			continue
		}
		switch cte := strings.ToLower(strings.TrimSpace(p.Header.Get("Content-Transfer-Encoding"))); cte {
		case "", "7bit", "8bit", "binary":
		default:
			return MediaRequest{}, fmt.Errorf("%w: field %q has Content-Transfer-Encoding %q", ErrInvalidForm, name, cte)
		}
		if _, dup := fields[name]; dup {
			return MediaRequest{}, fmt.Errorf("%w: field %q appears more than once", ErrInvalidForm, name)
		}
		v, err := io.ReadAll(io.LimitReader(p, MaxMediaField+1))
		if err != nil {
			return MediaRequest{}, fmt.Errorf("%w: malformed multipart body: %w", ErrInvalidForm, err)
		}
		if len(v) > MaxMediaField {
			return MediaRequest{}, fmt.Errorf("%w: field %q is longer than %d bytes", ErrInvalidForm, name, MaxMediaField)
		}
		fields[name] = string(v)
	}
	return fromFields(fields)
}

// ParseMediaForm reads the fields the gateway needs from an
// application/x-www-form-urlencoded body; a field it reads may appear once
// and hold at most MaxMediaField bytes. Every error wraps ErrInvalidForm.
func ParseMediaForm(body []byte) (MediaRequest, error) {
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return MediaRequest{}, fmt.Errorf("%w: %w", ErrInvalidForm, err)
	}
	for name := range vals {
		if v := caseVariantField(name); v != "" {
			return MediaRequest{}, fmt.Errorf("%w: field %q differs from %q only in letter case", ErrInvalidForm, name, v)
		}
	}
	fields := map[string]string{}
	for _, name := range mediaFields {
		vs, ok := vals[name]
		if !ok {
			continue
		}
		if len(vs) > 1 {
			return MediaRequest{}, fmt.Errorf("%w: field %q appears more than once", ErrInvalidForm, name)
		}
		if len(vs[0]) > MaxMediaField {
			return MediaRequest{}, fmt.Errorf("%w: field %q is longer than %d bytes", ErrInvalidForm, name, MaxMediaField)
		}
		fields[name] = vs[0]
	}
	return fromFields(fields)
}

// caseVariantField returns the field the gateway reads that name equals in
// another letter case ("Model"), or "": a provider that matches names in
// any case could read it instead of the one the gateway checked.
func caseVariantField(name string) string {
	for _, f := range mediaFields {
		if name != f && strings.EqualFold(name, f) {
			return f
		}
	}
	return ""
}
