package gwtest

import "bytes"

// SplitEvents splits a server-sent events body into its events, each with
// its blank line; a last event without one is kept as it is.
func SplitEvents(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := bytes.Index(b, []byte("\n\n"))
		if i < 0 {
			out = append(out, b)
			break
		}
		out = append(out, b[:i+2])
		b = b[i+2:]
	}
	return out
}
