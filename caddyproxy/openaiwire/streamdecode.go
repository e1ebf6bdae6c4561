package openaiwire

import (
	"bufio"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"strings"
)

// This file holds StreamDecoder, which undoes the Content-Encoding of an
// event stream as it passes.

// ErrDecoderDone is returned by StreamDecoder.Write once the decoder has
// stopped: the compressed stream ended, or it was corrupt (Close tells).
var ErrDecoderDone = errors.New("stream decoder stopped")

// A StreamDecoder undoes the gzip or deflate Content-Encoding of a response
// that arrives in pieces, such as an event stream from a provider that
// compresses although the gateway asked for identity. Each piece given to
// Write is decoded before Write returns: out receives every byte the
// compressed data so far can yield, so a provider that flushes its
// compressor after each event has each event decoded the moment it arrives.
//
// The decompressors of the standard library pull their input, so the
// decoding runs on a goroutine of its own; Write hands it one piece and
// waits until it asks for the next. out is therefore called on that
// goroutine, but only while a Write (or Close) is waiting for it, never
// concurrently with the caller. Close must be called to end the goroutine.
type StreamDecoder struct {
	in    chan []byte   // a piece for the decoder; closed by Close
	ready chan struct{} // the decoder has used all input and wants more
	done  chan struct{} // closed when the decoder goroutine ends
	err   error         // why it ended (nil: the stream ended cleanly); read after done

	waiting bool // the decoder is blocked in its read, ready for a piece
	closed  bool
}

// NewStreamDecoder starts a decoder for a Content-Encoding of "gzip",
// "x-gzip" or "deflate" (zlib-wrapped, or raw deflate as some servers send),
// case-insensitive. ok is false for anything else, including lists of
// codings: the stream cannot be decoded.
func NewStreamDecoder(contentEncoding string, out func([]byte)) (d *StreamDecoder, ok bool) {
	var open func(io.Reader) (io.Reader, error)
	switch strings.ToLower(strings.TrimSpace(contentEncoding)) {
	case "gzip", "x-gzip":
		open = func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }
	case "deflate":
		open = openDeflate
	default:
		return nil, false
	}
	d = &StreamDecoder{in: make(chan []byte), ready: make(chan struct{}), done: make(chan struct{})}
	go d.run(open, out)
	return d, true
}

// openDeflate reads "deflate" as zlib when the first two bytes are a zlib
// header (RFC 1950: method 8, header checksum), else as raw deflate.
func openDeflate(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	h, err := br.Peek(2)
	if err != nil {
		return nil, err
	}
	if h[0]&0x0f == 8 && (uint16(h[0])<<8|uint16(h[1]))%31 == 0 {
		return zlib.NewReader(br)
	}
	return flate.NewReader(br), nil
}

// run is the decoder goroutine.
func (d *StreamDecoder) run(open func(io.Reader) (io.Reader, error), out func([]byte)) {
	defer close(d.done)
	r, err := open(&decoderInput{d: d})
	if err != nil {
		d.err = fmt.Errorf("decoding stream: %w", err)
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			out(buf[:n])
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			d.err = fmt.Errorf("decoding stream: %w", err)
			return
		}
	}
}

// decoderInput is what the decompressor reads: the pieces given to Write.
type decoderInput struct {
	d   *StreamDecoder
	cur []byte
}

func (in *decoderInput) Read(p []byte) (int, error) {
	for len(in.cur) == 0 {
		in.d.ready <- struct{}{} // everything so far is used up
		b, ok := <-in.d.in
		if !ok {
			return 0, io.EOF
		}
		in.cur = b
	}
	n := copy(p, in.cur)
	in.cur = in.cur[n:]
	return n, nil
}

// wait blocks until the decoder wants input or has stopped; it reports
// whether it wants input.
func (d *StreamDecoder) wait() bool {
	if d.waiting {
		return true
	}
	select {
	case <-d.ready:
		d.waiting = true
		return true
	case <-d.done:
		return false
	}
}

// Write decodes p, calling out with what it yields, and returns once the
// decoder has used all of p. If p is corrupt, Write returns the decoding
// error (out has had what came before the corruption); after the decoder
// stopped (the compressed stream ended, or was corrupt) it returns
// ErrDecoderDone.
func (d *StreamDecoder) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if d.closed || !d.wait() {
		return 0, ErrDecoderDone
	}
	d.waiting = false
	d.in <- p
	if !d.wait() && d.err != nil { // the decoder stopped on p: corrupt
		return 0, d.err
	}
	return len(p), nil
}

// Close ends the input, lets the decoder finish (out receives the last
// bytes) and returns nil if the compressed stream was complete and valid,
// else what was wrong (a truncated stream gives an error wrapping
// io.ErrUnexpectedEOF). It may be called more than once.
func (d *StreamDecoder) Close() error {
	if !d.closed {
		d.closed = true
		close(d.in)
		for d.wait() {
			// A decoder that is waiting reads the end of input and then
			// stops; this loop only runs until it does.
			d.waiting = false
		}
	}
	<-d.done
	return d.err
}
