package openaiwire

import "bytes"

// MaxLineBytes bounds what a StreamFilter buffers: one line, the joined data
// of one event, and the content of an event it holds back. A line longer
// than this is passed through unparsed, and its event is neither dropped nor
// metered, except that every character of the line counts as streamed text
// (StreamedChars), so that an estimate still covers it.
const MaxLineBytes = 8 << 20

// maxEarlyChecks bounds how many times one event's data is checked for
// being the usage chunk before its end, so that an event of many data lines
// costs linear time.
const maxEarlyChecks = 8

// lfFate says what happens to an LF that directly follows the CR ending the
// previous Write: it belongs to that line's terminator and shares its fate.
type lfFate uint8

const (
	lfEmit lfFate = iota // the line was passed on
	lfHold               // the line is held with its event
	lfDrop               // the line ended a dropped event
)

// Classification of an event's data, cached while it does not change.
const (
	dataUnknown uint8 = iota
	dataUsage         // valid JSON: the usage-only chunk
	dataOther         // valid JSON: anything else
	dataInvalid       // not (yet) valid JSON
)

// A StreamFilter meters a text/event-stream response as it passes from the
// provider to the client and can remove what the provider adds to a stream
// because the gateway set stream_options.include_usage: the usage-only
// chunk and the "usage" members of the other chunks.
//
// Every byte received from the provider is given to Write, and what Write
// returns is sent on at once. Events are separated by blank lines; lines end
// in "\r\n", "\n" or "\r", and may be split anywhere across Write calls.
//
// With dropUsageChunk false the output is always exactly the input. With it
// true (the gateway set stream_options.include_usage for a client that did
// not ask for it), two things are removed:
//
//   - a chat/completions chunk whose "choices" is an empty array and whose
//     "usage" is an object (the extra chunk such a stream ends with),
//     together with every other line of its event and the blank line ending
//     it;
//   - the top-level "usage" members (null, as OpenAI sends in every chunk
//     then, or an object, as providers reporting usage continuously send)
//     of every other chat/completions chunk, each with one adjacent comma
//     (see appendWithoutUsage). This applies to the usual event whose JSON
//     object is complete on its first data line that is not blank; the rest
//     of that line, its other lines and terminators stay as they are. An
//     object spread over several data lines is passed on unchanged (removing
//     a member there could mean joining lines), as is an event whose lines
//     up to the object are longer than the line limit (MaxLineBytes).
//
// All other bytes pass unchanged. To be able to do so, the lines of an event
// are held back only while the event can still turn out to be the usage
// chunk: an event is released as soon as one of its data lines shows it is
// something else (normally the moment its first data line is complete), and
// a complete event is never held.
//
// Usage, model, generated characters and the end marker are read from every
// event, dropped or not. The zero StreamFilter meters without dropping. A
// StreamFilter is not safe for concurrent use.
type StreamFilter struct {
	drop    bool
	maxLine int

	// Line assembly.
	line      []byte // start of the current line, carried over from earlier Writes
	overlong  bool   // the current line passed maxLine: the rest passes unparsed
	crPending bool   // the last Write ended with a CR that ended a line
	fate      lfFate // what to do with an LF right after that CR
	started   bool   // a line has been seen (a leading BOM is stripped once)

	// The current event.
	data      []byte // joined data lines
	dataLines int
	dataLead  byte  // first non-space byte of data, 0 while there is none
	class     uint8 // dataUnknown, dataUsage, dataOther or dataInvalid
	chunk     chunk // the parsed data, when class is dataUsage or dataOther
	checks    int   // early usage-chunk checks done on this event
	size      int   // content bytes of the event's lines so far
	bad       bool  // an overlong line or too much data: not metered or dropped
	candidate bool  // the event may still be the usage chunk; its bytes are held
	strip     bool  // the line just read is to be released without its "usage" members
	held      []byte

	out []byte // reused output buffer

	// What was metered.
	usage    Usage
	hasUsage bool
	model    string
	respID   string // response.id of a Responses API lifecycle or terminal event
	chars    int64
	done     bool
}

