package link

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/protobuf/proto"

	linkv1 "github.com/restpipe/restpipe/proto/link/v1"
)

// Frame types. See doc.go for the layout.
const (
	frameHeader byte = 1 // a protobuf message
	frameData   byte = 2 // body bytes
	frameEnd    byte = 3 // end of a body, with an optional Trailer
)

const (
	// maxDataFrame bounds the length of one DATA frame. DATA payloads are
	// read straight into the reader's buffer and never allocated, so this
	// only rejects nonsense.
	maxDataFrame = 1 << 24

	// dataChunk is the payload size of the DATA frames this side writes.
	dataChunk = 32 << 10

	// frameOverhead is the most a frame adds to its payload: a type byte
	// and a uvarint of at most 10 bytes.
	frameOverhead = 1 + binary.MaxVarintLen64

	// readBufferSize is the buffer a frameReader reads a stream through.
	readBufferSize = 4 << 10
)

// Framing errors. A stream that yields one is abandoned; the session goes on.
var (
	// ErrFrameTooLarge means a frame announced a payload over the limit. It
	// is detected before anything is allocated for the payload.
	ErrFrameTooLarge = errors.New("frame too large")

	// ErrBadFrame means the bytes on a stream do not follow the framing.
	ErrBadFrame = errors.New("malformed frame")
)

// bufPool holds the buffers bodies are copied through, each large enough for
// one DATA frame and its overhead.
var bufPool = sync.Pool{New: func() any { b := make([]byte, frameOverhead+dataChunk); return &b }}

// readerPool holds the bufio.Readers frameReaders read streams through.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}

// appendMsgFrame appends to b a frame of type t whose payload is m encoded.
func appendMsgFrame(b []byte, t byte, m proto.Message) ([]byte, error) {
	size := proto.Size(m)
	b = append(b, t)
	b = binary.AppendUvarint(b, uint64(size))
	// Size has just cached the sizes of m and its parts: encode without
	// walking the message a second time to size it.
	return proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m)
}

// writeMsg writes m as one HEADER frame in a single Write.
func writeMsg(w io.Writer, m proto.Message) error {
	b, err := appendMsgFrame(make([]byte, 0, 64), frameHeader, m)
	if err != nil {
		return fmt.Errorf("encode %T: %w", m, err)
	}
	_, err = w.Write(b)
	return err
}

// appendEnd appends an END frame, carrying e as a Trailer when e is not nil.
func appendEnd(b []byte, e *linkv1.Error) []byte {
	if e == nil {
		return append(b, frameEnd, 0)
	}
	b, _ = appendMsgFrame(b, frameEnd, &linkv1.Trailer{Error: e})
	return b
}

// writeMessage writes m as a HEADER frame followed by body, as DATA frames
// and an END frame; when size is 0 the body is omitted entirely. A body of
// known size up to one chunk goes out with its header in a single Write. If
// reading body fails, the END frame carries fail(err) so the receiver sees
// the failure instead of a short body, and writeMessage returns the error.
func writeMessage(w io.Writer, m proto.Message, body io.Reader, size int64, fail func(error) *linkv1.Error) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf, err := appendMsgFrame((*bp)[:0], frameHeader, m)
	if err != nil {
		return fmt.Errorf("encode %T: %w", m, err)
	}
	if body == nil || size == 0 {
		_, err = w.Write(buf)
		return err
	}
	if size > 0 && size <= dataChunk && len(buf)+frameOverhead+int(size)+2 <= cap(buf) {
		// Small body: header, one DATA frame and END in one write.
		hdrLen := len(buf)
		buf = append(buf, frameData)
		buf = binary.AppendUvarint(buf, uint64(size))
		start := len(buf)
		buf = buf[:start+int(size)]
		n, err := io.ReadFull(body, buf[start:])
		if err != nil {
			// Shorter than announced: send what we have and fail the body.
			_, werr := w.Write(buf[:hdrLen])
			if werr != nil {
				return werr
			}
			if n > 0 {
				if werr := writeData(w, buf[start:start+n]); werr != nil {
					return werr
				}
			}
			return failBody(w, fmt.Errorf("read body: %w", err), fail)
		}
		buf = appendEnd(buf, nil)
		_, err = w.Write(buf)
		return err
	}
	if _, err := w.Write(buf); err != nil {
		return err
	}
	return copyBody(w, body, fail)
}

// copyBody writes body to w as DATA frames and an END frame.
func copyBody(w io.Writer, body io.Reader, fail func(error) *linkv1.Error) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := body.Read(buf[frameOverhead:])
		if n > 0 {
			// Put the frame header right before the payload, so header and
			// payload leave in one Write.
			var hdr [frameOverhead]byte
			hdr[0] = frameData
			hl := 1 + binary.PutUvarint(hdr[1:], uint64(n))
			start := frameOverhead - hl
			copy(buf[start:], hdr[:hl])
			if _, err := w.Write(buf[start : frameOverhead+n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			_, err := w.Write(appendEnd(buf[:0], nil))
			return err
		}
		if rerr != nil {
			return failBody(w, fmt.Errorf("read body: %w", rerr), fail)
		}
	}
}

