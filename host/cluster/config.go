package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/restpipe/restpipe/host"
)

// Link is a client link this server holds, as the cluster sees it: events
// for the client are sent on it, and it is ended when the client links to
// another server. cmd/restpipe adapts the link package's sessions to it.
type Link interface {
	host.Handler
	// Evict starts ending the link for cause, without waiting: its events
	// in flight fail with link_lost.
	Evict(cause error)
}

// Forwarder sends events to the other servers of the cluster, on the
// forward links it keeps (the link package's Pool, in cmd/restpipe).
type Forwarder interface {
	// Forward sends ev, whose Target is a client of the server named
	// server, to that server, dialling addr (its forward-link address)
	// when no link to it is up, and returns the reply as Handler.Handle
	// does. An error wrapping host.ErrNotDelivered means the event
	// reached no handler and nothing of its body was read.
	Forward(ctx context.Context, server, addr string, ev *host.Event) (*host.Reply, error)
}

// Observer is told what the cluster does, for the node's metrics. Calls
// come from the goroutines of events and of NATS: implementations must be
// fast and safe for concurrent use.
type Observer interface {
	// Lookup: a presence lookup for a client got result (LookupCached,
	// LookupFound, LookupAbsent or LookupFailed) after d; cached lookups
	// take no time.
	Lookup(result string, d time.Duration)
	// Forwarded: an event crossed this server to another one, in
	// direction ForwardOut (this server's gateway took it) or ForwardIn
	// (delivered here to its client), with outcome kind ("" for a
	// reply).
	Forwarded(direction string, kind host.Kind)
	// Replaced: this server ended a client's link because the client
	// linked to another server since.
	Replaced()
}

// Lookup results and forwarding directions, as the Observer hears them.
const (
	LookupCached = "cached"
	LookupFound  = "found"
	LookupAbsent = "absent"
	LookupFailed = "failed"

	ForwardOut = "out"
	ForwardIn  = "in"
)

type nopObserver struct{}

func (nopObserver) Lookup(string, time.Duration) {}
func (nopObserver) Forwarded(string, host.Kind)  {}
func (nopObserver) Replaced()                    {}

// Config configures a Cluster. Start from DefaultConfig.
type Config struct {
	// Name is this server's node name, its certificate's (host.CertName).
	// Required.
	Name string
	// LinkAddr is the address the other servers dial for forward links to
	// this one: its link listener, as they can reach it. Required.
	LinkAddr string

	// Listen is the address of the embedded NATS server's route listener
	// (--cluster-listen). Required unless NATS is set.
	Listen string
	// Join are the other servers' route addresses, host:port
	// (--cluster-join); this server's own among them is harmless. NATS
	// keeps dialling each until it answers, and learns of the servers
	// they know.
	Join []string
	// Advertise is the route address this server tells the others to
	// dial (NATS's cluster advertise); default: the one NATS sees it on.
	Advertise string
	// NATS, when set, are the URLs of an external NATS cluster to use
	// instead of an embedded server (--cluster-nats): nats://host:port or
	// tls://host:port, each verified as a certificate of this CA with the
	// server role.
	NATS []string

	// Certificate returns this server's certificate, with the server role;
	// it is called at every TLS handshake, so a reloaded one applies to
	// new connections. Required.
	Certificate func() *tls.Certificate
	// Roots are the CA certificates other members are verified against.
	// Required.
	Roots *x509.CertPool

	// Forwarder sends events to other servers. Required.
	Forwarder Forwarder
	// Logger receives the cluster's logs, and the embedded NATS server's
	// (named "nats"). Default: a null logger.
	Logger hclog.Logger
	// Observer, when set, is told about lookups and forwarded events.
	Observer Observer

	// Subjects is the prefix of every NATS subject the cluster uses, so
	// that several clusters (or other applications) can share an external
	// NATS. Default "restpipe".
	Subjects string
	// PingInterval and MaxPingsOut are the keepalive of NATS routes and
	// connections: a route (or an external NATS connection) whose peer
	// stops answering is closed after about PingInterval x (MaxPingsOut+1),
	// and with it the interest of the server behind it, so that no client
	// of a dead server is looked up for longer. Defaults 2s and 2: about
	// 6 s, the link's dead-peer detection.
	PingInterval time.Duration
	MaxPingsOut  int
	// LookupTimeout bounds one presence lookup: NATS answers a lookup for
	// a client nobody holds at once ("no responders"), so it is reached
	// only when the holder is slow to answer. Default 2s.
	LookupTimeout time.Duration
	// CacheTTL is how long a holder learnt from a lookup is used without
	// asking again; a forward the holder refuses (it no longer holds the
	// client) drops it at once. Default 10s.
	CacheTTL time.Duration
	// CacheSize bounds the holders remembered. Default 65536.
	CacheSize int
	// MemberPoll is how often the members are polled for /status and the
	// metrics. Default 2s.
	MemberPoll time.Duration
	// WaitPoll bounds the wait between two lookups for a client nobody
	// holds while an event waits for it (a link coming up here wakes it
	// sooner); each wait is drawn between half of it and all of it.
	// Default 250ms.
	WaitPoll time.Duration
}

