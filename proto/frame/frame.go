// Package frame is the framing every restpipe stream uses: the link's yamux
// streams between nodes and the event connections between a node and its
// plugins carry the same frames, so a body crosses a node by being copied,
// never re-encoded. It is the one implementation of that framing; the link
// (host/link), the node's plugin client, the Go plugin SDK and its test
// harness all import it, and the Python SDK follows the same rules
// (plugin-sdk/python/restpipe_plugin/frame.py).
//
// # Frames
//
//	frame   = type:uint8  length:uvarint  payload:length bytes
//	type 1  HEADER  payload: one protobuf message (which one depends on the
//	                protocol and the position on the stream)
//	type 2  DATA    payload: 1 to 16 MiB of body bytes (writers here use
//	                32 KiB)
//	type 3  END     payload: empty, or a protobuf trailer saying why the
//	                body could not be finished
//
// A message is a HEADER frame; a body is DATA frames ended by one END
// frame. A body announced with a size (>= 0) must be exactly that long: a
// reader fails a longer one as soon as it passes the size and a shorter one
// at its END. A body whose END carries a trailer failed: the reader returns
// the trailer's error, never a short body that looks complete. A stream
// that ends without END is a lost body.
//
// # Limits
//
// A HEADER or END payload longer than the reader's limit (Reader.MaxHeader)
// is refused from its length alone, before anything is allocated for it.
// DATA payloads are read straight into the caller's buffer, never
// allocated; a DATA frame over MaxData is malformed.
package frame

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/protobuf/proto"
)

// Frame types.
const (
	TypeHeader byte = 1 // a protobuf message
	TypeData   byte = 2 // body bytes
	TypeEnd    byte = 3 // the end of a body, with an optional trailer
)

const (
	// MaxData bounds the payload of one DATA frame.
	MaxData = 1 << 24

	// Chunk is the payload size of the DATA frames this package writes.
	Chunk = 64 << 10

	// MaxOverhead is the most a frame adds to its payload: a type byte and
	// a uvarint of at most 10 bytes.
	MaxOverhead = 1 + binary.MaxVarintLen64

	// readBufferSize is the buffer a Reader reads its stream through.
	readBufferSize = 4 << 10
)

// Framing errors. A stream that yields one cannot be trusted further.
var (
	// ErrTooLarge means a frame announced a payload over the limit. It is
	// detected before anything is allocated for the payload.
	ErrTooLarge = errors.New("frame too large")

	// ErrMalformed means the bytes on a stream do not follow the framing,
	// or a body does not match its announced size.
	ErrMalformed = errors.New("malformed frame")
)

// shortBody and longBody are the errors of a body that does not match its
// announced size.
func shortBody(got, size int64) error {
	return fmt.Errorf("%w: body of %d bytes is shorter than its announced %d", ErrMalformed, got, size)
}

func longBody(size int64) error {
	return fmt.Errorf("%w: body is longer than its announced %d bytes", ErrMalformed, size)
}

// AppendHeader appends the type and length of a frame to b.
func AppendHeader(b []byte, t byte, n int) []byte {
	return binary.AppendUvarint(append(b, t), uint64(n))
}

// AppendMsg appends to b a frame of type t whose payload is m encoded.
func AppendMsg(b []byte, t byte, m proto.Message) ([]byte, error) {
	size := proto.Size(m)
	b = AppendHeader(b, t, size)
	// Size has just cached the sizes of m and its parts: encode without
	// walking the message a second time to size it.
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m)
	if err != nil {
		return b, fmt.Errorf("encode %T: %w", m, err)
	}
	return b, nil
}

// AppendData appends p as one DATA frame; p must not be empty.
func AppendData(b, p []byte) []byte {
	return append(AppendHeader(b, TypeData, len(p)), p...)
}

// AppendEnd appends an END frame carrying trailer, or an empty END frame
// when trailer is nil.
func AppendEnd(b []byte, trailer proto.Message) []byte {
	if trailer == nil {
		return append(b, TypeEnd, 0)
	}
	out, err := AppendMsg(b, TypeEnd, trailer)
	if err != nil {
		return append(b, TypeEnd, 0)
	}
	return out
}

// bufPool holds the buffers bodies are copied through: one DATA frame and
// its overhead. smallPool holds the buffers a message with a small body
// (or none) is written from: most events need no more.
var (
	bufPool   = sync.Pool{New: func() any { b := make([]byte, MaxOverhead+Chunk); return &b }}
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
)

