package openaiwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"testing"
)

func TestSetOutputLimit(t *testing.T) {
	cases := []struct {
		name, member, body, want string
		limit                    int64
	}{
		{"chat absent", MemberMaxCompletionTokens, `{"model":"m","messages":[]}`, `{"model":"m","messages":[],"max_completion_tokens":166}`, 166},
		{"empty object", MemberMaxTokens, "{ \n }", "{\"max_tokens\":7 \n }", 7},
		{"null replaced in place", MemberMaxOutputTokens, `{"max_output_tokens":null,"input":"hi"}`, `{"max_output_tokens":16,"input":"hi"}`, 16},
		{"keeps formatting", MemberMaxTokens, "{\n  \"prompt\": \"\\u00e9 <b>\",\n  \"temperature\": 1.0e0\n}",
			"{\n  \"prompt\": \"\\u00e9 <b>\",\n  \"temperature\": 1.0e0,\"max_tokens\":3\n}", 3},
		{"duplicates collapsed", MemberMaxTokens, `{"max_tokens":null,"model":"m","max_tokens":null}`, `{"model":"m","max_tokens":9}`, 9},
		{"other limits untouched", MemberMaxCompletionTokens, `{"max_tokens":null,"n":2}`, `{"max_tokens":null,"n":2,"max_completion_tokens":5}`, 5},
		{"escaped key", MemberMaxTokens, `{"max\u005ftokens":null}`, `{"max\u005ftokens":1}`, 1},
	}
	for _, tc := range cases {
		got, err := SetOutputLimit([]byte(tc.body), tc.member, tc.limit)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
		if info, err := ParseRequest(got); err != nil || info.MaxTokens != tc.limit {
			t.Errorf("%s: ParseRequest after SetOutputLimit: %+v %v", tc.name, info, err)
		}
	}
}

func TestSetOutputLimitErrors(t *testing.T) {
	if _, err := SetOutputLimit([]byte(`[1]`), MemberMaxTokens, 1); !errors.Is(err, ErrInvalidJSON) {
		t.Errorf("array body: %v, want ErrInvalidJSON", err)
	}
	if _, err := SetOutputLimit([]byte(`{"a":`), MemberMaxTokens, 1); !errors.Is(err, ErrInvalidJSON) {
		t.Errorf("truncated body: %v, want ErrInvalidJSON", err)
	}
	if _, err := SetOutputLimit([]byte(`{}`), "n", 1); err == nil {
		t.Error("member n accepted")
	}
	for _, limit := range []int64{0, -1} {
		if _, err := SetOutputLimit([]byte(`{}`), MemberMaxTokens, limit); err == nil {
			t.Errorf("limit %d accepted", limit)
		}
	}
}

func TestDescribeOutput(t *testing.T) {
	cases := []struct{ body, fallback, want string }{
		{`{"n":128,"max_tokens":16384}`, "default_max_tokens=4096", "n=128 × max_tokens=16384"},
		{`{"max_completion_tokens":10,"max_tokens":5}`, "", "max_completion_tokens=10"},
		{`{"max_output_tokens":20}`, "", "max_output_tokens=20"},
		{`{"prompt":["a","b","c"],"n":2,"best_of":4,"max_tokens":100}`, "", "3 prompts × best_of=4 × max_tokens=100"},
		{`{"n":1,"max_tokens":null}`, "default_max_tokens=4096", "default_max_tokens=4096"},
		{`{"n":3}`, "default_max_tokens=8", "n=3 × default_max_tokens=8"},
		{`not json`, "default_max_tokens=8", "default_max_tokens=8"},
	}
	for _, tc := range cases {
		if got := DescribeOutput([]byte(tc.body), tc.fallback); got != tc.want {
			t.Errorf("DescribeOutput(%s) = %q, want %q", tc.body, got, tc.want)
		}
	}
}

// FuzzSetOutputLimit checks on any body that SetOutputLimit either refuses
// a body that is not one JSON object, or returns one in which only the
// member written changed: the decoded object equals the input's with that
// member set, the bytes before its first occurrence are unchanged, and
// ParseRequest sees the new limit (or a larger one set in another member)
// and nothing else changed.
func FuzzSetOutputLimit(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte, which uint8, limit int64) {
		member := [...]string{MemberMaxCompletionTokens, MemberMaxTokens, MemberMaxOutputTokens}[which%3]
		limit = max(1, limit&(1<<40-1))
		got, err := SetOutputLimit(body, member, limit)
		if err != nil {
			if validObject(body, "body") == nil {
				t.Fatalf("SetOutputLimit(%q) refused a JSON object: %v", body, err)
			}
			if !errors.Is(err, ErrInvalidJSON) {
				t.Fatalf("error %v does not wrap ErrInvalidJSON", err)
			}
			return
		}
		var before, after map[string]any
		dec := func(b []byte, v *map[string]any) {
			d := json.NewDecoder(bytes.NewReader(b))
			d.UseNumber()
			if err := d.Decode(v); err != nil {
				t.Fatalf("decoding %q: %v", b, err)
			}
		}
		dec(body, &before)
		dec(got, &after)
		before[member] = json.Number(strconv.FormatInt(limit, 10))
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("SetOutputLimit(%q, %s, %d) = %q changed more than %s", body, member, limit, got, member)
		}
		if i := bytes.Index(body, []byte(`"`+member+`"`)); i >= 0 && !bytes.Equal(got[:i], body[:i]) {
			t.Fatalf("SetOutputLimit(%q) = %q changed bytes before the member", body, got)
		}
		info, perr := ParseRequest(body)
		if perr != nil {
			return
		}
		after2, err := ParseRequest(got)
		if err != nil {
			t.Fatalf("ParseRequest(%q) after SetOutputLimit: %v", got, err)
		}
		if after2.MaxTokens < limit {
			t.Fatalf("ParseRequest(%q).MaxTokens = %d, want at least %d", got, after2.MaxTokens, limit)
		}
		info.MaxTokens = after2.MaxTokens
		if after2 != info {
			t.Fatalf("SetOutputLimit(%q) changed more than the limit: %+v vs %+v", body, after2, info)
		}
	})
}
