package link

import (
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// muxConn is the connection yamux runs on. It counts the bytes each way,
// and it commits yamux's writes in groups: yamux's send loop writes each
// frame's header and body as separate calls, and sent as they come, every
// frame of every stream would be a TLS record and a syscall of its own.
// Write only appends to a buffer; a flusher goroutine sends what has
// accumulated, in one TLS write, whenever it gets the CPU. A lone event
// costs one record and one syscall, as before; under load, the frames that
// queued while the previous write was in the kernel leave together (at 64
// events in flight, a few records per write instead of one per frame).
//
// The flusher runs while there is something to write and a little after
// (flusherLinger), then exits: an idle link holds no goroutine for it.
// Write blocks while maxPending bytes wait, so a slow network slows
// yamux's send loop (and its ConnectionWriteTimeout fires) as a direct
// write would. Close drops the TCP connection at once instead of sending
// TLS close_notify, which can block for seconds on a dead link while every
// stream waits.
type muxConn struct {
	*tls.Conn
	raw     *batchConn // under the TLS connection; nil when TLS runs on another conn
	in, out *atomic.Uint64

	mu      sync.Mutex
	pending []byte        // appended by Write, taken by the flusher
	spare   []byte        // the flusher's previous buffer, for reuse
	running bool          // a flusher goroutine exists
	err     error         // the write error that stopped the flusher
	closed  bool          // Close was called
	wake    chan struct{} // pokes the flusher; capacity 1
	room    chan struct{} // tells a blocked Write the flusher took the pending bytes; capacity 1
	closing chan struct{} // closed by Close: the flusher exits at once
	done    sync.WaitGroup
	// writing is set while the flusher writes a batch it took; settled
	// are the waiters (Settle) to close once nothing is pending or being
	// written.
	writing bool
	settled []chan struct{}

	// Frames that find the link idle are written inline, from yamux's
	// send loop, without waking the flusher (see Write): held is such a
	// data frame's header, waiting for its body (empty: none waits);
	// bodyNext is the length of the body the next Write carries (0: the
	// next Write starts a frame); lastEnd is when the previous frame was
	// queued or written.
	held     []byte
	bodyNext int
	lastEnd  time.Time
}

const (
	// maxPending bounds the bytes Write accepts ahead of the network.
	maxPending = 256 << 10
	// keepIdle bounds the buffers an idle link keeps (its flusher gone):
	// a busy link reuses its two buffers, whatever their size.
	keepIdle = 4 << 10
	// flusherLinger is how long the flusher waits for more before it
	// exits: long enough to stay up between the events of a busy link,
	// short enough that idle links (pinged every 2 s) hold none.
	flusherLinger = 50 * time.Millisecond
	// inlineGap is how long after the previous write a frame must come to
	// be written inline: frames that follow each other closer than that
	// are a busy link's, which the flusher sends in groups.
	inlineGap = 50 * time.Microsecond
	// yamux's frame header: 12 bytes, the type at 1, the length at 8; a
	// data frame (type 0) of length n is followed by a Write of its n-byte
	// body (yamux's send loop writes the header, then the body).
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

func newMuxConn(tc *tls.Conn, in, out *atomic.Uint64) *muxConn {
	c := &muxConn{Conn: tc, in: in, out: out, wake: make(chan struct{}, 1), room: make(chan struct{}, 1), closing: make(chan struct{})}
	c.raw, _ = tc.NetConn().(*batchConn)
	return c
}

func (c *muxConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(uint64(n))
	return n, err
}

// Write queues p for the flusher, or writes it at once when it finds the
// link idle. Only yamux's send loop calls it.
//
// A frame that comes more than inlineGap after the previous write, with
// nothing pending or being written, is written inline: at c=1 that saves
// waking the flusher (a goroutine hand-off) for every frame. A data
// frame's header is held until its body comes, and both go out in one
// syscall (two TLS records). Frames closer together queue for the
// flusher, which groups them.
func (c *muxConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for len(c.pending) >= maxPending && c.err == nil && !c.closed {
		c.mu.Unlock()
		<-c.room
		c.mu.Lock()
	}
	if c.err != nil || c.closed {
		err := c.err
		c.mu.Unlock()
		if err == nil {
			err = errConnClosed
		}
		return 0, err
	}
	if c.bodyNext > 0 {
		// p is the body of the frame whose header came last.
		c.bodyNext = 0
		if len(c.held) > 0 {
			return c.writeInline(c.held, p)
		}
	} else {
		now := time.Now()
		idle := len(c.pending) == 0 && !c.writing && now.Sub(c.lastEnd) > inlineGap
		if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData {
			c.bodyNext = int(binary.BigEndian.Uint32(p[8:]))
		}
		switch {
		case idle && c.bodyNext > 0:
			c.held = append(c.held[:0], p...)
			c.mu.Unlock()
			return len(p), nil
		case idle:
			return c.writeInline(nil, p)
		}
		c.lastEnd = now
	}
	c.pending = append(c.pending, p...)
	start := !c.running
	c.running = true
	c.mu.Unlock()
	if start {
		c.done.Add(1)
		go c.flush()
	} else {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// flush sends the pending bytes until there are none for flusherLinger.
func (c *muxConn) flush() {
	defer c.done.Done()
	linger := time.NewTimer(flusherLinger)
	defer linger.Stop()
	for {
		c.mu.Lock()
		buf := c.pending
		if len(buf) == 0 {
			c.mu.Unlock()
			linger.Reset(flusherLinger)
			select {
			case <-c.wake:
				continue
			case <-c.closing:
				c.mu.Lock()
				c.running = false
				c.mu.Unlock()
				return
			case <-linger.C:
			}
			c.mu.Lock()
			if len(c.pending) > 0 {
				c.mu.Unlock()
				continue
			}
			c.running = false
			if cap(c.pending) > keepIdle {
				c.pending = nil
			}
			if cap(c.spare) > keepIdle {
				c.spare = nil
			}
			c.mu.Unlock()
			return
		}
		c.pending = c.spare[:0]
		c.spare = nil
		c.writing = true
		c.mu.Unlock()
		select {
		case c.room <- struct{}{}:
		default:
		}
		n, err := c.write(buf)
		c.out.Add(uint64(n))
		c.mu.Lock()
		c.spare = buf[:0]
		c.writing = false
		if len(c.pending) == 0 || err != nil {
			c.wakeSettled()
		}
		if err != nil {
			c.err = err
			c.running = false
			c.mu.Unlock()
			select {
			case c.room <- struct{}{}:
			default:
			}
			return
		}
		c.mu.Unlock()
	}
}

// writeInline writes head (nil, or a held header) and p from the caller's
// goroutine, in one syscall; c.mu is held and is released.
func (c *muxConn) writeInline(head, p []byte) (int, error) {
	c.writing = true
	c.mu.Unlock()
	if c.raw != nil {
		c.raw.begin()
	}
	var n int
	var err error
	if head != nil {
		n, err = c.Conn.Write(head)
	}
	if err == nil {
		var m int
		m, err = c.Conn.Write(p)
		n += m
	}
	if c.raw != nil {
		if ferr := c.raw.end(maxPending + maxPending/8); err == nil {
			err = ferr
		}
	}
	c.out.Add(uint64(n))
	c.mu.Lock()
	c.writing, c.held = false, c.held[:0]
	if err != nil && c.err == nil {
		c.err = err
	}
	c.lastEnd = time.Now()
	c.wakeSettled()
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// write sends one batch through TLS, its records in one syscall.
func (c *muxConn) write(buf []byte) (int, error) {
	if c.raw == nil {
		return c.Conn.Write(buf)
	}
	c.raw.begin()
	n, err := c.Conn.Write(buf)
	if ferr := c.raw.end(maxPending + maxPending/8); err == nil {
		err = ferr
	}
	return n, err
}

// Settle waits until every byte written so far has gone to the network
// (or failed to), or until timeout: what is already written reaches the
// peer before the session is closed on purpose. It reports whether it
// settled.
func (c *muxConn) Settle(timeout time.Duration) bool {
	c.mu.Lock()
	if (len(c.pending) == 0 && !c.writing && len(c.held) == 0) || c.err != nil || c.closed {
		c.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	c.settled = append(c.settled, ch)
	c.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-c.closing:
		return true
	case <-t.C:
		return false
	}
}

// wakeSettled wakes the waiters of Settle; c.mu is held.
func (c *muxConn) wakeSettled() {
	for _, ch := range c.settled {
		close(ch)
	}
	c.settled = nil
}

// Close drops the connection; a flusher still writing fails and exits.
// It does not wait for the flusher (yamux closes the connection while its
// streams' readers spin on the closed session, until it marks each one
// closed: Close must be quick); the session waits for it (wait).
func (c *muxConn) Close() error {
	c.mu.Lock()
	if !c.closed {
		close(c.closing)
	}
	c.closed = true
	c.mu.Unlock()
	select {
	case c.room <- struct{}{}:
	default:
	}
	return c.Conn.NetConn().Close()
}

// wait returns once the flusher has exited; after Close, it is quick.
func (c *muxConn) wait() { c.done.Wait() }

// batchConn is the TCP connection under a link's TLS. While the flusher
// writes a batch through TLS (batch mode), it gathers the TLS records that
// batch becomes and sends them in one syscall when the batch ends:
// crypto/tls writes each record (16 KiB at most) with a write of its own.
// Outside batch mode (the handshake; a record TLS writes on its own, such
// as a KeyUpdate answer) writes go straight through.
type batchConn struct {
	net.Conn

	mu    sync.Mutex
	batch bool
	buf   []byte
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.batch {
		b.buf = append(b.buf, p...)
		b.mu.Unlock()
		return len(p), nil
	}
	b.mu.Unlock()
	return b.Conn.Write(p)
}

// begin starts gathering writes.
func (b *batchConn) begin() {
	b.mu.Lock()
	b.batch = true
	b.mu.Unlock()
}

// end sends what was gathered, stops gathering, and keeps the buffer for
// the next batch unless it grew past keep.
func (b *batchConn) end(keep int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batch = false
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	if cap(b.buf) > keep {
		b.buf = nil
	} else {
		b.buf = b.buf[:0]
	}
	return err
}
