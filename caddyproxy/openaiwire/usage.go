package openaiwire

import "fmt"

// Usage is the token usage a provider reported for one request.
type Usage struct {
	// PromptTokens is usage.prompt_tokens, or usage.input_tokens in
	// Responses API bodies.
	PromptTokens int64
	// CompletionTokens is usage.completion_tokens, or usage.output_tokens in
	// Responses API bodies; 0 for embeddings.
	CompletionTokens int64
	// TotalTokens is usage.total_tokens, or PromptTokens+CompletionTokens
	// when the provider left it out.
	TotalTokens int64
	// CachedTokens is the part of PromptTokens served from the prompt cache:
	// prompt_tokens_details.cached_tokens, input_tokens_details.cached_tokens,
	// or DeepSeek's prompt_cache_hit_tokens.
	CachedTokens int64
	// ReasoningTokens is the part of CompletionTokens spent on reasoning:
	// completion_tokens_details.reasoning_tokens or
	// output_tokens_details.reasoning_tokens.
	ReasoningTokens int64
}

// ParseResponseUsage reads the top-level "usage" object of a complete,
// non-streamed JSON response from /v1/chat/completions, /v1/completions,
// /v1/embeddings or /v1/responses.
//
// ok is false when the body has no usage object, usage is null, or the
// object holds none of prompt_tokens, completion_tokens, input_tokens,
// output_tokens and total_tokens (a body that is valid JSON but not an
// object has no usage either). err wraps ErrInvalidJSON when the body is not
// valid JSON, when usage is not an object, or when a token count it reads
// is negative, fractional, out of range or not a number.
func ParseResponseUsage(body []byte) (u Usage, ok bool, err error) {
	if len(trimSpace(body)) == 0 {
		return Usage{}, false, fmt.Errorf("%w: response body is empty", ErrInvalidJSON)
	}
	if !validJSON(body) {
		return Usage{}, false, fmt.Errorf("%w: response body is not valid JSON", ErrInvalidJSON)
	}
	return parseUsage(lookup(body, "usage"))
}

// ParseChunkUsage reads the usage carried by one server-sent-events data
// payload (the text after "data:", several data lines joined with "\n"): a
// chat or completions chunk with a non-null "usage", or a Responses API
// event of type response.completed, response.incomplete or response.failed
// whose "response" carries a usage object. ok is false for anything else,
// including invalid JSON and usage objects with invalid counts.
func ParseChunkUsage(data []byte) (u Usage, ok bool) {
	if !validJSON(data) {
		return Usage{}, false
	}
	c, isObj := scanChunk(data)
	if !isObj {
		return Usage{}, false
	}
	return c.usageOf()
}

// Token counts parseUsage reads, as indexes into usageFields.
const (
	fPrompt = iota
	fCompletion
	fTotal
	fInput
	fOutput
	fCacheHit
	fPromptDetails
	fInputDetails
	fCompletionDetails
	fOutputDetails
	numUsageFields
)

// usageFields returns the names of the members of a usage object
// parseUsage reads, in the order of the f* constants.
func usageFields() [numUsageFields]string {
	return [numUsageFields]string{
		"prompt_tokens", "completion_tokens", "total_tokens",
		"input_tokens", "output_tokens", "prompt_cache_hit_tokens",
		"prompt_tokens_details", "input_tokens_details",
		"completion_tokens_details", "output_tokens_details",
	}
}

// parseUsage reads a raw usage value; see ParseResponseUsage for the rules.
func parseUsage(raw []byte) (Usage, bool, error) {
	if isNull(raw) {
		return Usage{}, false, nil
	}
	it, isObj := newObjectIter(raw)
	if !isObj {
		return Usage{}, false, fmt.Errorf("%w: usage is not an object", ErrInvalidJSON)
	}
	// Collect the raw members first: of a repeated member the last counts.
	names := usageFields()
	var vals [numUsageFields][]byte
	for {
		m, more := it.next()
		if !more {
			break
		}
		for i, name := range names {
			if keyIs(m.key, name) {
				vals[i] = m.val
				break
			}
		}
	}
	if !it.ok {
		return Usage{}, false, fmt.Errorf("%w: usage is not an object", ErrInvalidJSON)
	}

	var (
		n   [numUsageFields]int64
		has [numUsageFields]bool
	)
	for i := range fPromptDetails {
		if isNull(vals[i]) {
			continue
		}
		v, problem := parseCount(vals[i])
		if problem != "" {
			return Usage{}, false, fmt.Errorf("%w: usage.%s %s", ErrInvalidJSON, names[i], problem)
		}
		n[i], has[i] = v, true
	}
	// The detail objects: the first that has the count wins.
	cached, hasCached, err := detailCount(vals[fPromptDetails], vals[fInputDetails], fPromptDetails, "cached_tokens")
	if err != nil {
		return Usage{}, false, err
	}
	reasoning, _, err := detailCount(vals[fCompletionDetails], vals[fOutputDetails], fCompletionDetails, "reasoning_tokens")
	if err != nil {
		return Usage{}, false, err
	}

	u := Usage{
		PromptTokens:     n[fPrompt],
		CompletionTokens: n[fCompletion],
		TotalTokens:      n[fTotal],
		CachedTokens:     cached,
		ReasoningTokens:  reasoning,
	}
	if !has[fPrompt] && has[fInput] {
		u.PromptTokens, has[fPrompt] = n[fInput], true
	}
	if !has[fCompletion] && has[fOutput] {
		u.CompletionTokens, has[fCompletion] = n[fOutput], true
	}
	if !hasCached && has[fCacheHit] {
		u.CachedTokens = n[fCacheHit]
	}
	if !has[fPrompt] && !has[fCompletion] && !has[fTotal] {
		return Usage{}, false, nil
	}
	if !has[fTotal] {
		u.TotalTokens = addSat(u.PromptTokens, u.CompletionTokens)
	}
	return u, true, nil
}

// detailCount reads the member leaf of the first of two detail objects
// (chat style, then Responses style) that has it; first is the index in
// usageFields of the first object, first+1 that of the second.
func detailCount(a, b []byte, first int, leaf string) (int64, bool, error) {
	for i, obj := range [2][]byte{a, b} {
		if isNull(obj) {
			continue
		}
		name := usageFields()[first+i]
		if kind(obj) != '{' {
			return 0, false, fmt.Errorf("%w: usage.%s is not an object", ErrInvalidJSON, name)
		}
		v := lookup(obj, leaf)
		if isNull(v) {
			continue
		}
		n, problem := parseCount(v)
		if problem != "" {
			return 0, false, fmt.Errorf("%w: usage.%s.%s %s", ErrInvalidJSON, name, leaf, problem)
		}
		return n, true, nil
	}
	return 0, false, nil
}
