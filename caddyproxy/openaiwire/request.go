package openaiwire

import (
	"errors"
	"fmt"
	"strings"
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
	// MaxTokens is the output limit the client asked for: the largest of
	// max_tokens, max_completion_tokens and max_output_tokens (Responses
	// API) that are present and not null, since providers differ on which
	// one wins when a request sets several (vLLM takes
	// max_completion_tokens over max_tokens). 0 when none is set.
	MaxTokens int64
	// PromptChars is the number of Unicode characters in all JSON string
	// values (object keys excluded) anywhere under messages, prompt, input,
	// instructions, system and tools. It is counted on the raw bytes: an
	// escape such as \n or \u00e9 is one character, and values of a key
	// repeated inside those members all count.
	PromptChars int64
	// EstimatedPromptTokens is EstimateTokens(PromptChars) plus
	// MessageOverheadTokens per message, plus one token per integer of a
	// prompt or input given as token ids (a list of integers, or a list of
	// such lists).
	EstimatedPromptTokens int64
	// Messages is the number of chat messages (len(messages)), else the
	// number of Responses/embeddings input items (len(input)); a single
	// string input counts as one item. 0 when there are neither.
	Messages int
	// Completions is how many completions the request asks the provider to
	// generate, each up to MaxTokens: n (chat and completions), or best_of
	// when it is larger (completions generate best_of and return the best
	// n), times the number of prompts of a /v1/completions batch (a prompt
	// that is a list of strings or of token lists). At least 1.
	Completions int64
}

// The top-level request members ParseRequest reads, as indexes into
// requestMembers. Those from mMessages on are the prompt members: their
// string values make up the prompt.
const (
	mModel = iota
	mStream
	mStreamOptions
	mMaxTokens
	mMaxCompletionTokens
	mMaxOutputTokens
	mN
	mBestOf
	mMessages
	mPrompt
	mInput
	mInstructions
	mSystem
	mTools
	numMembers
)

// requestMembers returns the names of the members ParseRequest reads, in
// the order of the m* constants.
func requestMembers() [numMembers]string {
	return [numMembers]string{"model", "stream", "stream_options", "max_tokens", "max_completion_tokens",
		"max_output_tokens", "n", "best_of", "messages", "prompt", "input", "instructions", "system", "tools"}
}

// promptFields returns the names of the prompt members.
func promptFields() []string {
	names := requestMembers()
	return names[mMessages:]
}

// requestFields holds the raw values of the request members ParseRequest
// reads, by m* index (nil when absent). A body that repeats one of them is
// refused: JSON parsers disagree on which copy counts (encoding/json takes
// the last, others the first), so the gateway could bill or route by one
// model while the provider serves another.
type requestFields [numMembers][]byte

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
// token fields, "n" and "best_of" non-negative integers, each when present
// and not null. A member it reads may appear only once (in stream_options,
// include_usage too). Every error wraps ErrInvalidJSON and names the
// offending field. Members it does not know are ignored.
func ParseRequest(body []byte) (RequestInfo, error) {
	var info RequestInfo
	if err := validObject(body, "request body"); err != nil {
		return info, err
	}
	var f requestFields
	names := requestMembers()
	var variant error // reported after repeated members
	it, _ := newObjectIter(body)
	for {
		m, more := it.next()
		if !more {
			break
		}
		if name, dup := f.take(m); dup {
			return info, fmt.Errorf("%w: member %q appears more than once", ErrInvalidJSON, name)
		}
		if key, name, ok := caseVariant(m.key, names[:]); ok && variant == nil {
			variant = fmt.Errorf("%w: member %q differs from %q only in letter case (parsers disagree on whether they are the same member)", ErrInvalidJSON, key, name)
		}
	}
	if !it.ok {
		return info, fmt.Errorf("%w: request body is not a JSON object", ErrInvalidJSON)
	}
	if variant != nil {
		return info, variant
	}

	if !isNull(f[mModel]) {
		s, ok := stringValue(f[mModel])
		if !ok {
			return info, fmt.Errorf("%w: model must be a string", ErrInvalidJSON)
		}
		info.Model = s
	}
	var err error
	if info.Stream, err = boolField(f[mStream], "stream"); err != nil {
		return info, err
	}
	if opts := f[mStreamOptions]; !isNull(opts) {
		if kind(opts) != '{' {
			return info, fmt.Errorf("%w: stream_options must be an object", ErrInvalidJSON)
		}
		inc, n := lookupCount(opts, "include_usage")
		if n > 1 {
			return info, fmt.Errorf("%w: member %q appears more than once", ErrInvalidJSON, "stream_options.include_usage")
		}
		if info.IncludeUsage, err = boolField(inc, "stream_options.include_usage"); err != nil {
			return info, err
		}
	}
	if info.MaxTokens, err = f.largestCount(0, mMaxTokens, mMaxCompletionTokens, mMaxOutputTokens); err != nil {
		return info, err
	}
	if info.Completions, err = f.largestCount(1, mN, mBestOf); err != nil {
		return info, err
	}
	info.Completions = mulSat(info.Completions, int64(promptCount(f[mPrompt])))

	for _, v := range f[mMessages:] {
		info.PromptChars += valueChars(v)
	}
	idTokens := addSat(tokenIDs(f[mPrompt]), tokenIDs(f[mInput]))
	if n, ok := arrayLen(f[mMessages]); ok {
		info.Messages = n
	} else if in := f[mInput]; kind(in) == '"' {
		info.Messages = 1
	} else if n, ok := arrayLen(in); ok {
		info.Messages = n
	}
	info.EstimatedPromptTokens = addSat(addSat(EstimateTokens(info.PromptChars), int64(info.Messages)*MessageOverheadTokens), idTokens)
	return info, nil
}