// smallBuf is the size of smallPool's buffers.
const smallBuf = 2 << 10

// readerPool holds the bufio.Readers that Readers read streams through.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}

// WriteMsg writes m as one HEADER frame in a single Write.
func WriteMsg(w io.Writer, m proto.Message) error {
	bp := smallPool.Get().(*[]byte)
	defer smallPool.Put(bp)
	b, err := AppendMsg((*bp)[:0], TypeHeader, m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Fail turns the error that stopped a body into the trailer of its END
// frame.
type Fail func(error) proto.Message

// SmallBody is the largest body of known size that WriteMessage sends in
// the same Write as its header.
const SmallBody = Chunk

// WriteMessage writes hdr as a HEADER frame followed by body as DATA frames
// and an END frame, or hdr alone when size is 0 or body is nil. A body of
// known size up to SmallBody leaves with its header in a single Write; a
// larger one streams through a pooled buffer. A body that fails to read,
// or turns out longer or shorter than size (-1: unknown), is ended by an
// END frame carrying fail(err), so the receiver never mistakes it for a
// complete one, and WriteMessage returns that error.
func WriteMessage(w io.Writer, hdr proto.Message, body io.Reader, size int64, fail Fail) error {
	small := body == nil || size == 0 || size > 0 && size <= SmallBody
	pool := &bufPool
	if small && size+int64(proto.Size(hdr))+2*MaxOverhead <= smallBuf {
		pool = &smallPool
	}
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	buf, err := AppendMsg((*bp)[:0], TypeHeader, hdr)
	if err != nil {
		return err
	}
	if body == nil || size == 0 {
		_, err = w.Write(buf)
		return err
	}
	if small && len(buf)+MaxOverhead+int(size)+MaxOverhead <= cap(buf) {
		hdrLen := len(buf)
		buf = AppendHeader(buf, TypeData, int(size))
		start := len(buf)
		buf = buf[:start+int(size)]
		n, rerr := io.ReadFull(body, buf[start:])
		if rerr == nil {
			rerr = checkEOF(body, size)
		}
		if rerr != nil {
			if rerr == io.ErrUnexpectedEOF || rerr == io.EOF {
				rerr = shortBody(int64(n), size)
			}
			// Send what there is, then fail the body.
			out := buf[:hdrLen]
			if n > 0 {
				out = AppendData(out[:hdrLen:hdrLen], buf[start:start+n])
			}
			out = AppendEnd(out, fail(rerr))
			if _, werr := w.Write(out); werr != nil {
				return errors.Join(rerr, werr)
			}
			return rerr
		}
		buf = AppendEnd(buf, nil)
		_, err = w.Write(buf)
		return err
	}
	if _, err := w.Write(buf); err != nil {
		return err
	}
	if pool == &smallPool {
		return CopyBody(w, body, size, fail)
	}
	return copyBody(w, body, size, *bp, fail)
}

// checkEOF makes sure a body of size bytes, all read, has nothing more.
func checkEOF(body io.Reader, size int64) error {
	var extra [1]byte
	for {
		n, err := body.Read(extra[:])
		switch {
		case n > 0:
			return longBody(size)
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
	}
}

// CopyBody writes body as DATA frames and an END frame, enforcing size as
// WriteMessage does. It returns nil once the END frame is written.
func CopyBody(w io.Writer, body io.Reader, size int64, fail Fail) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	return copyBody(w, body, size, *bp, fail)
}

func copyBody(w io.Writer, body io.Reader, size int64, buf []byte, fail Fail) error {
	var sent int64
	for {
		room := buf[MaxOverhead:]
		if size >= 0 && int64(len(room)) > size-sent+1 {
			// Ask for one byte more than is left, to see a longer body
			// without reading far past it.
			room = room[:size-sent+1]
		}
		n, rerr := body.Read(room)
		if n > 0 {
			sent += int64(n)
			if size >= 0 && sent > size {
				return failBody(w, longBody(size), fail)
			}
			// Put the frame header right before the payload, so that
			// header and payload leave in one Write.
			var scratch [MaxOverhead]byte
			hdr := AppendHeader(scratch[:0], TypeData, n)
			start := MaxOverhead - len(hdr)
			copy(buf[start:], hdr)
			if _, err := w.Write(buf[start : MaxOverhead+n]); err != nil {
				return err
			}
		}
		switch {
		case rerr == io.EOF && size >= 0 && sent < size:
			return failBody(w, shortBody(sent, size), fail)
		case rerr == io.EOF:
			_, err := w.Write(AppendEnd(buf[:0], nil))
			return err
		case rerr != nil:
			return failBody(w, fmt.Errorf("read body: %w", rerr), fail)
		}
	}
}

// failBody ends a body with an END frame carrying the failure, and returns
// cause.
func failBody(w io.Writer, cause error, fail Fail) error {
	if _, err := w.Write(AppendEnd(nil, fail(cause))); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// Reader reads the frames of one stream: messages with ReadMsg, and a body
// (DATA frames up to END) with Read, after StartBody. It is not safe for
// concurrent use.
type Reader struct {
	br        *bufio.Reader
	maxHeader int
	scratch   []byte    // payload buffer for messages, reused
	first     firstByte // the byte WaitAttach waited for

	// Trailer turns the payload of an END frame that carries one into the
	// body's error. Without it such a body fails with a generic error.
	Trailer func(payload []byte) error

	left int64 // payload bytes left in the current DATA frame
	size int64 // announced body size, or -1
	got  int64 // body bytes read so far
	err  error // sticky: io.EOF after END, or the failure
}

// NewReader returns a Reader on r, refusing messages over maxHeader bytes,
// with a pooled buffer that Release returns.
func NewReader(r io.Reader, maxHeader int) *Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return &Reader{br: br, maxHeader: maxHeader, size: -1}
}

// Release gives the Reader's buffer back to the pool; the Reader must not
// be used afterwards, unless Attach gives it a buffer again.
func (fr *Reader) Release() {
	fr.detach()
	fr.scratch = nil
}

// detach gives the buffer back to the pool.
func (fr *Reader) detach() {
	if fr.br != nil {
		fr.br.Reset(nil)
		readerPool.Put(fr.br)
		fr.br = nil
	}
}

// Detach gives the Reader's buffer back to the pool while the stream is
// idle, if nothing is buffered, and reports whether it did; Attach takes
// one again for the stream r. An idle stream then holds no buffer.
func (fr *Reader) Detach() bool {
	if fr.br == nil {
		return true
	}
	if fr.br.Buffered() > 0 {
		return false
	}
	fr.detach()
	if cap(fr.scratch) > 1<<10 {
		fr.scratch = nil // a rare large message's buffer
	}
	return true
}

// Attach gives a detached Reader a pooled buffer reading r.
func (fr *Reader) Attach(r io.Reader) {
	if fr.br == nil {
		fr.br = readerPool.Get().(*bufio.Reader)
		fr.br.Reset(r)
	}
}

// WaitAttach waits, without a buffer, until r has something to read, then
// gives a detached Reader a pooled buffer reading r (the byte it waited
// for first). It returns r's error if r ends instead. An idle stream
// waiting for its next message thus holds no buffer.
func (fr *Reader) WaitAttach(r io.Reader) error {
	if fr.br != nil {
		return nil
	}
	if _, err := io.ReadFull(r, fr.first.b[:]); err != nil {
		return err
	}
	fr.first.r, fr.first.used = r, false
	fr.Attach(&fr.first)
	return nil
}

// firstByte yields one byte read ahead, then reads from r.
type firstByte struct {
	b    [1]byte
	used bool
	r    io.Reader
}

func (f *firstByte) Read(p []byte) (int, error) {
	if !f.used && len(p) > 0 {
		f.used = true
		p[0] = f.b[0]
		return 1, nil
	}
	return f.r.Read(p)
}

// Buffered returns how many bytes are read from the stream and not yet
// consumed.
func (fr *Reader) Buffered() int {
	if fr.br == nil {
		return 0
	}
	return fr.br.Buffered()
}

// Peek waits until the stream has at least one byte to read, or fails;
// it consumes nothing.
func (fr *Reader) Peek() error {
	_, err := fr.br.Peek(1)
	return err
}

// next reads a frame's type and payload length.
func (fr *Reader) next() (byte, uint64, error) {
	t, err := fr.br.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	n, err := readUvarint(fr.br)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return t, n, err
}

// readUvarint reads a uvarint, returning the reader's errors as they are
// (a read deadline stays a timeout) and ErrMalformed for one that
// overflows 64 bits.
func readUvarint(r io.ByteReader) (uint64, error) {
	var x uint64
	for i, shift := 0, uint(0); i < binary.MaxVarintLen64; i, shift = i+1, shift+7 {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				break
			}
			return x | uint64(b)<<shift, nil
		}
		x |= uint64(b&0x7f) << shift
	}
	return 0, fmt.Errorf("%w: frame length overflows 64 bits", ErrMalformed)
}

