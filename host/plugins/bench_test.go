package plugins

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/internal/hopbench"
)

// BenchmarkPluginHop is the plugin hop alone (node -> plugin -> node: the
// route table, one event on the plugin's event socket, the time plugin's
// handler, the reply read to its end) beside its floor, a 128-byte
// ping-pong on a Unix socket to a child process.
func BenchmarkPluginHop(b *testing.B) {
	e := newEnv(b, nil)
	e.install(bin("time"), "time")
	e.start()
	floor := hopbench.PingPongChild(b, 128)
	ctx := context.Background()
	hopbench.Run(b, func() error {
		n, err := e.discard(ctx, "get", "time", nil)
		if err == nil && n < int64(len(`{"time_from_server":1}`)) {
			err = fmt.Errorf("reply of %d bytes", n)
		}
		return err
	}, floor)
}

// BenchmarkPluginHopEcho is the plugin hop with a 64 KiB body each way
// (post echo), beside a 64 KiB ping-pong to a child process.
func BenchmarkPluginHopEcho(b *testing.B) {
	e := newEnv(b, nil)
	e.install(bin("echo"), "echo")
	e.start()
	const size = 64 << 10
	floor := hopbench.PingPongChild(b, size)
	body := bytes.Repeat([]byte("x"), size)
	ctx := context.Background()
	b.SetBytes(2 * size)
	hopbench.Run(b, func() error {
		n, err := e.discard(ctx, "post", "echo", body)
		if err == nil && n != size {
			err = fmt.Errorf("echoed %d bytes, want %d", n, size)
		}
		return err
	}, floor)
}

// discard sends an event through the route table and reads the reply to
// its end, keeping none of it: what a node does when it relays a reply.
func (e *env) discard(ctx context.Context, verb, noun string, body []byte) (int64, error) {
	ev := &host.Event{ID: "b", Verb: verb, Noun: noun, Peer: "peer1"}
	if body != nil {
		ev.Body, ev.Size, ev.ContentType = bytes.NewReader(body), int64(len(body)), "application/octet-stream"
	}
	rep, err := e.table.Handle(ctx, ev)
	if err != nil {
		return 0, err
	}
	defer rep.Close()
	return io.Copy(io.Discard, rep.Body)
}
