package link

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	linkv1 "github.com/restpipe/restpipe/proto/link/v1"
)

const fuzzMaxHeader = 4 << 10

// encodeEvent is a well-formed request stream: header, body, END.
func encodeEvent(tb testing.TB, req *linkv1.Request, body []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	hdr := &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Request{Request: req}}
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	if err := writeMessage(&buf, hdr, r, req.BodySize, errorToWire); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// decodeStream reads a request stream the way a receiving session does.
func decodeStream(data []byte) (*linkv1.Request, []byte, error) {
	fr := newFrameReader(bytes.NewReader(data), fuzzMaxHeader)
	defer fr.release()
	var hdr linkv1.StreamHeader
	if err := fr.readMsg(&hdr); err != nil {
		return nil, nil, err
	}
	req := hdr.GetRequest()
	if req == nil {
		return nil, nil, nil
	}
	fr.startBody(req.BodySize)
	body, err := io.ReadAll(fr)
	return req, body, err
}

func TestFrameRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, 100, dataChunk - 1, dataChunk, dataChunk + 1, 3*dataChunk + 7} {
		body := bytes.Repeat([]byte{'z'}, size)
		for _, known := range []bool{true, false} {
			req := &linkv1.Request{Id: "1", Verb: "post", Noun: "echo", BodySize: -1,
				Query: map[string]*linkv1.Values{"x": {Values: []string{"1", "2"}}}}
			if known {
				req.BodySize = int64(size)
			}
			var in []byte
			if size > 0 || !known {
				in = body
			}
			got, gotBody, err := decodeStream(encodeEvent(t, req, in))
			if err != nil {
				t.Fatalf("size %d known %v: %v", size, known, err)
			}
			if !proto.Equal(got, req) || !bytes.Equal(gotBody, body) {
				t.Fatalf("size %d known %v: got %v and %d body bytes", size, known, got, len(gotBody))
			}
		}
	}
}

func TestFrameErrors(t *testing.T) {
	valid := encodeEvent(t, &linkv1.Request{Verb: "post", Noun: "x", BodySize: 5}, []byte("hello"))
	hdrLen := bytes.IndexByte(valid[1:], frameData) + 1 // where the body starts (no 2 in this short header)

	tests := []struct {
		name string
		data []byte
		want error  // errors.Is target, or nil to match text
		text string // in the error
	}{
		{"empty stream", nil, io.EOF, ""},
		{"oversized header", binary.AppendUvarint([]byte{frameHeader}, 1<<40), ErrFrameTooLarge, "limit"},
		{"bad varint", append([]byte{frameHeader}, bytes.Repeat([]byte{0xff}, 11)...), ErrBadFrame, ""},
		{"data frame first", []byte{frameData, 1, 'x'}, ErrBadFrame, "want a header frame"},
		{"header cut short", valid[:4], io.ErrUnexpectedEOF, ""},
		{"garbage header", []byte{frameHeader, 3, 0xff, 0xff, 0xff}, ErrBadFrame, "decode"},
		{"body cut short", valid[:len(valid)-3], io.ErrUnexpectedEOF, ""},
		{"no END", valid[:len(valid)-2], io.ErrUnexpectedEOF, ""},
		{"body longer than announced", append(append([]byte{}, valid[:hdrLen]...), frameData, 6, 'h', 'e', 'l', 'l', 'o', '!', frameEnd, 0), ErrBadFrame, "longer"},
		{"body shorter than announced", append(append([]byte{}, valid[:hdrLen]...), frameData, 4, 'h', 'e', 'l', 'l', frameEnd, 0), ErrBadFrame, "announced"},
		{"empty data frame", append(append([]byte{}, valid[:hdrLen]...), frameData, 0), ErrBadFrame, "data frame of 0"},
		{"unknown frame type", append(append([]byte{}, valid[:hdrLen]...), 9, 0), ErrBadFrame, "type 9"},
		{"oversized trailer", binary.AppendUvarint(append(append([]byte{}, valid[:hdrLen]...), frameEnd), 1<<40), ErrFrameTooLarge, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := decodeStream(tt.data)
			if err == nil {
				t.Fatal("decode succeeded, want an error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error = %v, want it to mention %q", err, tt.text)
			}
		})
	}
}