// NewStreamFilter returns a filter for one streamed response. With
// dropUsageChunk true it removes the usage-only chat/completions chunk and
// the "usage" members of the other chunks (set it when the gateway injected
// stream_options.include_usage itself).
func NewStreamFilter(dropUsageChunk bool) *StreamFilter {
	return &StreamFilter{drop: dropUsageChunk, maxLine: MaxLineBytes, candidate: dropUsageChunk}
}

// output collects what one Write returns. As long as the bytes passed on
// are one contiguous run of the input, it is returned as a sub-slice of the
// input without copying.
type output struct {
	p      []byte
	r0, r1 int // pending run p[r0:r1]
	buf    []byte
	copied bool
}

// run passes on p[a:b].
func (o *output) run(a, b int) {
	if a >= b {
		return
	}
	if o.r0 < o.r1 && o.r1 == a {
		o.r1 = b
		return
	}
	o.materialize()
	o.r0, o.r1 = a, b
}

// bytes passes on b (bytes held from earlier Writes).
func (o *output) bytes(b []byte) {
	if len(b) == 0 {
		return
	}
	o.materialize()
	o.buf = append(o.buf, b...)
	o.copied = true
}

func (o *output) materialize() {
	if o.r0 < o.r1 {
		o.buf = append(o.buf, o.p[o.r0:o.r1]...)
		o.copied = true
	}
	o.r0, o.r1 = 0, 0
}

func (o *output) result() []byte {
	if !o.copied {
		if o.r0 == o.r1 {
			return nil
		}
		return o.p[o.r0:o.r1]
	}
	o.materialize()
	return o.buf
}

// Write feeds the next bytes received from the provider and returns the
// bytes to send to the client now. The result may be p itself, part of it,
// or an internal buffer; it is valid only until the next call to Write or
// Flush. Only an incomplete trailing line, or the lines of an event that
// may still be the usage chunk to drop, are kept back.
func (f *StreamFilter) Write(p []byte) []byte {
	if f.maxLine <= 0 {
		f.maxLine = MaxLineBytes // the zero StreamFilter
	}
	if cap(f.out) > 4*f.maxLine {
		f.out = nil // do not keep a buffer sized for one huge Write
	}
	o := output{p: p, buf: f.out[:0]}
	i := 0
	holdStart := 0 // start in p of the bytes held for the current event
	if f.crPending && len(p) > 0 {
		f.crPending = false
		if p[0] == '\n' {
			i = 1
			switch f.fate {
			case lfEmit:
				o.run(0, 1)
				holdStart = 1
			case lfDrop:
				holdStart = 1
			}
		}
	}
	eol := eolFinder{p: p, lf: -2}
	for i < len(p) {
		end := eol.next(i)
		if end < 0 {
			f.partialLine(&o, p, i, holdStart)
			break
		}
		next := end + 1
		if p[end] == '\r' {
			if next < len(p) {
				if p[next] == '\n' {
					next++
				}
			} else {
				f.crPending = true
			}
		}
		f.fate = f.endLine(&o, p, i, end, next, &holdStart)
		i = next
	}
	if f.candidate && holdStart < len(p) {
		f.held = append(f.held, p[holdStart:]...)
	}
	out := o.result()
	f.out = o.buf[:0]
	return out
}

// eolFinder finds line terminators in one Write's input. It remembers
// where the next LF is, so that a stream using lone CRs (or mixing them with
// LFs) is not searched for an LF again and again: the total work is linear.
type eolFinder struct {
	p  []byte
	lf int // index of the next LF at or after the last query; -1 none; -2 not searched yet
}

