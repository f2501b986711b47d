package link

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
	"golang.org/x/time/rate"

	"github.com/restpipe/restpipe/host"
)

// Observer is told about links coming and going and about the events this
// side sends. client says whether this side is the client. Calls come from
// the link's own goroutines: implementations must be fast and safe for
// concurrent use, and must not call back into the link.
type Observer interface {
	// LinkUp: a link to peer is up; on the server it is already in the
	// registry.
	LinkUp(peer string, client bool)
	// LinkDown: the link to peer ended for err (wrapping ErrReplaced when a
	// newer link from the same peer took over); on the server it is
	// already out of the registry.
	LinkDown(peer string, client bool, err error)
	// LinkRefused: a connection failed its handshake (server) or a dial
	// failed (client).
	LinkRefused(client bool, err error)
	// ObserveHop: an event this side sent got its reply header (or
	// failed) after d.
	ObserveHop(d time.Duration, kind host.Kind)
	// BadPeerReply: peer answered an event with a reply this side
	// refused (an invalid status); the caller got handler_failed.
	BadPeerReply(peer string)
}

// nopObserver is the Observer when none is set.
type nopObserver struct{}

func (nopObserver) LinkUp(string, bool)                 {}
func (nopObserver) LinkDown(string, bool, error)        {}
func (nopObserver) LinkRefused(bool, error)             {}
func (nopObserver) ObserveHop(time.Duration, host.Kind) {}
func (nopObserver) BadPeerReply(string)                 {}

// Config holds what server and client links have in common. Start from
// DefaultConfig; zero durations and sizes stand for their defaults
// (WithDefaults).
type Config struct {
	// Handler answers the events the peer sends. Required.
	Handler host.Handler

	// Logger receives the link's logs. Default: a null logger.
	Logger hclog.Logger

	// Observer, when set, is told about links and events; see Observer.
	Observer Observer

	// Software names this build in the link handshake, for the peer's logs.
	Software string

	// HandshakeTimeout bounds TCP connect, TLS handshake and the link
	// hello together. Default 10s.
	HandshakeTimeout time.Duration

	// KeepAliveInterval is how often each side pings the other, and
	// KeepAliveTimeout how long it waits for the answer (and for any write
	// to reach the connection) before declaring the link dead. A dead link
	// is therefore detected within their sum. Defaults 2s and 4s.
	KeepAliveInterval time.Duration
	KeepAliveTimeout  time.Duration

	// StreamWindow and MaxStreamWindow bound the receive window of a
	// link's streams: the most one stream may have in flight unread, in
	// each direction. Each side sizes its window at link start from the
	// round trip it measured in the hello (WindowRate times the RTT),
	// within these bounds, so that one transfer fills a long path while a
	// LAN link keeps small windows. A window caps one event's throughput
	// at window/RTT, and is what a slow reader may hold buffered per
	// stream: a link holds at most MaxStreams(MaxInFlight) windows.
	// Defaults 256 KiB (yamux's minimum, which a stream never grows past:
	// 5 GB/s at a LAN's 50 us) and 16 MiB.
	StreamWindow    uint32
	MaxStreamWindow uint32

	// LinkBuffer bounds what a peer can make this side hold buffered on
	// one link, across all its streams: each stream may hold up to twice
	// its window (yamux buffers a window in a bytes.Buffer, whose room
	// doubles as it grows), and a peer may hold its stream limit plus a
	// tolerance (streamTolerance) before its link closes, so the limit is
	// what keeps all of those within LinkBuffer: MaxInFlight+32 at the
	// most, 16 at the least (the window shrinks to fit 16). A LAN link
	// (256 KiB windows) keeps every stream it may need; a long one (large
	// windows) fewer. Each side tells the other its limit in the hello,
	// and a sender keeps within it (events beyond wait for no stream:
	// they fail with overloaded). Default 512 MiB; at least 16 MiB.
	LinkBuffer int64

	// MaxInFlight bounds the events in flight per peer in each direction.
	// Beyond it new events fail at once with overloaded. Default 256.
	MaxInFlight int

	// MaxHeaderSize bounds a header frame's payload, checked before
	// anything is allocated for it. Default 64 KiB.
	MaxHeaderSize int

	// HeaderTimeout is how long a peer has to send a stream's header after
	// opening it. Default 10s.
	HeaderTimeout time.Duration

	// RetryAfter is the wait suggested to callers refused with overloaded.
	// Default 1s.
	RetryAfter time.Duration
}

