package openaiwire

import (
	"errors"
	"testing"
)

func TestParseResponseRefs(t *testing.T) {
	for _, c := range []struct {
		body string
		want ResponseRefs
	}{
		{`{"model":"m","input":"hi"}`, ResponseRefs{}},
		{`{"model":"m","previous_response_id":"resp_1"}`, ResponseRefs{PreviousResponseID: "resp_1"}},
		{`{"previous_response_id":null,"background":null,"store":null,"conversation":null}`, ResponseRefs{}},
		{`{"prev\u0069ous_response_id":"resp_\u0031"}`, ResponseRefs{PreviousResponseID: "resp_1"}},
		{`{"conversation":"conv_1"}`, ResponseRefs{Conversation: true}},
		{`{"conversation":{"id":"conv_1"}}`, ResponseRefs{Conversation: true}},
		{`{"background":true}`, ResponseRefs{Background: true}},
		{`{"background":false,"store":true}`, ResponseRefs{}},
		{`{"store":false}`, ResponseRefs{NotStored: true}},
		{`{"input":{"previous_response_id":"nested"}}`, ResponseRefs{}},
	} {
		got, err := ParseResponseRefs([]byte(c.body))
		if err != nil || got != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.body, got, err, c.want)
		}
	}
	for _, body := range []string{
		`{"previous_response_id":1}`,
		`{"previous_response_id":"a","previous_response_id":"b"}`,
		`{"previous_response_id":"a","previous_respons\u0065_id":"b"}`,
		`{"background":"yes"}`,
		`{"background":false,"background":true}`,
		`{"store":0}`,
		`{"conversation":"a","conversation":"b"}`,
		`[]`,
		`{"previous_response_id":"a"`,
	} {
		if _, err := ParseResponseRefs([]byte(body)); !errors.Is(err, ErrInvalidJSON) {
			t.Errorf("%s: %v, want ErrInvalidJSON", body, err)
		}
	}
}

func TestResponseID(t *testing.T) {
	for body, want := range map[string]string{
		`{"id":"resp_1","object":"response","usage":{"input_tokens":1}}`: "resp_1",
		`{"object":"response","output":[{"id":"msg_1"}],"id":"resp_2"}`:  "resp_2",
		`{"id":"resp_3"}`: "resp_3",
		`{"id":"chatcmpl-1","object":"chat.completion"}`:       "",
		`{"id":1,"object":"response"}`:                         "",
		`{"error":{"message":"x"}}`:                            "",
		`{"id":"resp_1"`:                                       "",
		`"resp_1"`:                                             "",
		`{"id":"r\u0065sp_4","object":"response"}`:             "resp_4",
		`{"object":"response","response":{"id":"resp_inner"}}`: "",
	} {
		if got := ResponseID([]byte(body)); got != want {
			t.Errorf("%s: %q, want %q", body, got, want)
		}
	}
}

func TestStreamFilterResponseID(t *testing.T) {
	stream := "event: response.created\n" +
		`data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_s1","object":"response","status":"in_progress","usage":null}}` + "\n\n" +
		"event: response.output_text.delta\n" +
		`data: {"type":"response.output_text.delta","item_id":"msg_1","delta":"Hi"}` + "\n\n" +
		"event: response.completed\n" +
		`data: {"type":"response.completed","response":{"id":"resp_s1","object":"response","status":"completed","usage":{"input_tokens":3,"output_tokens":1,"total_tokens":4}}}` + "\n\n"
	// split at every position: the id is found however the bytes arrive
	for i := 0; i <= len(stream); i += 7 {
		run := feed(t, false, 0, [][]byte{[]byte(stream[:i]), []byte(stream[i:])}, nil)
		if string(run.out) != stream {
			t.Fatalf("split %d: output changed", i)
		}
		f := NewStreamFilter(false)
		f.Write([]byte(stream[:i]))
		f.Write([]byte(stream[i:]))
		f.Flush()
		if f.ResponseID() != "resp_s1" {
			t.Fatalf("split %d: ResponseID %q", i, f.ResponseID())
		}
	}
	// only response.created: the id is known before the stream ends
	f := NewStreamFilter(false)
	f.Write([]byte(stream[:len("event: response.created\n")+150]))
	if f.ResponseID() != "resp_s1" {
		t.Fatalf("after response.created: %q", f.ResponseID())
	}
	// a chat stream has no response id
	f = NewStreamFilter(false)
	f.Write([]byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[]}` + "\n\n"))
	if f.ResponseID() != "" {
		t.Fatalf("chat stream: %q", f.ResponseID())
	}
}
