package openaiwire

import "strings"

// Payloads in the shapes OpenAI documents for each endpoint. Streams use the
// documented framing: chat.completion.chunk objects with "usage":null in
// normal chunks and a final "choices":[] usage chunk when include_usage is
// set, and Responses API events announced by an "event:" line.

const chatRequest = `{
  "model": "gpt-4o-mini",
  "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Héllo! 👋 Tell me a joke."}
  ],
  "temperature": 0.7,
  "max_tokens": 256,
  "stream": true,
  "stream_options": {"include_usage": true}
}`

// chatRequestChars is what PromptChars must be for chatRequest:
// "system" + "You are a helpful assistant." + "user" + "Héllo! 👋 Tell me a joke."
const chatRequestChars = 6 + 28 + 4 + 24

const chatResponse = `{
  "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "gpt-4o-2024-08-06",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "The image shows a wooden boardwalk path running through a lush green field.",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 1117,
    "completion_tokens": 46,
    "total_tokens": 1163,
    "prompt_tokens_details": {
      "cached_tokens": 1024,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 12,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}`

const completionsResponse = `{
  "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
  "object": "text_completion",
  "created": 1589478378,
  "model": "gpt-3.5-turbo-instruct",
  "system_fingerprint": "fp_44709d6fcb",
  "choices": [
    {
      "text": "\n\nThis is indeed a test",
      "index": 0,
      "logprobs": null,
      "finish_reason": "length"
    }
  ],
  "usage": {
    "prompt_tokens": 5,
    "completion_tokens": 7,
    "total_tokens": 12
  }
}`

const embeddingsResponse = `{
  "object": "list",
  "data": [
    {
      "object": "embedding",
      "embedding": [0.0023064255, -0.009327292, -0.0028842222, 0.0154231],
      "index": 0
    }
  ],
  "model": "text-embedding-3-small",
  "usage": {
    "prompt_tokens": 8,
    "total_tokens": 8
  }
}`

const responsesResponse = `{
  "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
  "object": "response",
  "created_at": 1741476542,
  "status": "completed",
  "error": null,
  "incomplete_details": null,
  "instructions": null,
  "max_output_tokens": null,
  "model": "gpt-4.1-2025-04-14",
  "output": [
    {
      "type": "message",
      "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
      "status": "completed",
      "role": "assistant",
      "content": [
        {
          "type": "output_text",
          "text": "In a peaceful grove beneath a silver moon, a unicorn named Lumina discovered a hidden pool.",
          "annotations": []
        }
      ]
    }
  ],
  "parallel_tool_calls": true,
  "previous_response_id": null,
  "reasoning": {"effort": null, "summary": null},
  "store": true,
  "temperature": 1.0,
  "text": {"format": {"type": "text"}},
  "tool_choice": "auto",
  "tools": [],
  "top_p": 1.0,
  "truncation": "disabled",
  "usage": {
    "input_tokens": 36,
    "input_tokens_details": {"cached_tokens": 4},
    "output_tokens": 87,
    "output_tokens_details": {"reasoning_tokens": 2},
    "total_tokens": 123
  },
  "user": null,
  "metadata": {}
}`

// mkChatChunk builds one chat.completion.chunk data payload.
func mkChatChunk(choices, usage string) string {
	return `{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_eb9dce56a8","choices":` + choices + `,"usage":` + usage + `}`
}

const chatUsage = `{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}`

// chatUsageEvent is the usage-only event of chatStream.
var chatUsageEvent = "data: " + mkChatChunk(`[]`, chatUsage) + "\n\n"

// chatStreamBody is chatStream without its usage event and [DONE].
var chatStreamBody = "data: " + mkChatChunk(`[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]`, `null`) + "\n\n" +
	"data: " + mkChatChunk(`[{"index":0,"delta":{"content":"Héllo"},"logprobs":null,"finish_reason":null}]`, `null`) + "\n\n" +
	"data: " + mkChatChunk(`[{"index":0,"delta":{"content":" 👋\n"},"logprobs":null,"finish_reason":null}]`, `null`) + "\n\n" +
	"data: " + mkChatChunk(`[{"index":0,"delta":{"content":"How can I help \u00e9?"},"logprobs":null,"finish_reason":null}]`, `null`) + "\n\n" +
	"data: " + mkChatChunk(`[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]`, `null`) + "\n\n"

// chatStream is a complete chat completions stream with include_usage set.
var chatStream = chatStreamBody + chatUsageEvent + "data: [DONE]\n\n"