// payload reads a message payload of n bytes, refusing one over the limit
// before allocating. The slice is valid until the next call.
func (fr *Reader) payload(n uint64) ([]byte, error) {
	if n > uint64(fr.maxHeader) {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, n, fr.maxHeader)
	}
	if uint64(cap(fr.scratch)) < n {
		fr.scratch = make([]byte, n, max(n, 256))
	}
	b := fr.scratch[:n]
	if _, err := io.ReadFull(fr.br, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// ReadMsg reads one HEADER frame into m.
func (fr *Reader) ReadMsg(m proto.Message) error {
	t, n, err := fr.next()
	if err != nil {
		return err
	}
	if t != TypeHeader {
		return fmt.Errorf("%w: want a header frame, got type %d", ErrMalformed, t)
	}
	b, err := fr.payload(n)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: decode %T: %v", ErrMalformed, m, err)
	}
	return nil
}

// StartBody prepares Read for a body of the announced size (-1: unknown;
// 0: no body, Read returns io.EOF at once).
func (fr *Reader) StartBody(size int64) {
	fr.size, fr.got, fr.left, fr.err = size, 0, 0, nil
	if size == 0 {
		fr.err = io.EOF
	}
}

// BodyDone reports whether the body started last was read to its END
// (or was empty).
func (fr *Reader) BodyDone() bool { return fr.err == io.EOF }

