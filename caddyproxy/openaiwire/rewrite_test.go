package openaiwire

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestInjectIncludeUsage(t *testing.T) {
	cases := []struct {
		name, body, want string
	}{
		{"absent", `{"model":"m","stream":true}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`},
		{"empty object", `{}`, `{"stream_options":{"include_usage":true}}`},
		{"empty object with space", "{ \n }", "{\"stream_options\":{\"include_usage\":true} \n }"},
		{"null", `{"stream_options":null,"stream":true}`, `{"stream_options":{"include_usage":true},"stream":true}`},
		{"false", `{"stream_options":{"include_usage":false}}`, `{"stream_options":{"include_usage":true}}`},
		{"keeps other members", `{"stream":true,"stream_options":{"continuous_usage_stats":true, "x":[1, 2]}}`,
			`{"stream":true,"stream_options":{"continuous_usage_stats":true, "x":[1, 2],"include_usage":true}}`},
		{"empty stream_options", `{"stream_options":{}}`, `{"stream_options":{"include_usage":true}}`},
		{"keeps formatting", "{\n  \"messages\": [ {\"role\": \"user\", \"content\": \"<b>&amp;</b> \\u00e9\"} ],\n  \"temperature\": 1.0e0\n}",
			"{\n  \"messages\": [ {\"role\": \"user\", \"content\": \"<b>&amp;</b> \\u00e9\"} ],\n  \"temperature\": 1.0e0,\"stream_options\":{\"include_usage\":true}\n}"},
		{"duplicates collapsed", `{"stream_options":{"a":1},"model":"m","stream_options":{"include_usage":false,"include_usage":null}}`,
			`{"model":"m","stream_options":{"include_usage":true}}`},
		{"escaped key", `{"stream\u005foptions":{"b":2}}`, `{"stream\u005foptions":{"b":2,"include_usage":true}}`},
	}
	for _, tc := range cases {
		got, err := InjectIncludeUsage([]byte(tc.body))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
		info, err := ParseRequest(got)
		if err != nil || !info.IncludeUsage {
			t.Errorf("%s: ParseRequest after inject: %+v %v", tc.name, info, err)
		}
	}
}

// TestInjectIncludeUsageRoundTrip checks that only include_usage changes in
// the decoded request.
func TestInjectIncludeUsageRoundTrip(t *testing.T) {
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_obfuscation":false},"n":1,"logit_bias":{"50256":-100}}`)
	got, err := InjectIncludeUsage(body)
	if err != nil {
		t.Fatal(err)
	}
	var before, after map[string]any
	if err := json.Unmarshal(body, &before); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &after); err != nil {
		t.Fatal(err)
	}
	before["stream_options"].(map[string]any)["include_usage"] = true
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("decoded bodies differ:\n%v\n%v", before, after)
	}
	info, err := ParseRequest(got)
	if err != nil || !info.IncludeUsage || !info.Stream || info.Model != "gpt-4o" {
		t.Fatalf("ParseRequest: %+v %v", info, err)
	}
	before1, _ := ParseRequest(body)
	before1.IncludeUsage = true
	if info != before1 {
		t.Fatalf("ParseRequest changed beyond IncludeUsage: %+v vs %+v", info, before1)
	}
}

func TestRewriteModel(t *testing.T) {
	cases := []struct {
		name, body, model, want string
	}{
		{"replace", `{"model":"alias","stream":true}`, "gpt-4o-2024-08-06", `{"model":"gpt-4o-2024-08-06","stream":true}`},
		{"replace non-string", `{"model":5}`, "m", `{"model":"m"}`},
		{"add", `{"messages":[]}`, "m", `{"messages":[],"model":"m"}`},
		{"add to empty", `{}`, "m", `{"model":"m"}`},
		{"quote", `{"model":"a"}`, `we"ird\`, `{"model":"we\"ird\\"}`},
		{"duplicates", `{"model":"cheap", "x":1, "model":"expensive"}`, "m", `{"x":1, "model":"m"}`},
		{"space kept", " { \"model\" : \"a\" , \"b\" : [ 1 ] } ", "z", ` { "model" : "z" , "b" : [ 1 ] } `},
	}
	for _, tc := range cases {
		got, err := RewriteModel([]byte(tc.body), tc.model)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
		if info, err := ParseRequest(got); err != nil || info.Model != tc.model {
			t.Errorf("%s: ParseRequest after rewrite: %+v %v", tc.name, info, err)
		}
	}
}

func TestRewriteErrors(t *testing.T) {
	for _, body := range []string{``, `[]`, `{"a":1`, `{"a":1}x`, `"s"`} {
		if _, err := InjectIncludeUsage([]byte(body)); !errors.Is(err, ErrInvalidJSON) {
			t.Errorf("InjectIncludeUsage(%q): %v", body, err)
		}
		if _, err := RewriteModel([]byte(body), "m"); !errors.Is(err, ErrInvalidJSON) {
			t.Errorf("RewriteModel(%q): %v", body, err)
		}
	}
	for _, body := range []string{`{"stream_options":true}`, `{"stream_options":"x"}`, `{"stream_options":[{}]}`, `{"stream_options":1}`} {
		if _, err := InjectIncludeUsage([]byte(body)); !errors.Is(err, ErrInvalidJSON) {
			t.Errorf("InjectIncludeUsage(%q): %v", body, err)
		}
	}
}