func TestTrailerBecomesTheBodyError(t *testing.T) {
	var buf bytes.Buffer
	hdr := &linkv1.Reply{BodySize: -1}
	failing := io.MultiReader(strings.NewReader("part"), errReader{errors.New("plugin crashed")})
	err := writeMessage(&buf, hdr, failing, -1, func(err error) *linkv1.Error {
		return &linkv1.Error{Kind: "plugin_unavailable", Message: err.Error()}
	})
	if err == nil {
		t.Fatal("writeMessage hid the body's failure")
	}
	fr := newFrameReader(&buf, fuzzMaxHeader)
	defer fr.release()
	var rep linkv1.Reply
	if err := fr.readMsg(&rep); err != nil {
		t.Fatal(err)
	}
	fr.startBody(-1)
	fr.trailer = func(e *linkv1.Error) error { return errorFromWire(e) }
	body, err := io.ReadAll(fr)
	if string(body) != "part" || err == nil || !strings.Contains(err.Error(), "plugin_unavailable: read body: plugin crashed") {
		t.Errorf("body %q, error %v; want the part sent and the trailer's error", body, err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// TestOversizedFrameAllocatesNothing checks the limit is applied before the
// payload is allocated: a frame announcing a terabyte costs nothing.
func TestOversizedFrameAllocatesNothing(t *testing.T) {
	data := binary.AppendUvarint([]byte{frameHeader}, 1<<40)
	decodeStream(data) // warm the pools
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		if _, _, err := decodeStream(data); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("error = %v, want ErrFrameTooLarge", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 100; per > 4<<10 {
		t.Errorf("each refused frame allocated %d bytes, want under 4 KiB", per)
	}
}

// FuzzFrameDecode feeds arbitrary bytes to the stream decoder and the hello
// reader: they must never panic, and whatever they accept respects the
// limits.
func FuzzFrameDecode(f *testing.F) {
	f.Add(encodeEvent(f, &linkv1.Request{Id: "1", Verb: "get", Noun: "time"}, nil))
	f.Add(encodeEvent(f, &linkv1.Request{Verb: "post", Noun: "echo", BodySize: 3}, []byte("abc")))
	f.Add(encodeEvent(f, &linkv1.Request{Verb: "post", Noun: "echo", BodySize: -1}, bytes.Repeat([]byte("x"), 100)))
	f.Add(encodeEvent(f, &linkv1.Request{Verb: "get", Noun: "cat", Args: []string{"a", "b"},
		Query: map[string]*linkv1.Values{"q": {Values: []string{"1"}}}}, nil))
	cancel, _ := appendMsgFrame(nil, frameHeader, &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Cancel{Cancel: &linkv1.Cancel{StreamId: 7}}})
	f.Add(cancel)
	hello, _ := appendMsgFrame(nil, frameHeader, &linkv1.Hello{ProtocolVersion: 1, MinProtocolVersion: 1})
	f.Add(hello)
	f.Add(binary.AppendUvarint([]byte{frameHeader}, 1<<40))
	f.Add([]byte{frameHeader, 0, frameData, 1, 'x', frameEnd, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		req, body, err := decodeStream(data)
		if err == nil && req != nil {
			if req.BodySize >= 0 && int64(len(body)) != req.BodySize {
				t.Fatalf("accepted a body of %d bytes announced as %d", len(body), req.BodySize)
			}
			if proto.Size(req) > fuzzMaxHeader {
				t.Fatalf("accepted a header of %d bytes over the %d limit", proto.Size(req), fuzzMaxHeader)
			}
		}
		var h linkv1.Hello
		if err := readExact(bytes.NewReader(data), fuzzMaxHeader, &h); err == nil && proto.Size(&h) > fuzzMaxHeader {
			t.Fatalf("accepted a hello over the limit")
		}
	})
}
