package pluginsdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

// fakeStream is the plugin's end of a Handle call: it hands out requests
// and records what the plugin sends.
type fakeStream struct {
	grpc.ServerStream
	in   []*pluginv1.HandleRequest
	sent []*pluginv1.HandleResponse
}

func (f *fakeStream) Context() context.Context { return context.Background() }

func (f *fakeStream) Recv() (*pluginv1.HandleRequest, error) {
	if len(f.in) == 0 {
		return nil, io.EOF
	}
	m := f.in[0]
	f.in = f.in[1:]
	return m, nil
}

func (f *fakeStream) Send(m *pluginv1.HandleResponse) error {
	f.sent = append(f.sent, m)
	return nil
}

// shape describes the messages sent: "header(size)", "inline(n)",
// "chunk(n)", "end", "end(error)", "failure".
func (f *fakeStream) shape() string {
	var s []string
	for _, m := range f.sent {
		switch m := m.Msg.(type) {
		case *pluginv1.HandleResponse_Header:
			if m.Header.BodyInline {
				s = append(s, fmt.Sprintf("inline(%d)", len(m.Header.InlineBody)))
			} else {
				s = append(s, fmt.Sprintf("header(%d)", m.Header.BodySize))
			}
		case *pluginv1.HandleResponse_Chunk:
			s = append(s, fmt.Sprintf("chunk(%d)", len(m.Chunk)))
		case *pluginv1.HandleResponse_End:
			if m.End.Error != "" {
				s = append(s, "end(error)")
			} else {
				s = append(s, "end")
			}
		case *pluginv1.HandleResponse_Failure:
			s = append(s, "failure")
		}
	}
	return strings.Join(s, " ")
}

func TestSendReplyShape(t *testing.T) {
	tests := []struct {
		name string
		rep  *Reply
		want string
	}{
		{"no body", &Reply{}, "header(0)"},
		{"empty", Bytes("x/y", nil), "inline(0)"},
		{"small", Text("hello"), "inline(5)"},
		{"inline limit", Bytes("x/y", make([]byte, inlineMax)), fmt.Sprintf("inline(%d)", inlineMax)},
		{"past the inline limit", Bytes("x/y", make([]byte, inlineMax+1)), fmt.Sprintf("header(%d) chunk(%d) end", inlineMax+1, inlineMax+1)},
		{"chunks", Bytes("x/y", make([]byte, 2*chunkSize+1)), fmt.Sprintf("header(%d) chunk(%d) chunk(%d) chunk(1) end", 2*chunkSize+1, chunkSize, chunkSize)},
		{"small of unknown size", Stream("x/y", strings.NewReader("hello"), -1), "header(-1) chunk(5) end"},
		{"size left at 0", &Reply{Body: strings.NewReader("hello")}, "header(-1) chunk(1) chunk(4) end"},
		{"empty, size left at 0", &Reply{Body: strings.NewReader("")}, "inline(0)"},
		{"short inline", Stream("x/y", strings.NewReader("hi"), 5), "failure"},
		{"long inline", Stream("x/y", strings.NewReader("hello!"), 5), "failure"},
		{"short stream", Stream("x/y", strings.NewReader("hi"), inlineMax+1), fmt.Sprintf("header(%d) chunk(2) end(error)", inlineMax+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeStream{}
			if err := sendReply(f, tt.rep); err != nil {
				t.Fatalf("sendReply() = %v", err)
			}
			if got := f.shape(); got != tt.want {
				t.Errorf("sendReply() sent %s, want %s", got, tt.want)
			}
		})
	}
}

func TestHandleBeforeDescribe(t *testing.T) {
	p := New("test", "1")
	p.Configure(func(Config) error { return nil })
	p.Handle("get", "x", func(context.Context, *Event) (*Reply, error) { return Text("hi"), nil })
	f := &fakeStream{in: []*pluginv1.HandleRequest{{Msg: &pluginv1.HandleRequest_Header{Header: &pluginv1.EventHeader{Verb: "get", Noun: "x"}}}}}
	if err := newServer(p).Handle(f); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Handle() before Describe = %v, want FailedPrecondition", err)
	}
}

