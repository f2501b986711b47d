package pluginsdk

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

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