// BodyErr returns the error the body ended with: nil while it is being
// read, io.EOF after a complete body.
func (fr *Reader) BodyErr() error { return fr.err }

// Read reads body bytes: at most the rest of the current DATA frame, and
// all of it that fits in p (it waits for a frame's bytes still on their
// way). It returns io.EOF after a clean END frame, the trailer's error
// after an END frame that carries one, and an error wrapping
// io.ErrUnexpectedEOF if the stream ends inside the body.
func (fr *Reader) Read(p []byte) (int, error) {
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
	// Take all of the frame that fits in p, not just what the buffer
	// holds: every sender writes a DATA frame whole, so the rest is on its
	// way, and a node relaying what it reads then sends frames as large
	// as it got them, instead of halving them at every buffer edge (the
	// 64 KiB frames of a large body reached the caller as ~9 KiB writes).
	n, err := io.ReadFull(fr.br, p)
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
		fr.err = longBody(fr.size)
		return n, fr.err
	}
	if fr.left == 0 && fr.size >= 0 && fr.got == fr.size && fr.br.Buffered() >= 2 {
		// The whole body is in: take its END now if it is already
		// buffered, so a caller reading exactly size bytes sees the body
		// complete without another Read.
		if b, _ := fr.br.Peek(2); b[0] == TypeEnd && b[1] == 0 {
			_, _ = fr.br.Discard(2)
			fr.err = io.EOF
		}
	}
	return n, nil
}

// nextBodyFrame reads the next DATA or END frame header.
func (fr *Reader) nextBodyFrame() error {
	t, n, err := fr.next()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	switch t {
	case TypeData:
		if n == 0 || n > MaxData {
			return fmt.Errorf("%w: data frame of %d bytes", ErrMalformed, n)
		}
		fr.left = int64(n)
		return nil
	case TypeEnd:
		if n > 0 {
			b, err := fr.payload(n)
			if err != nil {
				return err
			}
			if fr.Trailer != nil {
				if err := fr.Trailer(b); err != nil {
					return err
				}
			} else {
				return errors.New("body aborted by its sender")
			}
		}
		if fr.size >= 0 && fr.got != fr.size {
			return shortBody(fr.got, fr.size)
		}
		return io.EOF
	default:
		return fmt.Errorf("%w: unexpected frame type %d in a body", ErrMalformed, t)
	}
}

// Drain reads and drops what is left of the current body, up to limit
// bytes, and reports whether the body ended cleanly within them.
func (fr *Reader) Drain(limit int64) bool {
	if fr.err != nil {
		return fr.err == io.EOF
	}
	var buf [4 << 10]byte
	for limit > 0 {
		n, err := fr.Read(buf[:min(int64(len(buf)), limit)])
		limit -= int64(n)
		if err != nil {
			return err == io.EOF
		}
	}
	return false
}
