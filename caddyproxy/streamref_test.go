package caddyproxy

import (
	"bytes"
	"encoding/json"
)

// This file holds a deliberately simple, non-incremental model of what
// StreamFilter must do, used as the oracle in tests and fuzzing: it sees
// the whole stream at once, cuts it into lines and events, and decides per
// event. It shares only the JSON-level helpers (scanChunk and friends) with
// the real filter, not its buffering.

// refLine is one line of a stream.
type refLine struct {
	content []byte // without terminator; a leading BOM of the stream removed
	rawLen  int    // content length before removing a BOM
	raw     []byte // with terminator
}

// refLines cuts in into lines. complete is false when the last line has no
// terminator (it is then the last element).
func refLines(in []byte) (lines []refLine, complete bool) {
	complete = true
	for i := 0; i < len(in); {
		j := i
		for j < len(in) && in[j] != '\r' && in[j] != '\n' {
			j++
		}
		if j == len(in) {
			lines = append(lines, refLine{content: in[i:], rawLen: len(in) - i, raw: in[i:]})
			complete = false
			break
		}
		next := j + 1
		if in[j] == '\r' && next < len(in) && in[next] == '\n' {
			next++
		}
		lines = append(lines, refLine{content: in[i:j], rawLen: j - i, raw: in[i:next]})
		i = next
	}
	if len(lines) > 0 {
		lines[0].content = bytes.TrimPrefix(lines[0].content, []byte("\uFEFF"))
	}
	return lines, complete
}

// refMeter is what the oracle meters.
type refMeter struct {
	usage    Usage
	hasUsage bool
	model    string
	chars    int64
	done     bool
}

// refEvent records where a complete event of the oracle's input ended.
type refEvent struct {
	term   int  // index of the first terminator byte of its blank line
	end    int  // index just past that terminator
	outEnd int  // length of the oracle's output after this event
	kept   bool // the event was passed on (not dropped)
}

// refResult runs the oracle over a whole stream.
func refResult(in []byte, drop bool, limit int) ([]byte, refMeter) {
	out, m, _ := refRun(in, drop, limit)
	return out, m
}

// refRun runs the oracle and also reports where each complete event ended.
func refRun(in []byte, drop bool, limit int) ([]byte, refMeter, []refEvent) {
	lines, complete := refLines(in)
	var (
		out    []byte
		m      refMeter
		event  []refLine
		events []refEvent
		pos    int
	)
	for n, l := range lines {
		last := n == len(lines)-1
		start := pos
		pos += len(l.raw)
		if len(l.content) == 0 && l.rawLen <= limit && !(last && !complete) {
			data, ok, mayDrop := refData(event, limit)
			kept := !(drop && mayDrop && refIsUsageChunk(data))
			if kept {
				for _, e := range event {
					out = append(out, e.raw...)
				}
				out = append(out, l.raw...)
			}
			if ok {
				m.meter(data)
			}
			events = append(events, refEvent{term: start + l.rawLen, end: pos, outEnd: len(out), kept: kept})
			event = event[:0]
			continue
		}
		event = append(event, l)
	}
	// An incomplete last event passes as is and is metered if it parses.
	for _, e := range event {
		out = append(out, e.raw...)
	}
	if data, ok, _ := refData(event, limit); ok {
		m.meter(data)
	}
	return out, m, events
}

// refData joins an event's data lines. meter is false when the event has no
// data, has a line longer than limit or joined data longer than limit; mayDrop
// is also false when the event's line contents add up to more than limit
// (too much to hold back).
func refData(event []refLine, limit int) (data []byte, meter, mayDrop bool) {
	lines, size := 0, 0
	for _, l := range event {
		if l.rawLen > limit {
			return nil, false, false
		}
		size += len(l.content)
		name, value := l.content, []byte(nil)
		if c := bytes.IndexByte(l.content, ':'); c >= 0 {
			name, value = l.content[:c], bytes.TrimPrefix(l.content[c+1:], []byte(" "))
		}
		if string(name) != "data" {
			continue
		}
		if lines > 0 {
			data = append(data, '\n')
		}
		data = append(data, value...)
		lines++
		if len(data) > limit {
			return nil, false, false
		}
	}
	if lines == 0 {
		return nil, false, false
	}
	return data, true, size <= limit
}

// refIsUsageChunk reports whether data is the usage-only chunk.
func refIsUsageChunk(data []byte) bool {
	if !json.Valid(data) {
		return false
	}
	var v map[string]json.RawMessage
	if json.Unmarshal(data, &v) != nil {
		return false
	}
	var choices []json.RawMessage
	if json.Unmarshal(v["choices"], &choices) != nil || v["choices"] == nil || choices == nil || len(choices) != 0 {
		return false
	}
	var usage map[string]json.RawMessage
	if json.Unmarshal(v["usage"], &usage) != nil || usage == nil {
		return false
	}
	if t, ok := v["type"]; ok && eventKindOf(t) != chatChunk {
		return false
	}
	return true
}

// meter applies one event's data to m.
func (m *refMeter) meter(data []byte) {
	if string(bytes.Trim(data, " \t\r\n")) == "[DONE]" {
		m.done = true
		return
	}
	if !json.Valid(data) {
		return
	}
	c, isObj := scanChunk(data)
	if !isObj {
		return
	}
	if m.model == "" {
		m.model = c.modelOf()
	}
	m.chars += c.generatedChars()
	if u, ok := c.usageOf(); ok {
		m.usage, m.hasUsage = u, true
	}
	if c.ev == eventTerminal {
		m.done = true
	}
}
