package eventpath

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/restpipe/restpipe/proto/frame"
	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

// past is a deadline that has already passed: setting it on a connection
// wakes every blocked Read and Write on it.
var past = time.Unix(1, 0)

// Client sends events to one plugin's event socket. It keeps the
// connections whose last event completed for the next events (up to
// MaxIdle of them), and opens new ones as needed. Its methods are safe for
// concurrent use.
type Client struct {
	path    string
	maxIdle int

	mu     sync.Mutex
	idle   []*conn // most recently used last
	active map[*conn]struct{}
	closed bool
}

// DefaultMaxIdle is the number of idle connections a Client keeps when
// NewClient is given 0.
const DefaultMaxIdle = 64

// NewClient returns a Client for the event socket at path, keeping up to
// maxIdle idle connections (0: DefaultMaxIdle).
func NewClient(path string, maxIdle int) *Client {
	if maxIdle <= 0 {
		maxIdle = DefaultMaxIdle
	}
	return &Client{path: path, maxIdle: maxIdle, active: map[*conn]struct{}{}}
}

// Close closes every connection: events in flight fail with
// ErrUnavailable, and later Do calls with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	conns := c.idle
	c.idle = nil
	for cn := range c.active {
		conns = append(conns, cn)
	}
	c.mu.Unlock()
	for _, cn := range conns {
		cn.nc.Close()
	}
	return nil
}

// Conns returns how many connections the Client holds: idle ones, and
// ones carrying an event.
func (c *Client) Conns() (idle, active int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.idle), len(c.active)
}

// conn is one event connection.
type conn struct {
	nc net.Conn
	fr *frame.Reader
}

// get returns an idle connection, or a new one.
func (c *Client) get(ctx context.Context) (*conn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if n := len(c.idle); n > 0 {
		cn := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.active[cn] = struct{}{}
		c.mu.Unlock()
		cn.fr.Attach(cn.nc)
		return cn, nil
	}
	c.mu.Unlock()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return nil, fmt.Errorf("%w: connect to its event socket: %w", ErrUnavailable, err)
	}
	cn := &conn{nc: nc, fr: frame.NewReader(nc, MaxHeader)}
	cn.fr.Trailer = trailerError
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		nc.Close()
		cn.fr.Release()
		return nil, ErrClosed
	}
	c.active[cn] = struct{}{}
	c.mu.Unlock()
	return cn, nil
}