// chatStreamChars: "Héllo" (5) + " 👋\n" (3, the \n is an escape) +
// "How can I help \u00e9?" (17).
const chatStreamChars = 5 + 3 + 17

var chatStreamUsage = Usage{PromptTokens: 19, CompletionTokens: 10, TotalTokens: 29}

// toolCallStream streams a tool call (arguments split over chunks), with
// a reasoning_content delta as DeepSeek and vLLM send.
var toolCallStream = "data: " + mkChatChunk(`[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":"Need weather."},"logprobs":null,"finish_reason":null}]`, `null`) + "\n\n" +
	"data: " + mkChatChunk(`[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}]`, `null`) + "\n\n" +
	"data: " + mkChatChunk(`[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"location\":"}}]},"logprobs":null,"finish_reason":null}]`, `null`) + "\n\n" +
	"data: " + mkChatChunk(`[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"logprobs":null,"finish_reason":null}]`, `null`) + "\n\n" +
	"data: " + mkChatChunk(`[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]`, `null`) + "\n\n" +
	"data: " + mkChatChunk(`[]`, `{"prompt_tokens":80,"completion_tokens":17,"total_tokens":97,"prompt_tokens_details":{"cached_tokens":64},"completion_tokens_details":{"reasoning_tokens":5}}`) + "\n\n" +
	"data: [DONE]\n\n"

// toolCallStreamChars: "Need weather." (13) + `{"location":` (12) + `"Paris"}` (8).
const toolCallStreamChars = 13 + 12 + 8

// completionsStream is a /v1/completions stream with include_usage set.
var completionsStream = `data: {"id":"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe","object":"text_completion","created":1690759702,"choices":[{"text":"This","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct","usage":null}

data: {"id":"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe","object":"text_completion","created":1690759702,"choices":[{"text":" is a test","index":0,"logprobs":null,"finish_reason":"length"}],"model":"gpt-3.5-turbo-instruct","usage":null}

data: {"id":"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe","object":"text_completion","created":1690759702,"choices":[],"model":"gpt-3.5-turbo-instruct","usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}

data: [DONE]

`

// responsesObject builds the "response" object of a Responses API
// lifecycle event.
func responsesObject(status, output, usage string) string {
	return `{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","created_at":1741290958,"status":"` + status + `","error":null,"incomplete_details":null,"instructions":"You are a helpful assistant.","max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":` + output + `,"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":` + usage + `,"user":null,"metadata":{}}`
}

// responsesStream is a Responses API stream in the documented format.
var responsesStream = "event: response.created\n" +
	`data: {"type":"response.created","sequence_number":0,"response":` + responsesObject("in_progress", "[]", "null") + "}\n\n" +
	"event: response.in_progress\n" +
	`data: {"type":"response.in_progress","sequence_number":1,"response":` + responsesObject("in_progress", "[]", "null") + "}\n\n" +
	"event: response.output_item.added\n" +
	`data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"in_progress","role":"assistant","content":[]}}` + "\n\n" +
	"event: response.content_part.added\n" +
	`data: {"type":"response.content_part.added","sequence_number":3,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}}` + "\n\n" +
	"event: response.output_text.delta\n" +
	`data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"delta":"Hi"}` + "\n\n" +
	"event: response.output_text.delta\n" +
	`data: {"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"delta":" there, ünïcødé!"}` + "\n\n" +
	"event: response.output_text.done\n" +
	`data: {"type":"response.output_text.done","sequence_number":6,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"text":"Hi there, ünïcødé!"}` + "\n\n" +
	"event: response.content_part.done\n" +
	`data: {"type":"response.content_part.done","sequence_number":7,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"part":{"type":"output_text","text":"Hi there, ünïcødé!","annotations":[]}}` + "\n\n" +
	"event: response.output_item.done\n" +
	`data: {"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi there, ünïcødé!","annotations":[]}]}}` + "\n\n" +
	"event: response.completed\n" +
	`data: {"type":"response.completed","sequence_number":9,"response":` + responsesObject("completed",
	`[{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi there, ünïcødé!","annotations":[]}]}]`,
	`{"input_tokens":37,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48}`) + "}\n\n"

// responsesStreamChars: "Hi" + " there, ünïcødé!".
const responsesStreamChars = 2 + 16

var responsesStreamUsage = Usage{PromptTokens: 37, CompletionTokens: 11, TotalTokens: 48}

// crlf rewrites a stream's line endings to CRLF.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// crOnly rewrites a stream's line endings to a lone CR.
func crOnly(s string) string { return strings.ReplaceAll(s, "\n", "\r") }
