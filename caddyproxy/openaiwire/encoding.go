package openaiwire

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// MaxDecodedBytes is the most DecodeBody will inflate a body to.
const MaxDecodedBytes = 64 << 20

// ErrUnsupportedEncoding is wrapped by DecodeBody's error for a
// Content-Encoding it cannot undo (br, zstd, compress, …).
var ErrUnsupportedEncoding = errors.New("unsupported content encoding")

// ErrBodyTooLarge is wrapped by DecodeBody's error when the decoded body
// would exceed the size limit.
var ErrBodyTooLarge = errors.New("decoded body too large")

// DecodeBody undoes the Content-Encoding of a complete body, inflating at
// most MaxDecodedBytes. See DecodeBodyLimit.
func DecodeBody(body []byte, contentEncoding string) ([]byte, error) {
	return DecodeBodyLimit(body, contentEncoding, MaxDecodedBytes)
}

// DecodeBodyLimit undoes the Content-Encoding of a complete body. An empty
// encoding or "identity" returns body itself. "gzip" and "x-gzip" are
// gunzipped (concatenated members included); "deflate" is read as zlib and,
// if that fails, as raw deflate, which some servers send instead. A list
// such as "deflate, gzip" is undone from the last coding to the first.
// Names are case-insensitive. An empty body is returned as is for every
// known coding (a 204 or HEAD response may carry the header). A decoded body larger than limit bytes gives
// an error wrapping ErrBodyTooLarge, an unknown coding one wrapping
// ErrUnsupportedEncoding, and corrupt data a decoder error.
func DecodeBodyLimit(body []byte, contentEncoding string, limit int64) ([]byte, error) {
	codings := strings.Split(contentEncoding, ",")
	for i := len(codings) - 1; i >= 0; i-- {
		var err error
		switch c := strings.ToLower(strings.TrimSpace(codings[i])); c {
		case "", "identity":
			continue
		case "gzip", "x-gzip":
			if len(body) > 0 {
				body, err = gunzip(body, limit)
			}
		case "deflate":
			if len(body) > 0 {
				body, err = inflate(body, limit)
			}
		default:
			return nil, fmt.Errorf("%w: %q", ErrUnsupportedEncoding, c)
		}
		if err != nil {
			return nil, err
		}
	}
	return body, nil
}

// gunzip decodes a gzip body.
func gunzip(body []byte, limit int64) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("decode gzip body: %w", err)
	}
	defer zr.Close()
	out, err := readLimited(zr, limit)
	if err != nil {
		return nil, fmt.Errorf("decode gzip body: %w", err)
	}
	return out, nil
}

// inflate decodes a deflate body: zlib-wrapped as RFC 9110 says, else raw.
func inflate(body []byte, limit int64) ([]byte, error) {
	out, zerr := inflateZlib(body, limit)
	if zerr == nil || errors.Is(zerr, ErrBodyTooLarge) {
		return out, zerr
	}
	fr := flate.NewReader(bytes.NewReader(body))
	defer fr.Close()
	out, err := readLimited(fr, limit)
	if err != nil {
		if errors.Is(err, ErrBodyTooLarge) {
			return nil, fmt.Errorf("decode deflate body: %w", err)
		}
		return nil, fmt.Errorf("decode deflate body: not zlib (%v) nor raw deflate: %w", zerr, err)
	}
	return out, nil
}

// inflateZlib decodes a zlib stream.
func inflateZlib(body []byte, limit int64) ([]byte, error) {
	zr, err := zlib.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	out, err := readLimited(zr, limit)
	if err != nil {
		if errors.Is(err, ErrBodyTooLarge) {
			return nil, fmt.Errorf("decode deflate body: %w", err)
		}
		return nil, err
	}
	return out, nil
}

// readLimited reads r to the end, failing once more than limit bytes come.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	limit = min(max(limit, 0), math.MaxInt64-1)
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrBodyTooLarge, limit)
	}
	return buf.Bytes(), nil
}