// DefaultConfig returns a Config with every default filled in except the
// Handler.
func DefaultConfig() Config {
	return Config{
		Logger:            hclog.NewNullLogger(),
		Software:          "restpipe",
		HandshakeTimeout:  10 * time.Second,
		KeepAliveInterval: 2 * time.Second,
		KeepAliveTimeout:  4 * time.Second,
		StreamWindow:      256 << 10,
		MaxStreamWindow:   16 << 20,
		LinkBuffer:        512 << 20,
		MaxInFlight:       256,
		MaxHeaderSize:     64 << 10,
		HeaderTimeout:     10 * time.Second,
		RetryAfter:        time.Second,
	}
}

// WithDefaults returns c with every zero field set to its default (see
// DefaultConfig); a zero MaxStreamWindow is at least StreamWindow.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Software == "" {
		c.Software = d.Software
	}
	setDuration(&c.HandshakeTimeout, d.HandshakeTimeout)
	setDuration(&c.KeepAliveInterval, d.KeepAliveInterval)
	setDuration(&c.KeepAliveTimeout, d.KeepAliveTimeout)
	setDuration(&c.HeaderTimeout, d.HeaderTimeout)
	setDuration(&c.RetryAfter, d.RetryAfter)
	if c.StreamWindow == 0 {
		c.StreamWindow = d.StreamWindow
	}
	if c.MaxStreamWindow == 0 {
		c.MaxStreamWindow = max(d.MaxStreamWindow, c.StreamWindow)
	}
	if c.LinkBuffer == 0 {
		c.LinkBuffer = d.LinkBuffer
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	if c.MaxHeaderSize == 0 {
		c.MaxHeaderSize = d.MaxHeaderSize
	}
	return c
}

// Validate reports the first field that cannot work, counting zero fields
// as their defaults. It changes nothing.
func (c Config) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Handler == nil:
		return errors.New("link: Handler is required")
	case c.HandshakeTimeout < 0, c.KeepAliveInterval < 0, c.KeepAliveTimeout < 0, c.HeaderTimeout < 0, c.RetryAfter < 0:
		return errors.New("link: durations must be positive")
	case c.StreamWindow < 256<<10:
		return fmt.Errorf("link: StreamWindow %d is below the 256 KiB minimum", c.StreamWindow)
	case c.MaxStreamWindow < c.StreamWindow:
		return fmt.Errorf("link: MaxStreamWindow %d is below StreamWindow %d", c.MaxStreamWindow, c.StreamWindow)
	case c.LinkBuffer < 16<<20:
		return fmt.Errorf("link: LinkBuffer %d is below the 16 MiB minimum", c.LinkBuffer)
	case c.MaxInFlight < 1:
		return fmt.Errorf("link: MaxInFlight %d must be at least 1", c.MaxInFlight)
	case c.MaxHeaderSize < 1<<10 || c.MaxHeaderSize > 16<<20:
		return fmt.Errorf("link: MaxHeaderSize %d must be between 1 KiB and 16 MiB", c.MaxHeaderSize)
	}
	return nil
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// WindowRate is the throughput a link's window is sized for: a stream's
// window is WindowRate times the link's round trip, within StreamWindow
// and MaxStreamWindow (1.5 GB/s: a 10 ms path gets a 15 MB window).
const WindowRate = 1.5e9

// linkShape returns the window and the stream limit of a link whose round
// trip is rtt: the window WindowRate x rtt within StreamWindow and
// MaxStreamWindow, and as many streams as LinkBuffer holds, between
// minStreams and MaxInFlight+streamSlack, counting every stream the peer
// may hold before its link closes (streamTolerance) at twice the window
// each; the window shrinks, at least to StreamWindow, so that minStreams
// fit.
func (c *Config) linkShape(rtt time.Duration) (window uint32, streams int) {
	w := WindowRate * rtt.Seconds()
	switch {
	case rtt < lanRTT, w <= float64(c.StreamWindow):
		window = c.StreamWindow
	case w >= float64(c.MaxStreamWindow):
		window = c.MaxStreamWindow
	default:
		// Round up to a multiple of 256 KiB, so that links share configs.
		const step = 256 << 10
		window = uint32((uint64(w) + step - 1) / step * step)
	}
	// The peer may hold streamTolerance(streams) streams before its link
	// closes, each with up to twice the window buffered: that is what
	// must fit in LinkBuffer.
	most := c.MaxInFlight + streamSlack
	fits := func(n int, w uint32) bool { return int64(streamTolerance(n))*2*int64(w) <= c.LinkBuffer }
	streams = most
	for streams > minStreams && !fits(streams, window) {
		streams--
	}
	if !fits(streams, window) {
		fit := c.LinkBuffer / int64(2*streamTolerance(streams))
		window = max(c.StreamWindow, uint32(min(fit, int64(window)))&^(64<<10-1))
	}
	return window, streams
}

