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

	"github.com/restpipe/restpipe/proto/frame"
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
	if err := frame.WriteMessage(&buf, hdr, r, req.BodySize, trailerOf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// decodeStream reads a request stream the way a receiving session does.
func decodeStream(data []byte) (*linkv1.Request, []byte, error) {
	fr := frame.NewReader(bytes.NewReader(data), fuzzMaxHeader)
	defer fr.Release()
	fr.Trailer = trailerError
	var hdr linkv1.StreamHeader
	if err := fr.ReadMsg(&hdr); err != nil {
		return nil, nil, err
	}
	req := hdr.GetRequest()
	if req == nil {
		return nil, nil, nil
	}
	fr.StartBody(req.BodySize)
	body, err := io.ReadAll(fr)
	return req, body, err
}

func TestFrameRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, 100, frame.Chunk - 1, frame.Chunk, frame.Chunk + 1, 3*frame.Chunk + 7} {
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
	hdrLen := bytes.IndexByte(valid[1:], frame.TypeData) + 1 // where the body starts (no 2 in this short header)

	tests := []struct {
		name string
		data []byte
		want error  // errors.Is target, or nil to match text
		text string // in the error
	}{
		{"empty stream", nil, io.EOF, ""},
		{"oversized header", binary.AppendUvarint([]byte{frame.TypeHeader}, 1<<40), frame.ErrTooLarge, "limit"},
		{"bad varint", append([]byte{frame.TypeHeader}, bytes.Repeat([]byte{0xff}, 11)...), frame.ErrMalformed, ""},
		{"data frame first", []byte{frame.TypeData, 1, 'x'}, frame.ErrMalformed, "want a header frame"},
		{"header cut short", valid[:4], io.ErrUnexpectedEOF, ""},
		{"garbage header", []byte{frame.TypeHeader, 3, 0xff, 0xff, 0xff}, frame.ErrMalformed, "decode"},
		{"body cut short", valid[:len(valid)-3], io.ErrUnexpectedEOF, ""},
		{"no END", valid[:len(valid)-2], io.ErrUnexpectedEOF, ""},
		{"body longer than announced", append(append([]byte{}, valid[:hdrLen]...), frame.TypeData, 6, 'h', 'e', 'l', 'l', 'o', '!', frame.TypeEnd, 0), frame.ErrMalformed, "longer"},
		{"body shorter than announced", append(append([]byte{}, valid[:hdrLen]...), frame.TypeData, 4, 'h', 'e', 'l', 'l', frame.TypeEnd, 0), frame.ErrMalformed, "announced"},
		{"empty data frame", append(append([]byte{}, valid[:hdrLen]...), frame.TypeData, 0), frame.ErrMalformed, "data frame of 0"},
		{"unknown frame type", append(append([]byte{}, valid[:hdrLen]...), 9, 0), frame.ErrMalformed, "type 9"},
		{"oversized trailer", binary.AppendUvarint(append(append([]byte{}, valid[:hdrLen]...), frame.TypeEnd), 1<<40), frame.ErrTooLarge, ""},
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
	err := frame.WriteMessage(&buf, hdr, failing, -1, func(err error) proto.Message {
		return &linkv1.Trailer{Error: &linkv1.Error{Kind: "plugin_unavailable", Message: err.Error()}}
	})
	if err == nil {
		t.Fatal("WriteMessage hid the body's failure")
	}
	fr := frame.NewReader(&buf, fuzzMaxHeader)
	defer fr.Release()
	var rep linkv1.Reply
	if err := fr.ReadMsg(&rep); err != nil {
		t.Fatal(err)
	}
	fr.StartBody(-1)
	fr.Trailer = trailerError
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
	data := binary.AppendUvarint([]byte{frame.TypeHeader}, 1<<40)
	decodeStream(data) // warm the pools
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		if _, _, err := decodeStream(data); !errors.Is(err, frame.ErrTooLarge) {
			t.Fatalf("error = %v, want frame.ErrTooLarge", err)
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
	cancel, _ := frame.AppendMsg(nil, frame.TypeHeader, &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Cancel{Cancel: &linkv1.Cancel{StreamId: 7}}})
	f.Add(cancel)
	hello, _ := frame.AppendMsg(nil, frame.TypeHeader, &linkv1.Hello{ProtocolVersion: 1, MinProtocolVersion: 1})
	f.Add(hello)
	f.Add(binary.AppendUvarint([]byte{frame.TypeHeader}, 1<<40))
	f.Add([]byte{frame.TypeHeader, 0, frame.TypeData, 1, 'x', frame.TypeEnd, 0})
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
