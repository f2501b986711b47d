package frame

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

// A DATA frame is read whole even when its bytes arrive in pieces, so a
// node relaying a body keeps the frames as large as it got them.
func TestReadTakesTheWholeFrame(t *testing.T) {
	first := bytes.Repeat([]byte("a"), Chunk)
	second := bytes.Repeat([]byte("b"), 100)
	var stream []byte
	stream = AppendData(stream, first)
	stream = AppendData(stream, second)
	stream = AppendEnd(stream, nil)

	// One byte per read of the stream: the worst split there is.
	fr := NewReader(iotest.OneByteReader(bytes.NewReader(stream)), 1<<10)
	defer fr.Release()
	fr.StartBody(int64(len(first) + len(second)))
	p := make([]byte, 2*Chunk)
	n, err := fr.Read(p)
	if err != nil || n != len(first) || !bytes.Equal(p[:n], first) {
		t.Fatalf("first Read = %d, %v; want the whole first frame, %d bytes", n, err, len(first))
	}
	n, err = fr.Read(p)
	if n != len(second) || !bytes.Equal(p[:n], second) {
		t.Fatalf("second Read = %d, %v; want the second frame, %d bytes", n, err, len(second))
	}
	if err == nil {
		_, err = fr.Read(p)
	}
	if err != io.EOF {
		t.Fatalf("after the body: %v, want io.EOF", err)
	}
}

// A stream that ends inside a frame is a broken body, never a short one.
func TestReadInsideAFrameFails(t *testing.T) {
	stream := AppendData(nil, bytes.Repeat([]byte("a"), 1000))[:500]
	fr := NewReader(iotest.OneByteReader(bytes.NewReader(stream)), 1<<10)
	defer fr.Release()
	fr.StartBody(-1)
	_, err := io.ReadAll(fr)
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("ReadAll = %v, want io.ErrUnexpectedEOF", err)
	}
}