// next returns the index of the first CR or LF at or after i, or -1.
func (e *eolFinder) next(i int) int {
	if e.lf != -1 && e.lf < i {
		e.lf = -1
		if j := bytes.IndexByte(e.p[i:], '\n'); j >= 0 {
			e.lf = i + j
		}
	}
	limit := len(e.p)
	if e.lf >= 0 {
		limit = e.lf
	}
	if r := bytes.IndexByte(e.p[i:limit], '\r'); r >= 0 {
		return i + r
	}
	return e.lf
}

// partialLine handles p[i:], the start of a line not yet complete.
func (f *StreamFilter) partialLine(o *output, p []byte, i, holdStart int) {
	if f.overlong {
		f.chars = addSat(f.chars, runeStarts(p[i:]))
		o.run(i, len(p))
		return
	}
	if len(f.line)+len(p)-i > f.maxLine {
		f.overflow(p[i:])
		if f.candidate {
			f.release(o, p, holdStart, len(p))
		} else {
			o.run(i, len(p))
		}
		return
	}
	f.line = append(f.line, p[i:]...)
	if !f.candidate {
		o.run(i, len(p))
	}
}

// overflow marks the current line, whose bytes so far are f.line and then
// more, as overlong: it is passed on unparsed and its event is neither
// metered nor dropped, but its characters count as streamed text.
func (f *StreamFilter) overflow(more []byte) {
	f.chars = addSat(f.chars, addSat(runeStarts(f.line), runeStarts(more)))
	f.overlong = true
	f.started = true
	f.line = f.line[:0]
	f.bad = true
	f.data = f.data[:0]
}

// release passes on the held bytes of the current event followed by
// p[holdStart:upto], and stops holding the event.
func (f *StreamFilter) release(o *output, p []byte, holdStart, upto int) {
	o.bytes(f.held)
	f.held = f.held[:0]
	o.run(holdStart, upto)
	f.candidate = false
}

// releaseStripped is release for an event whose current line, raw (without
// terminator, a BOM included), is to lose its "usage" members: raw ends at
// p[end] and starts at p[i], or in the held bytes when it began in an
// earlier Write; its terminator is p[end:next].
func (f *StreamFilter) releaseStripped(o *output, p []byte, holdStart, i, end, next int, raw []byte) {
	carried := len(raw) - (end - i)
	o.bytes(f.held[:len(f.held)-carried])
	o.run(holdStart, i)
	o.materialize()
	o.buf = f.appendStripped(o.buf, raw)
	o.copied = true
	o.run(end, next)
	f.held = f.held[:0]
	f.candidate = false
	f.strip = false
}

// appendStripped appends the line raw, whose value is the last data read
// into f.data and holds the chunk f.chunk, without its "usage" members.
func (f *StreamFilter) appendStripped(dst, raw []byte) []byte {
	// The value ends both raw and f.data: move the chunk's positions over.
	shift := len(raw) - len(f.data)
	c := &f.chunk
	prev := c.usagePrev
	if prev >= 0 {
		prev += shift
	}
	return appendWithoutUsage(dst, raw, c.usageKey+shift, prev)
}

// endLine handles the line whose last bytes are p[i:end] and whose
// terminator ends at next; it returns the fate of an LF following a CR
// terminator in the next Write.
func (f *StreamFilter) endLine(o *output, p []byte, i, end, next int, holdStart *int) lfFate {
	if f.overlong {
		// The rest of an overlong line; its event was released already.
		f.chars = addSat(f.chars, runeStarts(p[i:end]))
		f.overlong = false
		o.run(i, next)
		return lfEmit
	}
	if len(f.line)+end-i > f.maxLine {
		f.overflow(p[i:end])
		f.overlong = false
		if f.candidate {
			f.release(o, p, *holdStart, next)
		} else {
			o.run(i, next)
		}
		return lfEmit
	}
	line := p[i:end]
	if len(f.line) > 0 {
		f.line = append(f.line, line...)
		line = f.line
	}
	raw := line // with a BOM, if any
	if !f.started {
		f.started = true
		line = bytes.TrimPrefix(line, []byte("\uFEFF"))
	}

	if len(line) == 0 {
		fate := f.dispatch(o, p, i, next, *holdStart)
		*holdStart = next
		f.line = f.line[:0]
		return fate
	}

	wasCandidate := f.candidate
	f.size += len(line)
	if f.size > f.maxLine {
		f.candidate = false
	}
	f.field(line)
	f.line = f.line[:0]
	switch {
	case wasCandidate && f.candidate:
		return lfHold
	case f.strip: // set only as the line ends the event's candidacy
		f.releaseStripped(o, p, *holdStart, i, end, next, raw)
	case wasCandidate:
		f.release(o, p, *holdStart, next)
	default:
		o.run(i, next)
	}
	return lfEmit
}