// fetchStream is a Fetch server stream that records what it is sent.
type fetchStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent []*pluginv1.HandleResponse
}

func (f *fetchStream) Context() context.Context { return f.ctx }

func (f *fetchStream) Send(m *pluginv1.HandleResponse) error {
	f.sent = append(f.sent, m)
	return nil
}

// ctxReader fails once its context is done: a streamed body that needs its
// handler's context.
type ctxReader struct {
	ctx    context.Context
	left   int
	closed *atomic.Bool
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if r.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.left)
	r.left -= n
	return n, nil
}

func (r *ctxReader) Close() error { r.closed.Store(true); return nil }

func TestCallAndFetch(t *testing.T) {
	var closed atomic.Bool
	p := New("t", "1")
	p.Handle("get", "small", func(context.Context, *Event) (*Reply, error) { return Text("hi"), nil })
	p.Handle("get", "big", func(ctx context.Context, ev *Event) (*Reply, error) {
		return Stream("application/octet-stream", &ctxReader{ctx: ctx, left: 100 << 10, closed: &closed}, 100<<10), nil
	})
	p.Handle("get", "fail", func(context.Context, *Event) (*Reply, error) { return nil, errors.New("nope") })
	s := newServer(p)
	if _, err := s.Describe(context.Background(), &pluginv1.DescribeRequest{}); err != nil {
		t.Fatal(err)
	}
	call := func(ctx context.Context, noun string) *pluginv1.CallResponse {
		t.Helper()
		resp, err := s.Call(ctx, &pluginv1.CallRequest{Header: &pluginv1.EventHeader{Verb: "get", Noun: noun}})
		if err != nil {
			t.Fatalf("Call(%s) = %v", noun, err)
		}
		return resp
	}

	if r := call(context.Background(), "small"); r.Ticket != 0 || string(r.GetReply().InlineBody) != "hi" {
		t.Errorf("small reply = %v, want it inline", r)
	}
	if r := call(context.Background(), "fail"); r.GetFailure().GetMessage() != "nope" {
		t.Errorf("failing handler = %v, want its exception", r)
	}

	// A big reply is ticketed; its handler's context lives on until Fetch.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := call(ctx, "big")
	if r.Ticket == 0 || r.GetReply().BodyInline || r.GetReply().BodySize != 100<<10 {
		t.Fatalf("big reply = %v, want a ticket", r)
	}
	f := &fetchStream{ctx: context.Background()}
	if err := s.Fetch(&pluginv1.FetchRequest{Ticket: r.Ticket}, f); err != nil {
		t.Fatal(err)
	}
	var got int
	for _, m := range f.sent {
		got += len(m.GetChunk())
	}
	if last := f.sent[len(f.sent)-1].GetEnd(); last == nil || last.Error != "" || got != 100<<10 || !closed.Load() {
		t.Errorf("fetched %d bytes, last %v, body closed %v; want all of it, a clean end, and the body closed", got, f.sent[len(f.sent)-1], closed.Load())
	}
	if err := s.Fetch(&pluginv1.FetchRequest{Ticket: r.Ticket}, f); status.Code(err) != codes.NotFound {
		t.Errorf("a second Fetch = %v, want NotFound", err)
	}

	// A ticket nobody fetches is dropped at the event's deadline, and its
	// body closed.
	closed.Store(false)
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	r = call(short, "big")
	deadline := time.Now().Add(5 * time.Second)
	for !closed.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // waiting for the deadline is the scenario
	}
	if !closed.Load() {
		t.Error("an unfetched body was not closed at its deadline")
	}
	if err := s.Fetch(&pluginv1.FetchRequest{Ticket: r.Ticket}, f); status.Code(err) != codes.NotFound {
		t.Errorf("Fetch after the deadline = %v, want NotFound", err)
	}
}