// put takes back a connection after its event: into the idle pool when
// reusable, else closed.
func (c *Client) put(cn *conn, reusable bool) {
	c.mu.Lock()
	delete(c.active, cn)
	if reusable && !c.closed && len(c.idle) < c.maxIdle && cn.fr.Detach() {
		c.idle = append(c.idle, cn)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	cn.nc.Close()
	cn.fr.Release()
}

// Reply is a plugin's answer: its header and, when the header announces
// one, its body. Close must be called (even without reading the body):
// it ends the event, and a Reply closed before its body was read to the
// end abandons the event.
type Reply struct {
	Header *pluginv1.ReplyHeader
	ev     *clientEvent
}

// Read reads the reply body: io.EOF at its end, the plugin's reason when
// it could not finish it, ErrUnavailable when the connection broke, and
// the context's error when the event's context ended.
func (r *Reply) Read(p []byte) (int, error) { return r.ev.read(p) }

// Close ends the event.
func (r *Reply) Close() error {
	r.ev.finish()
	return nil
}

// Complete reports whether the reply body was read to its end.
func (r *Reply) Complete() bool { return r.ev.cn.fr.BodyDone() }

// Do sends one event: hdr, then the request body (nil: none) of size
// bytes (-1: unknown; a body that turns out longer or shorter fails the
// event), and returns once the plugin's reply header arrived. A reply
// whose Header.Failure is set carries no body. ctx governs the whole
// event, reply body included: when it ends first, the event's connection
// is closed and the plugin's handler canceled.
//
// The request body is read concurrently with the reply, so a handler can
// stream its reply while the request still arrives; a small body of
// known size is read before Do returns. If body implements io.Closer, its
// Close must interrupt a blocked Read (it is called when the event ends
// before the body was read to its end).
//
// Errors wrap ErrUnavailable (the plugin could not answer), ErrClosed, or
// the context's error.
func (c *Client) Do(ctx context.Context, hdr *pluginv1.EventHeader, body io.Reader, size int64) (*Reply, error) {
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	cn, err := c.get(ctx)
	if err != nil {
		return nil, err
	}
	if body == nil {
		size = 0
	}
	hdr.BodySize = size
	if d, ok := ctx.Deadline(); ok {
		hdr.TimeoutMs = TimeoutMs(time.Until(d))
	}
	ev := &clientEvent{c: c, cn: cn, ctx: ctx, body: body}
	ev.stop = context.AfterFunc(ctx, ev.abort)
	if body == nil || size == 0 || (size > 0 && size <= frame.SmallBody) {
		if err := frame.WriteMessage(cn.nc, hdr, body, size, trailerOf); err != nil {
			return nil, ev.fail(err, "send the event")
		}
		ev.bodySent = true
	} else {
		if err := frame.WriteMsg(cn.nc, hdr); err != nil {
			return nil, ev.fail(err, "send the event")
		}
		ev.sending = make(chan error, 1)
		go func() { ev.sending <- frame.CopyBody(cn.nc, body, size, trailerOf) }()
	}
	rh := new(pluginv1.ReplyHeader)
	if err := cn.fr.ReadMsg(rh); err != nil {
		return nil, ev.fail(err, "read the reply")
	}
	if rh.Failure != nil {
		cn.fr.StartBody(0)
	} else {
		cn.fr.StartBody(rh.BodySize)
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		// The reply came once the event's deadline had passed (the
		// handler's deadline follows ours, and a loaded machine can run
		// the reply before our timer): the event timed out, whatever the
		// handler said. Its connection, with the reply unread, is closed.
		ev.finish()
		return nil, context.DeadlineExceeded
	}
	return &Reply{Header: rh, ev: ev}, nil
}

// clientEvent is one event in flight on a connection.
type clientEvent struct {
	c    *Client
	cn   *conn
	ctx  context.Context
	body io.Reader

	stop     func() bool // stops the context watch
	bodySent bool        // the request body went out with the header
	sending  chan error  // the result of the body sender; nil without one

	once sync.Once
}

// abort runs when the event's context ends first: it wakes every blocked
// Read and Write, which closes the connection (and so cancels the
// plugin's handler) once the event finishes.
func (ev *clientEvent) abort() {
	_ = ev.cn.nc.SetDeadline(past)
	if cl, ok := ev.body.(io.Closer); ok {
		_ = cl.Close()
	}
}

func (ev *clientEvent) read(p []byte) (int, error) {
	n, err := ev.cn.fr.Read(p)
	if err != nil && err != io.EOF {
		err = ev.classify(err, "read the reply body")
	}
	return n, err
}

// fail ends the event on err and returns it classified.
func (ev *clientEvent) fail(err error, what string) error {
	err = ev.classify(err, what)
	ev.finish()
	return err
}

// classify names a failure: the context's error when it ended first, a
// plugin's reason for an unfinished body, else ErrUnavailable.
func (ev *clientEvent) classify(err error, what string) error {
	if ev.ctx.Err() != nil {
		return context.Cause(ev.ctx)
	}
	var be *BodyError
	if errors.As(err, &be) {
		return err
	}
	if errors.Is(err, frame.ErrMalformed) || errors.Is(err, frame.ErrTooLarge) {
		return fmt.Errorf("%w: it broke the protocol (%s): %w", ErrUnavailable, what, err)
	}
	return fmt.Errorf("%w: the connection ended (%s): %w", ErrUnavailable, what, err)
}

// finish ends the event once: it stops the body sender and gives the
// connection back, reusable only if both bodies went to their ends.
func (ev *clientEvent) finish() {
	ev.once.Do(func() {
		// The context watch not stopped in time means the context ended:
		// abort runs or ran, and the connection is dead.
		aborted := !ev.stop()
		sent := ev.bodySent
		if ev.sending != nil {
			select {
			case err := <-ev.sending:
				sent = err == nil
			default:
				// The body is still being sent: the reply ended first
				// (or the event failed), so the rest is not wanted. Wake
				// the sender; if it was just writing the body's END, that
				// write decides.
				_ = ev.cn.nc.SetWriteDeadline(past)
				if cl, ok := ev.body.(io.Closer); ok {
					_ = cl.Close()
				}
				sent = <-ev.sending == nil
				if sent {
					_ = ev.cn.nc.SetWriteDeadline(time.Time{})
				}
			}
		}
		ev.c.put(ev.cn, sent && !aborted && ev.cn.fr.BodyDone())
	})
}
