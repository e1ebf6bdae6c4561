package caddyproxy

import (
	"errors"
	"fmt"
)

// ErrInvalidJSON is wrapped by every error about a body that is not JSON, not
// the JSON shape expected, or carries a field of the wrong type or range. The
// wrapping error says what was wrong, e.g.
// "invalid json: request body is not a JSON object".
var ErrInvalidJSON = errors.New("invalid json")

// RequestInfo is what the billing handler needs to know about a request
// before it is sent to the provider.
type RequestInfo struct {
	// Model is the "model" member, "" when absent or null.
	Model string
	// Stream is the "stream" member (false when absent or null).
	Stream bool
	// IncludeUsage reports that the client itself set
	// stream_options.include_usage to true.
	IncludeUsage bool
	// MaxTokens is the output limit the client asked for: max_tokens, else
	// max_completion_tokens, else max_output_tokens (Responses API); the
	// first of them that is present and not null wins. 0 when none is set.
	MaxTokens int64
	// PromptChars is the number of Unicode characters in all JSON string
	// values (object keys excluded) anywhere under messages, prompt, input,
	// instructions, system and tools. It is counted on the raw bytes: an
	// escape such as \n or \u00e9 is one character, and values of a key
	// repeated inside those members all count.
	PromptChars int64
	// EstimatedPromptTokens is EstimateTokens(PromptChars) plus
	// MessageOverheadTokens per message.
	EstimatedPromptTokens int64
	// Messages is the number of chat messages (len(messages)), else the
	// number of Responses/embeddings input items (len(input)); a single
	// string input counts as one item. 0 when there are neither.
	Messages int
}

// numPromptFields is the number of names promptFields returns.
const numPromptFields = 6

// promptFields returns the top-level request members whose string values
// make up the prompt.
func promptFields() [numPromptFields]string {
	return [numPromptFields]string{"messages", "prompt", "input", "instructions", "system", "tools"}
}

// Indexes into promptFields of the members that count messages.
const (
	messagesField = 0
	inputField    = 2
)

// requestFields collects the raw values of the request members ParseRequest
// reads; when a member is repeated the last one wins, as in encoding/json.
type requestFields struct {
	model, stream, streamOptions              []byte
	maxTokens, maxCompletionTokens, maxOutput []byte
	prompt                                    [numPromptFields][]byte // same order as promptFields
}

// validObject checks that body is one complete JSON object; what names the
// body in error messages ("request body", "response body").
func validObject(body []byte, what string) error {
	if len(trimSpace(body)) == 0 {
		return fmt.Errorf("%w: %s is empty", ErrInvalidJSON, what)
	}
	if !validJSON(body) {
		return fmt.Errorf("%w: %s is not valid JSON", ErrInvalidJSON, what)
	}
	if kind(body) != '{' {
		return fmt.Errorf("%w: %s is not a JSON object", ErrInvalidJSON, what)
	}
	return nil
}

// ParseRequest reads an OpenAI-compatible request body (chat completions,
// completions, embeddings or Responses API). The body must be exactly one
// JSON object; "model" must be a string, "stream" a boolean,
// "stream_options" an object whose "include_usage" is a boolean, and the max
// token fields non-negative integers, each when present and not null. Every
// error wraps ErrInvalidJSON and names the offending field. Members it does
// not know are ignored, and of a repeated member the last one counts.
func ParseRequest(body []byte) (RequestInfo, error) {
	var info RequestInfo
	if err := validObject(body, "request body"); err != nil {
		return info, err
	}
	var f requestFields
	it, _ := newObjectIter(body)
	for {
		m, more := it.next()
		if !more {
			break
		}
		f.take(m)
	}
	if !it.ok {
		return info, fmt.Errorf("%w: request body is not a JSON object", ErrInvalidJSON)
	}

	if !isNull(f.model) {
		s, ok := stringValue(f.model)
		if !ok {
			return info, fmt.Errorf("%w: model must be a string", ErrInvalidJSON)
		}
		info.Model = s
	}
	var err error
	if info.Stream, err = boolField(f.stream, "stream"); err != nil {
		return info, err
	}
	if !isNull(f.streamOptions) {
		if kind(f.streamOptions) != '{' {
			return info, fmt.Errorf("%w: stream_options must be an object", ErrInvalidJSON)
		}
		inc := lookup(f.streamOptions, "include_usage")
		if info.IncludeUsage, err = boolField(inc, "stream_options.include_usage"); err != nil {
			return info, err
		}
	}
	limits := [...]struct {
		raw  []byte
		name string
	}{
		{f.maxTokens, "max_tokens"},
		{f.maxCompletionTokens, "max_completion_tokens"},
		{f.maxOutput, "max_output_tokens"},
	}
	chosen := false
	for _, l := range limits {
		if isNull(l.raw) {
			continue
		}
		n, problem := parseCount(l.raw)
		if problem != "" {
			return info, fmt.Errorf("%w: %s %s", ErrInvalidJSON, l.name, problem)
		}
		if !chosen {
			info.MaxTokens, chosen = n, true
		}
	}

	for _, v := range f.prompt {
		info.PromptChars += valueChars(v)
	}
	if n, ok := arrayLen(f.prompt[messagesField]); ok {
		info.Messages = n
	} else if in := f.prompt[inputField]; kind(in) == '"' {
		info.Messages = 1
	} else if n, ok := arrayLen(in); ok {
		info.Messages = n
	}
	info.EstimatedPromptTokens = addSat(EstimateTokens(info.PromptChars), int64(info.Messages)*MessageOverheadTokens)
	return info, nil
}

// take records m if it is one of the members ParseRequest reads.
func (f *requestFields) take(m member) {
	switch {
	case keyIs(m.key, "model"):
		f.model = m.val
	case keyIs(m.key, "stream"):
		f.stream = m.val
	case keyIs(m.key, "stream_options"):
		f.streamOptions = m.val
	case keyIs(m.key, "max_tokens"):
		f.maxTokens = m.val
	case keyIs(m.key, "max_completion_tokens"):
		f.maxCompletionTokens = m.val
	case keyIs(m.key, "max_output_tokens"):
		f.maxOutput = m.val
	default:
		for i, name := range promptFields() {
			if keyIs(m.key, name) {
				f.prompt[i] = m.val
				return
			}
		}
	}
}

// boolField reads an optional boolean member (absent or null is false).
func boolField(raw []byte, name string) (bool, error) {
	switch v := trimSpace(raw); string(v) {
	case "", "null", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, fmt.Errorf("%w: %s must be a boolean", ErrInvalidJSON, name)
}