// field interprets one complete, non-blank line of the current event.
func (f *StreamFilter) field(line []byte) {
	name, value := line, []byte(nil)
	if c := bytes.IndexByte(line, ':'); c >= 0 {
		name, value = line[:c], line[c+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	if string(name) != "data" || f.bad {
		return // comments, event, id, retry and unknown fields
	}
	need := len(value)
	if f.dataLines > 0 {
		need++
	}
	if len(f.data)+need > f.maxLine {
		f.bad = true
		f.candidate = false
		f.data = f.data[:0]
		return
	}
	if f.dataLines > 0 {
		f.data = append(f.data, '\n')
	}
	f.data = append(f.data, value...)
	f.dataLines++

	t := trimSpace(value)
	if len(t) == 0 {
		return // only whitespace was added: validity and content unchanged
	}
	f.class = dataUnknown
	first := f.dataLead == 0 // the first data line that is not blank
	if first {
		f.dataLead = t[0]
	}
	if !f.candidate {
		return
	}
	if f.dataLead != '{' {
		f.candidate = false // [DONE] or anything else that is not an object
		return
	}
	// An object can only be complete when its last byte is '}'.
	if t[len(t)-1] == '}' && f.checks < maxEarlyChecks {
		f.checks++
		if f.classify() != dataInvalid && f.class != dataUsage {
			f.candidate = false
			// The object is complete on this line (the data before it is
			// blank): its usage members can go without touching other lines.
			f.strip = first && f.chunk.usage != nil && f.chunk.ev == chatChunk
		}
	}
}

// classify caches and returns the classification of the event's data,
// keeping the parsed chunk for meter. (Data appended later is only
// whitespace as long as the class stays known, so the chunk's slices keep
// describing the data even if f.data moves.)
func (f *StreamFilter) classify() uint8 {
	if f.class != dataUnknown {
		return f.class
	}
	f.class = dataInvalid
	if f.dataLead == '{' && validJSON(f.data) {
		if c, isObj := scanChunk(f.data); isObj {
			f.chunk = c
			f.class = dataOther
			if c.isUsageChunk() {
				f.class = dataUsage
			}
		}
	}
	return f.class
}

// dispatch ends the current event at the blank line p[i:next]: the event is
// dropped or passed on, then metered, and a new event begins.
func (f *StreamFilter) dispatch(o *output, p []byte, i, next, holdStart int) lfFate {
	fate := lfEmit
	switch {
	case f.candidate && f.dataLines > 0 && !f.bad && f.classify() == dataUsage:
		f.held = f.held[:0]
		fate = lfDrop
	case f.candidate:
		f.release(o, p, holdStart, next)
	default:
		o.run(i, next)
	}
	f.meter()
	f.resetEvent()
	return fate
}

// resetEvent forgets the current event; the next one starts.
func (f *StreamFilter) resetEvent() {
	f.data = f.data[:0]
	f.dataLines = 0
	f.dataLead = 0
	f.class = dataUnknown
	f.chunk = chunk{}
	f.checks = 0
	f.size = 0
	f.bad = false
	f.candidate = f.drop
	f.strip = false
	f.held = f.held[:0]
}

// meter reads the current event's data, if it has any that can be parsed.
func (f *StreamFilter) meter() {
	if f.dataLines == 0 || f.bad {
		return
	}
	if f.dataLead == '[' && string(trimSpace(f.data)) == "[DONE]" {
		f.done = true
		return
	}
	if f.classify() == dataInvalid {
		return
	}
	c := &f.chunk
	if f.model == "" {
		f.model = c.modelOf()
	}
	if c.ev == eventLifecycle || c.ev == eventTerminal {
		if id := responseObjectID(c.response); id != "" {
			f.respID = id
		}
	}
	f.chars = addSat(f.chars, c.generatedChars())
	if u, ok := c.usageOf(); ok {
		f.usage, f.hasUsage = u, true
	}
	if c.ev == eventTerminal {
		f.done = true
	}
}

// Flush ends the stream and returns whatever is still held back: an
// incomplete last line or event is passed on as it is (never dropped) and
// metered if its data parses. The filter is then ready for a new stream,
// keeping what it metered.
func (f *StreamFilter) Flush() []byte {
	if f.maxLine <= 0 {
		f.maxLine = MaxLineBytes
	}
	out := f.out[:0]
	if !f.overlong && len(f.line) > 0 {
		line := f.line
		if !f.started {
			line = bytes.TrimPrefix(line, []byte("\uFEFF"))
		}
		if f.size += len(line); f.size > f.maxLine {
			f.candidate = false
		}
		f.field(line)
	}
	// Held bytes exist only while the event is a candidate (field may just
	// have changed that, so do not test it).
	if f.strip {
		// The last line, f.line, ends the held bytes.
		out = append(out, f.held[:len(f.held)-len(f.line)]...)
		out = f.appendStripped(out, f.line)
	} else {
		out = append(out, f.held...)
	}
	f.meter()
	f.resetEvent()
	f.line = f.line[:0]
	f.overlong = false
	f.crPending = false
	f.started = false
	f.out = out[:0]
	if len(out) == 0 {
		return nil
	}
	return out
}

// Usage returns the last usage a chunk or event of the stream carried; ok
// is false when none did (yet). Providers that repeat cumulative usage in
// every chunk are covered: the latest report wins.
func (f *StreamFilter) Usage() (Usage, bool) { return f.usage, f.hasUsage }

// Model returns the model named by the stream: "model" of the first
// chat/completions chunk that has one, or response.model of the first
// Responses API lifecycle event. "" when none was seen.
func (f *StreamFilter) Model() string { return f.model }

// ResponseID returns the id of the response a Responses API stream is
// about: response.id of its latest response.created, response.in_progress,
// response.queued, response.completed, response.incomplete or
// response.failed event. "" when none carried one.
func (f *StreamFilter) ResponseID() string { return f.respID }

// StreamedChars returns the number of Unicode characters of generated text
// seen so far, counted in the raw JSON without decoding: in chat chunks
// choices[].delta.content, .reasoning_content, .refusal,
// .tool_calls[].function.arguments and the legacy .function_call.arguments;
// in completions chunks choices[].text; in Responses API events "delta" of
// response.output_text.delta, response.refusal.delta,
// response.function_call_arguments.delta, response.reasoning_text.delta and
// response.reasoning_summary_text.delta. EstimateTokens(StreamedChars())
// estimates the output of a stream that ended without usage.
func (f *StreamFilter) StreamedChars() int64 { return f.chars }

// Done reports whether the stream's end marker was seen: "data: [DONE]", or
// a terminal Responses API event (response.completed, response.incomplete or
// response.failed).
func (f *StreamFilter) Done() bool { return f.done }

// runeStarts counts the bytes of p that start a UTF-8 sequence (all but
// continuation bytes): the characters of p, counted the same however a text
// is split across Writes.
func runeStarts(p []byte) int64 {
	var n int64
	for _, c := range p {
		if c&0xc0 != 0x80 {
			n++
		}
	}
	return n
}
