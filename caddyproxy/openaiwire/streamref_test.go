package openaiwire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// This file holds a deliberately simple, non-incremental model of what
// StreamFilter must do, used as the oracle in tests and fuzzing: it sees
// the whole stream at once, cuts it into lines and events, and decides per
// event. It shares only the JSON-level helpers (scanChunk and friends) with
// the real filter, not its buffering nor its removal of "usage" members
// (refWithoutUsage splits the object at its commas instead).

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
		if l.rawLen > limit {
			// an overlong line counts as streamed text, character by character
			for _, c := range in[start : start+l.rawLen] {
				if utf8.RuneStart(c) {
					m.chars++
				}
			}
		}
		if len(l.content) == 0 && l.rawLen <= limit && !(last && !complete) {
			data, ok, mayDrop := refData(event, limit)
			kept := !(drop && mayDrop && refIsUsageChunk(data))
			if kept {
				out = refAppendEvent(out, event, drop, limit)
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
	// An incomplete last event passes (with its usage members removed like
	// any other) and is metered if it parses.
	out = refAppendEvent(out, event, drop, limit)
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
		value, isData := refDataValue(l)
		if !isData {
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

// refAppendEvent appends the lines of an event that is passed on; with
// dropping on, the line refStripLine picks loses its "usage" members.
func refAppendEvent(out []byte, event []refLine, drop bool, limit int) []byte {
	strip := -1
	if drop {
		strip = refStripLine(event, limit)
	}
	for n, l := range event {
		if n != strip {
			out = append(out, l.raw...)
			continue
		}
		value := l.content[len("data:"):]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		out = append(out, l.raw[:l.rawLen-len(value)]...)
		out = append(out, refWithoutUsage(value)...)
		out = append(out, l.raw[l.rawLen:]...)
	}
	return out
}

// refStripLine returns the index of the line of an event whose top-level
// "usage" members are removed, or -1: the first data line that is not
// blank, when the event's data up to it is a JSON object with a "usage"
// member, a chat chunk but not the usage-only chunk, and neither a line up
// to it, nor their contents together, nor the data is over the limit.
func refStripLine(event []refLine, limit int) int {
	var data []byte
	size, lines := 0, 0
	for n, l := range event {
		if l.rawLen > limit {
			return -1
		}
		if size += len(l.content); size > limit {
			return -1
		}
		value, isData := refDataValue(l)
		if !isData {
			continue
		}
		if lines > 0 {
			data = append(data, '\n')
		}
		data = append(data, value...)
		lines++
		if len(data) > limit {
			return -1
		}
		if len(bytes.Trim(value, " \t\r\n")) == 0 {
			continue
		}
		var v map[string]json.RawMessage
		if !json.Valid(data) || json.Unmarshal(data, &v) != nil || v == nil || refIsUsageChunk(data) {
			return -1
		}
		if _, ok := v["usage"]; !ok {
			return -1
		}
		if t, ok := v["type"]; ok && eventKindOf(t) != chatChunk {
			return -1
		}
		return n
	}
	return -1
}

// refWithoutUsage removes the top-level "usage" members of the JSON object
// in value (valid, possibly surrounded by whitespace) the way
// appendWithoutUsage documents it, by another route: it cuts the object's
// inside at its top-level commas into members with their surrounding
// whitespace, and joins the kept ones again. A run of removed members
// passes the whitespace before its first member on to the next kept
// member; a run at the end passes the whitespace after its last member on
// to the last kept member; if all go, what was before the first and after
// the last member remains.
func refWithoutUsage(value []byte) []byte {
	open := bytes.IndexByte(value, '{')
	end := bytes.LastIndexByte(value, '}')
	members, bad := refMembers(refSplitTopLevel(value[open+1:end]), value)
	if bad != nil {
		return bad
	}
	lastKept := -1
	for i, mem := range members {
		if !mem.removed {
			lastKept = i
		}
	}
	out := append([]byte(nil), value[:open+1]...)
	if lastKept < 0 {
		out = append(out, members[0].lead...)
		out = append(out, members[len(members)-1].trail...)
		return append(out, value[end:]...)
	}
	out = refJoinKept(out, members, lastKept)
	return append(out, value[end:]...)
}

// refMember is one member of an object cut by refWithoutUsage: the
// whitespace before it, the member itself, the whitespace after it, and
// whether it goes (it is a "usage" member).
type refMember struct {
	lead, body, trail []byte
	removed           bool
}

// refSplitTopLevel cuts the inside of an object at its top-level commas
// (not those inside strings, objects or arrays).
func refSplitTopLevel(inside []byte) [][]byte {
	var segs [][]byte
	depth, inString, escaped, start := 0, false, false, 0
	for i, c := range inside {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		case c == ',' && depth == 0:
			segs = append(segs, inside[start:i])
			start = i + 1
		}
	}
	return append(segs, inside[start:])
}

// refMembers parts each of segs into its member and surrounding whitespace
// and marks the "usage" members. If a seg is not exactly one member, it
// returns instead a text saying so (which no test expects, so it fails).
func refMembers(segs [][]byte, value []byte) ([]refMember, []byte) {
	var all []refMember
	for _, s := range segs {
		rest := bytes.TrimLeft(s, " \t\r\n")
		body := bytes.TrimRight(rest, " \t\r\n")
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte("{"+string(body)+"}"), &m); err != nil || len(m) != 1 {
			return nil, []byte(fmt.Sprintf("oracle bug: member %q of %q", body, value))
		}
		_, isUsage := m["usage"]
		all = append(all, refMember{s[:len(s)-len(rest)], body, rest[len(body):], isUsage})
	}
	return all, nil
}

// refJoinKept appends the kept members to out, comma-separated, passing on
// the whitespace of removed runs as refWithoutUsage describes.
func refJoinKept(out []byte, all []refMember, lastKept int) []byte {
	var carry []byte // lead of the first member of a run of removed ones
	carrying, first := false, true
	for i, s := range all {
		if s.removed {
			if !carrying {
				carry, carrying = s.lead, true
			}
			continue
		}
		lead, trail := s.lead, s.trail
		if carrying {
			lead, carrying = carry, false
		}
		if i == lastKept {
			trail = all[len(all)-1].trail
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, lead...)
		out = append(out, s.body...)
		out = append(out, trail...)
	}
	return out
}

// refDataValue splits an SSE line at its first colon and returns the value
// (one leading space dropped) if the field is "data".
func refDataValue(l refLine) ([]byte, bool) {
	name, value := l.content, []byte(nil)
	if c := bytes.IndexByte(l.content, ':'); c >= 0 {
		name, value = l.content[:c], bytes.TrimPrefix(l.content[c+1:], []byte(" "))
	}
	return value, string(name) == "data"
}