// writeData writes p as one DATA frame.
func writeData(w io.Writer, p []byte) error {
	b := make([]byte, 0, frameOverhead+len(p))
	b = append(b, frameData)
	b = binary.AppendUvarint(b, uint64(len(p)))
	_, err := w.Write(append(b, p...))
	return err
}

// failBody ends a body with an END frame carrying the failure, and returns
// cause.
func failBody(w io.Writer, cause error, fail func(error) *linkv1.Error) error {
	if _, err := w.Write(appendEnd(nil, fail(cause))); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// frameReader reads frames from one stream: HEADER messages with readMsg,
// and a body (DATA frames up to END) with Read. It is not safe for
// concurrent use.
type frameReader struct {
	br        *bufio.Reader
	maxHeader int
	trailer   func(*linkv1.Error) error // turns an END trailer into the body's error

	left int64 // payload bytes left in the current DATA frame
	size int64 // announced body size, or -1
	got  int64 // body bytes read so far
	err  error // sticky: io.EOF after END, or the failure
}

// newFrameReader returns a frameReader on r with a pooled buffer; release
// returns the buffer.
func newFrameReader(r io.Reader, maxHeader int) *frameReader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return &frameReader{br: br, maxHeader: maxHeader, size: -1}
}

// release gives the buffer back to the pool; the reader must not be used
// afterwards.
func (fr *frameReader) release() {
	if fr.br != nil {
		fr.br.Reset(nil)
		readerPool.Put(fr.br)
		fr.br = nil
	}
}

// next reads a frame's type and payload length.
func (fr *frameReader) next() (byte, uint64, error) {
	t, err := fr.br.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	n, err := binary.ReadUvarint(fr.br)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, 0, err
		}
		return 0, 0, fmt.Errorf("%w: frame length: %v", ErrBadFrame, err)
	}
	return t, n, nil
}

// readPayload reads a message payload of n bytes into m, refusing one over
// the header limit before allocating.
func (fr *frameReader) readPayload(n uint64, m proto.Message) error {
	if n > uint64(fr.maxHeader) {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrFrameTooLarge, n, fr.maxHeader)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(fr.br, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: decode %T: %v", ErrBadFrame, m, err)
	}
	return nil
}

// readMsg reads one HEADER frame into m.
func (fr *frameReader) readMsg(m proto.Message) error {
	t, n, err := fr.next()
	if err != nil {
		return err
	}
	if t != frameHeader {
		return fmt.Errorf("%w: want a header frame, got type %d", ErrBadFrame, t)
	}
	return fr.readPayload(n, m)
}

// startBody prepares Read for a body of the announced size (-1: unknown).
func (fr *frameReader) startBody(size int64) {
	fr.size, fr.got, fr.left, fr.err = size, 0, 0, nil
	if size == 0 {
		fr.err = io.EOF
	}
}

// Read reads body bytes. It returns io.EOF after a clean END frame, the
// trailer's error after an END frame that carries one, and an error wrapping
// io.ErrUnexpectedEOF if the stream ends inside the body.
func (fr *frameReader) Read(p []byte) (int, error) {
	if fr.err != nil {
		return 0, fr.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for fr.left == 0 {
		if err := fr.nextBodyFrame(); err != nil {
			fr.err = err
			return 0, err
		}
	}
	if int64(len(p)) > fr.left {
		p = p[:fr.left]
	}
	n, err := fr.br.Read(p)
	fr.left -= int64(n)
	fr.got += int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		fr.err = err
		return n, err
	}
	if fr.size >= 0 && fr.got > fr.size {
		fr.err = fmt.Errorf("%w: body longer than the announced %d bytes", ErrBadFrame, fr.size)
		return n, fr.err
	}
	return n, nil
}

// nextBodyFrame reads the next DATA or END frame header.
func (fr *frameReader) nextBodyFrame() error {
	t, n, err := fr.next()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	switch t {
	case frameData:
		if n == 0 || n > maxDataFrame {
			return fmt.Errorf("%w: data frame of %d bytes", ErrBadFrame, n)
		}
		fr.left = int64(n)
		return nil
	case frameEnd:
		if n > 0 {
			var tr linkv1.Trailer
			if err := fr.readPayload(n, &tr); err != nil {
				return err
			}
			if tr.Error != nil {
				if fr.trailer != nil {
					return fr.trailer(tr.Error)
				}
				return fmt.Errorf("body aborted by sender: %s: %s", tr.Error.Kind, tr.Error.Message)
			}
		}
		if fr.size >= 0 && fr.got != fr.size {
			return fmt.Errorf("%w: body of %d bytes, announced %d", ErrBadFrame, fr.got, fr.size)
		}
		return io.EOF
	default:
		return fmt.Errorf("%w: unexpected frame type %d in a body", ErrBadFrame, t)
	}
}