// lanRTT is the round trip below which a link keeps the smallest window
// (and every stream its events may need), whatever its hello measured: a
// loaded machine can take a few milliseconds to answer a hello on a LAN,
// which must not shrink its links' stream limits.
const lanRTT = 5 * time.Millisecond

// streamTolerance is how many streams a peer may hold before its link is
// closed, for a limit it was told: a sender counts a stream as gone when
// it closes it, the receiver when it has read the close and its handler
// has returned, so streams closing (and cancels) may take a peer past the
// limit it keeps to, by at most as many streams as it can have open; a
// small limit is therefore doubled, a large one gets half again, or
// streamSlack more.
func streamTolerance(limit int) int { return limit + max(min(streamSlack, limit), limit/2) }

// MaxStreams returns the most streams a link with the defaults lets its
// peer hold for maxInFlight events: events in flight, idle ones kept for
// reuse, and the few closing or carrying a Cancel. (A link's own limit,
// from its window and LinkBuffer, may be lower: see linkShape.)
func MaxStreams(maxInFlight int) int { return maxInFlight + streamSlack }

// streamSlack is how many streams beyond MaxInFlight a peer may hold:
// cancels and streams closing. A sender keeps itself within half of it.
const streamSlack = 32

// minStreams is the fewest streams a link lets its peer hold, whatever its
// window.
const minStreams = 16

// yamuxConfigs shares yamux configurations among a server's or client's
// sessions, one per window size, and the limiter of their warnings.
type yamuxConfigs struct {
	cfg  *Config
	mu   sync.Mutex
	byWS map[uint32]*yamux.Config
	warn *rate.Limiter
}

// warnLimit returns the limiter of the sessions' warnings about refused
// events: 5 a second, bursts of 20.
func (y *yamuxConfigs) warnLimit() *rate.Limiter {
	y.mu.Lock()
	defer y.mu.Unlock()
	if y.warn == nil {
		y.warn = rate.NewLimiter(5, 20)
	}
	return y.warn
}

// get returns the multiplexer settings of a link whose window is w.
func (y *yamuxConfigs) get(w uint32) *yamux.Config {
	y.mu.Lock()
	defer y.mu.Unlock()
	if yc := y.byWS[w]; yc != nil {
		return yc
	}
	if y.byWS == nil {
		y.byWS = map[uint32]*yamux.Config{}
	}
	c := y.cfg
	yc := &yamux.Config{
		// Room for every stream a peer may hold; our own limit (see
		// MaxStreams) closes a link that tries more.
		AcceptBacklog: MaxStreams(c.MaxInFlight) + 16,
		// The session runs its own keepalive (Session.startPinger), which
		// records the round-trip time for /status.
		EnableKeepAlive:        false,
		KeepAliveInterval:      c.KeepAliveInterval,
		ConnectionWriteTimeout: c.KeepAliveTimeout,
		MaxStreamWindowSize:    w,
		// yamux's StreamOpenTimeout closes the whole session when one
		// stream is not acknowledged in time. Events carry their own
		// deadlines instead, so one stuck stream fails only its event.
		StreamOpenTimeout: 0,
		// How long a stream we closed waits for the peer's close before
		// yamux resets it and frees what it buffered. An honest peer
		// closes within a round trip; a hostile one holds the stream's
		// window at most this long (and, when the link dies, every
		// stream's buffers are freed within it).
		StreamCloseTimeout: streamCloseTimeout,
		Logger: c.Logger.Named("yamux").StandardLogger(&hclog.StandardLoggerOptions{
			InferLevels: true,
		}),
		LogOutput: nil,
	}
	y.byWS[w] = yc
	return yc
}

// streamCloseTimeout is yamux's StreamCloseTimeout: see yamuxConfigs.get.
const streamCloseTimeout = 5 * time.Second

// checkTLS refuses a TLS configuration that would let anything below TLS
// 1.3 or an unauthenticated peer in. server says which side it is for.
func checkTLS(c *tls.Config, server bool) error {
	if c == nil {
		return errors.New("link: TLS config is required")
	}
	if c.MinVersion != tls.VersionTLS13 {
		return errors.New("link: TLS config must set MinVersion to TLS 1.3")
	}
	if c.InsecureSkipVerify {
		return errors.New("link: TLS config must verify the peer")
	}
	if server && c.GetConfigForClient == nil && c.ClientAuth != tls.RequireAndVerifyClientCert {
		return errors.New("link: server TLS config must require and verify client certificates")
	}
	return nil
}

var _ io.Closer = (*Session)(nil)