// largestCount reads the optional count members at the indexes given
// (absent or null ones are skipped) and returns the largest of them and
// floor.
func (f *requestFields) largestCount(floor int64, members ...int) (int64, error) {
	n := floor
	for _, i := range members {
		if isNull(f[i]) {
			continue
		}
		k, problem := parseCount(f[i])
		if problem != "" {
			return 0, fmt.Errorf("%w: %s %s", ErrInvalidJSON, requestMembers()[i], problem)
		}
		n = max(n, k)
	}
	return n, nil
}

// promptCount is the number of prompts of a /v1/completions "prompt": the
// length of a list of strings or of token lists, else 1 (a string, a list of
// token ids, an empty list, or no prompt).
func promptCount(v []byte) int {
	it, ok := newArrayIter(v)
	if !ok {
		return 1
	}
	n := 0
	for {
		e, more := it.next()
		if !more {
			break
		}
		if k := kind(e); n == 0 && k != '"' && k != '[' {
			return 1 // token ids
		}
		n++
	}
	return max(n, 1)
}

// tokenIDs counts the integers of a prompt or input given as token ids: a
// list of numbers, or a list whose elements are lists of numbers. Anything
// else counts 0 (its text is counted by valueChars).
func tokenIDs(v []byte) int64 {
	it, ok := newArrayIter(v)
	if !ok {
		return 0
	}
	var n int64
	for {
		e, more := it.next()
		if !more {
			return n
		}
		switch k := kind(e); {
		case k == '-' || (k >= '0' && k <= '9'):
			n++
		case k == '[':
			if inner, ok := arrayLen(e); ok {
				n += int64(inner)
			}
		}
	}
}

// take records m if it is one of the members ParseRequest reads; dup
// reports that it was seen before, and name is then its name.
func (f *requestFields) take(m member) (name string, dup bool) {
	for i, name := range requestMembers() {
		if keyIs(m.key, name) {
			if f[i] != nil {
				return name, true
			}
			f[i] = m.val
			return "", false
		}
	}
	return "", false
}

// caseVariant reports a key that is not one of the members ParseRequest
// reads but equals one of them in another letter case ("Model",
// "MAX_TOKENS", or with the Kelvin sign for a k): encoding/json, which
// many providers use, matches member names that way, so such a key could
// set the model or limit the provider uses behind the gateway's back.
func caseVariant(rawKey []byte, names []string) (key, name string, ok bool) {
	for _, n := range names {
		if len(rawKey) == len(n) && string(rawKey) == n {
			return "", "", false
		}
	}
	k, decoded := decodeRawString(rawKey)
	if !decoded {
		return "", "", false
	}
	for _, n := range names {
		if k != n && strings.EqualFold(k, n) {
			return k, n, true
		}
	}
	return "", "", false
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