// DefaultConfig returns the defaults; the identity, addresses and
// Forwarder are still to be set.
func DefaultConfig() Config {
	return Config{
		Logger:        hclog.NewNullLogger(),
		Subjects:      "restpipe",
		PingInterval:  2 * time.Second,
		MaxPingsOut:   2,
		LookupTimeout: 2 * time.Second,
		CacheTTL:      10 * time.Second,
		CacheSize:     65536,
		MemberPoll:    2 * time.Second,
		WaitPoll:      250 * time.Millisecond,
	}
}

// WithDefaults returns c with every zero field set to its default (see
// DefaultConfig).
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Subjects == "" {
		c.Subjects = d.Subjects
	}
	setDuration(&c.PingInterval, d.PingInterval)
	setDuration(&c.LookupTimeout, d.LookupTimeout)
	setDuration(&c.CacheTTL, d.CacheTTL)
	setDuration(&c.MemberPoll, d.MemberPoll)
	setDuration(&c.WaitPoll, d.WaitPoll)
	if c.MaxPingsOut == 0 {
		c.MaxPingsOut = d.MaxPingsOut
	}
	if c.CacheSize == 0 {
		c.CacheSize = d.CacheSize
	}
	return c
}

// Validate reports the first field that cannot work, counting zero fields
// as their defaults. It changes nothing.
func (c Config) Validate() error {
	c = c.WithDefaults()
	if err := host.CheckName(c.Name); err != nil {
		return fmt.Errorf("cluster: Name: %w", err)
	}
	if _, _, err := net.SplitHostPort(c.LinkAddr); err != nil {
		return fmt.Errorf("cluster: LinkAddr %q: %w", c.LinkAddr, err)
	}
	if len(c.NATS) == 0 {
		if c.Listen == "" {
			return errors.New("cluster: Listen (the route listener) is required without NATS")
		}
		for _, a := range append([]string{c.Listen}, c.Join...) {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("cluster: route address %q: %w", a, err)
			}
		}
		if c.Advertise != "" {
			if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
				return fmt.Errorf("cluster: Advertise %q: %w", c.Advertise, err)
			}
		}
	} else {
		if c.Listen != "" || len(c.Join) > 0 {
			return errors.New("cluster: an external NATS (NATS) and an embedded one (Listen, Join) exclude each other")
		}
		for _, u := range c.NATS {
			p, err := url.Parse(u)
			if err != nil || p.Host == "" || (p.Scheme != "nats" && p.Scheme != "tls") {
				return fmt.Errorf("cluster: NATS URL %q: want nats://host:port or tls://host:port", u)
			}
		}
	}
	switch {
	case c.Certificate == nil || c.Roots == nil:
		return errors.New("cluster: Certificate and Roots are required")
	case c.Forwarder == nil:
		return errors.New("cluster: Forwarder is required")
	case strings.ContainsAny(c.Subjects, " *>\t") || strings.HasPrefix(c.Subjects, ".") || strings.HasSuffix(c.Subjects, "."):
		return fmt.Errorf("cluster: Subjects %q is not a NATS subject prefix", c.Subjects)
	case c.PingInterval < 0, c.LookupTimeout < 0, c.CacheTTL < 0, c.MemberPoll < 0, c.WaitPoll < 0:
		return errors.New("cluster: durations must be positive")
	case c.MaxPingsOut < 1, c.CacheSize < 1:
		return errors.New("cluster: MaxPingsOut and CacheSize must be at least 1")
	}
	return nil
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}
