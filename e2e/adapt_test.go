package e2e

// Golden tests of the Caddyfile syntax, in the style of Caddy's own
// caddytest/integration/caddyfile_adapt tests.
//
// Each testdata/caddyfile_adapt/*.caddyfiletest file holds a Caddyfile, a
// line of ten dashes (----------), then what the Caddyfile adapter must make
// of it:
//
//   - JSON (the half starts with "{"): the adapted config. It is compared
//     as data, not as text, so key order and indentation do not matter; it
//     is stored pretty-printed with tabs so that a reviewer can read it.
//   - anything else: a substring of the error the adapter must return,
//     usually the message and ", at Caddyfile:<line>".
//
// The Caddyfile half must be formatted as caddy fmt would (the adapter warns
// otherwise, and a warning fails the test).
//
// To write the JSON halves after a deliberate change of the syntax, or to
// fill in a new file whose expected half is empty:
//
//	go test ./e2e -run TestCaddyfileAdapt -update
//
// (or UPDATE_GOLDEN=1 go test ./e2e -run TestCaddyfileAdapt). Error halves
// are never rewritten. Then read every file git shows as changed: a golden
// file only tests something if a person checked that it says what the
// Caddyfile means.

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

var updateGolden = flag.Bool("update", false, "rewrite the JSON half of testdata/caddyfile_adapt/*.caddyfiletest")

const goldenSeparator = "\n----------\n"

func TestCaddyfileAdapt(t *testing.T) {
	update := *updateGolden || os.Getenv("UPDATE_GOLDEN") == "1"
	files, err := filepath.Glob(filepath.Join("testdata", "caddyfile_adapt", "*.caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files in testdata/caddyfile_adapt")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddyfiletest"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			text := strings.ReplaceAll(string(raw), "\r\n", "\n")
			caddyfile, expected, ok := strings.Cut(text, goldenSeparator)
			if !ok {
				t.Fatalf("no %q line separating the Caddyfile from the expected result", strings.TrimSpace(goldenSeparator))
			}
			caddyfile = strings.TrimSpace(caddyfile) + "\n"
			expected = strings.TrimSpace(expected)

			adapter := caddyconfig.GetAdapter("caddyfile")
			got, warnings, adaptErr := adapter.Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})

			wantJSON := expected == "" || strings.HasPrefix(expected, "{")
			if !wantJSON {
				if adaptErr == nil {
					t.Fatalf("adapted without error; want an error containing %q", expected)
				}
				if !strings.Contains(adaptErr.Error(), expected) {
					t.Fatalf("error %q\ndoes not contain %q", adaptErr, expected)
				}
				return
			}

			if adaptErr != nil {
				t.Fatalf("adapting: %v", adaptErr)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s:%d: %s: %s", w.File, w.Line, w.Directive, w.Message)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, got, "", "\t"); err != nil {
				t.Fatalf("the adapter returned invalid JSON: %v\n%s", err, got)
			}

			if update {
				out := caddyfile + strings.TrimPrefix(goldenSeparator, "\n") + pretty.String() + "\n"
				if out != text {
					if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
						t.Fatal(err)
					}
					t.Logf("rewrote %s: read it before committing", file)
				}
				return
			}
			if expected == "" {
				t.Fatalf("the expected half is empty; run with -update to fill it in, then read it. Adapted:\n%s", pretty.String())
			}

			var gotV, wantV any
			if err := json.Unmarshal(got, &gotV); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(expected), &wantV); err != nil {
				t.Fatalf("the expected half is not JSON: %v", err)
			}
			if !reflect.DeepEqual(gotV, wantV) {
				t.Errorf("adapted config differs from the golden file.\ngot:\n%s\nwant:\n%s\n(run with -update if the change is deliberate, then read the file)",
					pretty.String(), expected)
			}
		})
	}
}
