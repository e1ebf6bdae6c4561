package openaiwire

import "bytes"

// chunk holds the raw top-level members of one streamed JSON payload that
// the meter looks at: a chat.completion.chunk / text_completion chunk, or a
// Responses API event. Absent members are nil; repeated ones keep the last.
type chunk struct {
	typ      []byte // Responses API event "type"
	model    []byte // chat/completions "model"
	choices  []byte // chat/completions "choices"
	usage    []byte // chat/completions "usage"
	response []byte // Responses API "response" object (lifecycle events)
	delta    []byte // Responses API "delta" (text and argument deltas)
	ev       int    // what kind of payload this is (chatChunk, eventDelta, …)

	// Where the first top-level "usage" member is, for appendWithoutUsage:
	// the index of its key's opening quote, and the index just past the
	// value of the member before it (-1 when it is the first member). Valid
	// only when usage is not nil.
	usageKey, usagePrev int
}

// scanChunk collects the members of the JSON object data (already known to
// be valid JSON); isObj is false when data is not an object.
func scanChunk(data []byte) (c chunk, isObj bool) {
	it, isObj := newObjectIter(data)
	if !isObj {
		return c, false
	}
	prev := -1 // end of the previous member's value
	for {
		m, more := it.next()
		if !more {
			c.ev = eventKindOf(c.typ)
			return c, it.ok
		}
		k := m.key
		if bytes.IndexByte(k, '\\') >= 0 {
			// Escaped key: decode it (rare, allocates).
			s, ok := decodeRawString(k)
			if !ok {
				prev = m.valEnd
				continue
			}
			k = []byte(s)
		}
		switch string(k) {
		case "type":
			c.typ = m.val
		case "model":
			c.model = m.val
		case "choices":
			c.choices = m.val
		case "usage":
			if c.usage == nil {
				c.usageKey, c.usagePrev = m.keyStart, prev
			}
			c.usage = m.val
		case "response":
			c.response = m.val
		case "delta":
			c.delta = m.val
		}
		prev = m.valEnd
	}
}

// Kinds of payloads the meter distinguishes.
const (
	chatChunk      = iota // chat/completions chunk (no Responses API "type")
	eventDelta            // Responses event carrying generated text in "delta"
	eventTerminal         // response.completed, response.incomplete, response.failed
	eventLifecycle        // response.created, response.in_progress, response.queued
	eventOther            // any other Responses API event ("response.*", "error")
)

// eventKindOf classifies a payload by its raw "type" value: payloads
// without one, or with a type that is not a Responses API event, are treated
// as chat chunks.
func eventKindOf(typ []byte) int {
	t := trimSpace(typ)
	if len(t) < 2 || t[0] != '"' || t[len(t)-1] != '"' {
		return chatChunk
	}
	raw := t[1 : len(t)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		s, ok := decodeRawString(raw)
		if !ok {
			return chatChunk
		}
		raw = []byte(s)
	}
	switch string(raw) {
	case "response.output_text.delta",
		"response.refusal.delta",
		"response.function_call_arguments.delta",
		"response.reasoning_text.delta",
		"response.reasoning_summary_text.delta":
		return eventDelta
	case "response.completed", "response.incomplete", "response.failed":
		return eventTerminal
	case "response.created", "response.in_progress", "response.queued":
		return eventLifecycle
	case "error":
		return eventOther
	}
	if bytes.HasPrefix(raw, []byte("response.")) {
		return eventOther
	}
	return chatChunk
}

// isUsageChunk reports whether the chunk is the usage-only chunk a
// chat/completions stream ends with when stream_options.include_usage is
// set: "choices" is an empty array and "usage" is an object.
func (c *chunk) isUsageChunk() bool {
	return isEmptyArray(c.choices) && kind(c.usage) == '{' && c.ev == chatChunk
}

// usageOf returns the usage the chunk carries, if any valid one.
func (c *chunk) usageOf() (Usage, bool) {
	raw := c.usage
	switch c.ev {
	case chatChunk:
	case eventTerminal:
		raw = lookup(c.response, "usage")
	default:
		return Usage{}, false
	}
	u, ok, err := parseUsage(raw)
	if err != nil || !ok {
		return Usage{}, false
	}
	return u, true
}

// generatedChars counts the characters of generated text in the chunk: see
// StreamFilter.StreamedChars for the members it reads.
func (c *chunk) generatedChars() int64 {
	switch c.ev {
	case chatChunk:
	case eventDelta:
		return stringChars(c.delta)
	default:
		return 0
	}
	// Walk the choices array by hand so that each choice object is scanned
	// once (arrayIter would skip over it first to find its end).
	b := c.choices
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return 0
	}
	var n int64
	for i = skipSpace(b, i+1); i < len(b) && b[i] != ']'; {
		if b[i] == '{' {
			it := objectIter{b: b, i: i + 1, first: true, ok: true}
			for {
				m, more := it.next()
				if !more {
					break
				}
				switch {
				case keyIs(m.key, "text"):
					n += stringChars(m.val)
				case keyIs(m.key, "delta"):
					n += deltaChars(m.val)
				}
			}
			if !it.ok {
				return n
			}
			i = it.end()
		} else if i = valueEnd(b, i); i < 0 {
			return n
		}
		if i = skipSpace(b, i); i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return n
}

// deltaChars counts the generated characters in a chat chunk's delta:
// content, reasoning_content, refusal, tool_calls[].function.arguments and
// the legacy function_call.arguments.
func deltaChars(delta []byte) int64 {
	it, isObj := newObjectIter(delta)
	if !isObj {
		return 0
	}
	var n int64
	for {
		m, more := it.next()
		if !more {
			return n
		}
		switch {
		case keyIs(m.key, "content"), keyIs(m.key, "reasoning_content"), keyIs(m.key, "refusal"):
			n += stringChars(m.val)
		case keyIs(m.key, "function_call"):
			n += stringChars(lookup(m.val, "arguments"))
		case keyIs(m.key, "tool_calls"):
			calls, ok := newArrayIter(m.val)
			if !ok {
				continue
			}
			for {
				call, more := calls.next()
				if !more {
					break
				}
				n += stringChars(lookup(lookup(call, "function"), "arguments"))
			}
		}
	}
}

// modelOf returns the model the chunk names: "model" of a chat/completions
// chunk, or response.model of a Responses API lifecycle event.
func (c *chunk) modelOf() string {
	raw := c.model
	switch c.ev {
	case chatChunk:
	case eventTerminal, eventLifecycle:
		raw = lookup(c.response, "model")
	default:
		return ""
	}
	s, _ := stringValue(raw)
	return s
}
