package openaiwire

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"testing"
)

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zlibbed(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func deflated(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecodeBody(t *testing.T) {
	plain := []byte(chatResponse)
	cases := []struct {
		name, enc string
		body      []byte
	}{
		{"none", "", plain},
		{"identity", "identity", plain},
		{"gzip", "gzip", gzipped(t, plain)},
		{"x-gzip upper case", " X-GZIP ", gzipped(t, plain)},
		{"gzip concatenated members", "gzip", append(gzipped(t, plain[:100]), gzipped(t, plain[100:])...)},
		{"deflate zlib", "deflate", zlibbed(t, plain)},
		{"deflate raw", "deflate", deflated(t, plain)},
		{"two codings", "deflate, gzip", gzipped(t, zlibbed(t, plain))},
		{"identity in list", "gzip, identity", gzipped(t, plain)},
	}
	for _, tc := range cases {
		got, err := DecodeBody(tc.body, tc.enc)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !bytes.Equal(got, plain) {
			t.Errorf("%s: decoded body differs", tc.name)
		}
	}
	for _, enc := range []string{"", "gzip", "deflate"} {
		if got, err := DecodeBody(nil, enc); err != nil || len(got) != 0 {
			t.Errorf("empty body with %q: %q %v", enc, got, err)
		}
	}
}

func TestDecodeBodyErrors(t *testing.T) {
	plain := bytes.Repeat([]byte("a"), 1000)
	for _, enc := range []string{"br", "zstd", "compress", "gzip, br"} {
		_, err := DecodeBody(gzipped(t, plain), enc)
		if !errors.Is(err, ErrUnsupportedEncoding) {
			t.Errorf("%q: %v", enc, err)
		}
	}
	if _, err := DecodeBody([]byte("not gzip at all"), "gzip"); err == nil {
		t.Error("corrupt gzip accepted")
	}
	if _, err := DecodeBody([]byte("\xff\xfe not deflate"), "deflate"); err == nil {
		t.Error("corrupt deflate accepted")
	}
	gz := gzipped(t, plain)
	if _, err := DecodeBody(gz[:len(gz)-6], "gzip"); err == nil {
		t.Error("truncated gzip accepted")
	}

	// Over the cap: exactly the limit is fine, one more byte is not.
	for _, tc := range []struct {
		enc  string
		body []byte
	}{{"gzip", gzipped(t, plain)}, {"deflate", zlibbed(t, plain)}, {"deflate", deflated(t, plain)}} {
		if got, err := DecodeBodyLimit(tc.body, tc.enc, 1000); err != nil || len(got) != 1000 {
			t.Errorf("%s at the limit: %d bytes, %v", tc.enc, len(got), err)
		}
		if _, err := DecodeBodyLimit(tc.body, tc.enc, 999); !errors.Is(err, ErrBodyTooLarge) {
			t.Errorf("%s over the limit: %v", tc.enc, err)
		}
	}
}

// TestDecodeBodyBomb checks the default cap against a gzip bomb: 65 MiB of
// zeros compress to about 64 KiB.
func TestDecodeBodyBomb(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 64 MiB")
	}
	bomb := gzipped(t, make([]byte, MaxDecodedBytes+1<<20))
	if _, err := DecodeBody(bomb, "gzip"); !errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("gzip bomb: %v", err)
	}
}
