package link

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
)

// TestCloseAfterDrainDeliversTheLastReplies drains a server with events
// from its client in flight, lets them all answer at once, and closes the
// server the moment it is idle, as a node does at the end of its grace:
// every reply reaches the client whole, though the client reads the
// bodies only after the server has closed. (The replies' last frames can
// still be in the connection's write buffer when the last handler returns;
// Close used to drop them, and the callers got link_lost.)
func TestCloseAfterDrainDeliversTheLastReplies(t *testing.T) {
	const events, size = 16, 64 << 10
	body := bytes.Repeat([]byte("r"), size)
	release, read := make(chan struct{}), make(chan struct{})
	entered := make(chan struct{}, events)
	handler := host.HandlerFunc(func(ctx context.Context, ev *host.Event) (*host.Reply, error) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &host.Reply{ContentType: "application/octet-stream", Size: size, Body: io.NopCloser(bytes.NewReader(body))}, nil
	})
	p := newPKI(t)
	srv := startServer(t, p, func(c *ServerConfig) { c.Handler = handler })
	// The replies cross a 2 MB/s path: when the last handler returns, its
	// reply's frames wait in the server's buffers.
	proxy := &cutProxy{target: srv.addr, down: 2 << 20}
	proxy.start(t)
	cl := startClient(t, p, "c1", proxy.addr(), nil)
	sess := cl.waitUp(t, 10*time.Second)

	var wg sync.WaitGroup
	errs := make([]error, events)
	got := make([]string, events)
	for i := range events {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = slowCall(sess, read)
		}()
	}
	for range events {
		<-entered
	}
	srv.Drain()
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	srv.stop(t)
	close(read) // only now do the callers read their replies' bodies
	wg.Wait()
	for i := range events {
		if errs[i] != nil || len(got[i]) != size {
			t.Errorf("event %d: %d bytes, error %v; want the whole %d-byte reply", i, len(got[i]), errs[i], size)
		}
	}
}

// slowCall sends an event and reads its reply's body only once read is
// closed: until then the reply waits in the client's buffers.
func slowCall(h host.Handler, read <-chan struct{}) (string, error) {
	rep, err := h.Handle(context.Background(), &host.Event{ID: "test", Verb: "get", Noun: "last"})
	if err != nil {
		return "", err
	}
	defer rep.Close()
	<-read
	b, err := io.ReadAll(rep.Body)
	return string(b), err
}
