package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	"github.com/restpipe/restpipe/host"
)

// engine is the cluster's NATS: an embedded server clustered through
// routes, with an in-process connection to it, or a connection to an
// external NATS cluster.
type engine struct {
	ns *natsserver.Server // nil with an external NATS
	nc *nats.Conn
}

// tlsTimeout bounds a NATS route's (or connection's) TLS handshake, in
// seconds.
const tlsTimeout = 5

// startEngine starts the embedded NATS server and connects to it, or
// connects to the external NATS cluster. It returns once the connection
// is up; routes to the other servers come up in the background, and NATS
// dials the ones that do not answer again and again.
func (c *Cluster) startEngine() (*engine, error) {
	e := &engine{}
	opts := []nats.Option{
		nats.Name(c.cfg.Name),
		// This server never needs its own lookups and claims: it knows
		// what it holds.
		nats.NoEcho(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.PingInterval(c.cfg.PingInterval),
		nats.MaxPingsOutstanding(c.cfg.MaxPingsOut),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				c.log.Warn("NATS connection lost; reconnecting", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.log.Info("NATS connection back", "server", nc.ConnectedUrlRedacted())
			c.reclaimAll()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			c.log.Warn("NATS error", "subject", subj, "error", err)
		}),
	}
	if len(c.cfg.NATS) == 0 {
		ns, err := c.embed()
		if err != nil {
			return nil, err
		}
		e.ns = ns
		opts = append(opts, nats.InProcessServer(ns))
		nc, err := nats.Connect("", opts...)
		if err != nil {
			ns.Shutdown()
			return nil, fmt.Errorf("cluster: connect to the embedded NATS server: %w", err)
		}
		e.nc = nc
		return e, nil
	}
	opts = append(opts, nats.Secure(c.natsTLS("NATS server")), nats.RetryOnFailedConnect(true))
	nc, err := nats.Connect(strings.Join(c.cfg.NATS, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to NATS at %s: %w", strings.Join(c.cfg.NATS, ","), err)
	}
	e.nc = nc
	return e, nil
}

// embed starts the embedded NATS server: a client listener on loopback
// only (this server connects in-process), a route listener on Listen, routes to Join, every
// route mutual TLS with members' certificates only.
func (c *Cluster) embed() (*natsserver.Server, error) {
	host, port, err := splitPort(c.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("cluster: --cluster-listen %q: %w", c.cfg.Listen, err)
	}
	routes := make([]*url.URL, 0, len(c.cfg.Join))
	for _, j := range c.cfg.Join {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: j})
	}
	opts := &natsserver.Options{
		ServerName: c.cfg.Name,
		// NATS starts its routes only once its client listener is up, so
		// there is one, on loopback at a free port, as mutual TLS with
		// members' certificates as the routes; this server's own
		// connection is in-process and needs none.
		Host:            "127.0.0.1",
		Port:            -1,
		TLSConfig:       c.natsTLS("NATS client"),
		TLSTimeout:      tlsTimeout,
		TLSVerify:       true,
		NoSigs:          true,
		NoSystemAccount: true,
		PingInterval:    c.cfg.PingInterval,
		MaxPingsOut:     c.cfg.MaxPingsOut,
		Cluster: natsserver.ClusterOpts{
			Name:         c.cfg.Subjects,
			Host:         host,
			Port:         port,
			Advertise:    c.cfg.Advertise,
			TLSConfig:    c.natsTLS("route"),
			TLSTimeout:   tlsTimeout,
			PingInterval: c.cfg.PingInterval,
			MaxPingsOut:  c.cfg.MaxPingsOut,
			// One connection per pair of servers: the cluster's traffic
			// is small (presence and member polls), and fewer connections
			// are fewer handshakes and pings.
			PoolSize: -1,
		},
		Routes: routes,
	}
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("cluster: NATS server: %w", err)
	}
	ns.SetLoggerV2(&natsLogger{log: c.log.Named("nats"), limit: rate.NewLimiter(1, 10)}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("cluster: the NATS server on %s did not start within 10s", c.cfg.Listen)
	}
	return ns, nil
}

// routeAddr returns the address the embedded NATS server's route listener
// is bound to, or "" with an external NATS.
func (e *engine) routeAddr() string {
	if e.ns == nil {
		return ""
	}
	if a := e.ns.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// close drains the connection (its subscriptions go at once, and with them
// this server's interest cluster-wide) and stops the embedded server.
func (e *engine) close() {
	if e.nc != nil {
		e.nc.Close()
	}
	if e.ns != nil {
		e.ns.Shutdown()
		e.ns.WaitForShutdown()
	}
}

// natsTLS is the mutual TLS of the cluster's NATS connections: TLS 1.3,
// this server's current certificate both ways, peers verified against the
// CA and refused (with a log line) unless their certificate has the server
// role. For routes it serves both ends: NATS uses it to accept routes and
// to dial them (verifying the dialled address against the certificate's
// SANs, as any TLS client does).
func (c *Cluster) natsTLS(what string) *tls.Config {
	cert := func() (*tls.Certificate, error) {
		if crt := c.cfg.Certificate(); crt != nil {
			return crt, nil
		}
		return nil, errors.New("no certificate")
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetCertificate:       func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert() },
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert() },
		RootCAs:              c.cfg.Roots,
		ClientCAs:            c.cfg.Roots,
		ClientAuth:           tls.RequireAndVerifyClientCert,
		// A member is any certificate of the CA with the server role,
		// whatever address NATS dialled (routes learnt from gossip are
		// IP addresses): VerifyConnection checks the chain and the role,
		// instead of Go's check of the dialled name.
		InsecureSkipVerify: true,
		VerifyConnection:   func(cs tls.ConnectionState) error { return c.verifyMember(what, cs) },
	}
}

// verifyMember refuses a NATS peer whose certificate lacks the server role:
// only servers are members.
func (c *Cluster) verifyMember(what string, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, ic := range cs.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.cfg.Roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		c.refusedLog(what, leaf.Subject.String(), err.Error())
		return fmt.Errorf("verify the certificate: %w", err)
	}
	name, err := host.CertName(leaf)
	if err != nil {
		c.refusedLog(what, leaf.Subject.String(), err.Error())
		return err
	}
	if !host.HasServerRole(leaf) {
		c.refusedLog(what, name, "its certificate lacks the server role (restpipe pki issue --role server)")
		return fmt.Errorf("%w: %q", ErrNotMember, name)
	}
	return nil
}

// refusedLog logs a refused NATS peer, at most a few times a second: NATS
// dials a refused route again every second.
func (c *Cluster) refusedLog(what, name, why string) {
	if c.refuseLimit.Allow() {
		c.log.Warn("refused a "+what+" connection: only servers may join the cluster", "peer", name, "why", why)
	}
}

// splitPort splits host:port, the port a number (0: any).
func splitPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number from 0 to 65535", p)
	}
	if port == 0 {
		// NATS takes 0 as "the default port"; -1 is "any free port".
		port = -1
	}
	return h, port, nil
}

// natsLogger passes the embedded NATS server's logs to hclog: notices at
// debug level (NATS is chatty about every route), warnings and errors as
// warnings (rate-limited: a refused route is retried every second).
type natsLogger struct {
	log   hclog.Logger
	limit *rate.Limiter
}

func (l *natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Warnf(format string, v ...any) {
	// NATS warns that it does not verify the routes it dials: this
	// package does, in VerifyConnection (chain and server role).
	if strings.HasPrefix(format, "TLS certificate chain and hostname of solicited routes will not be verified") {
		l.log.Debug("routes dialled: the chain and the server role are verified by restpipe, not by NATS's host name check")
		return
	}
	l.warn(format, v...)
}
func (l *natsLogger) Errorf(format string, v ...any) { l.warn(format, v...) }
func (l *natsLogger) Fatalf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Debugf(format string, v ...any) { l.log.Trace(fmt.Sprintf(format, v...)) }
func (l *natsLogger) Tracef(format string, v ...any) { l.log.Trace(fmt.Sprintf(format, v...)) }

func (l *natsLogger) warn(format string, v ...any) {
	if l.limit.Allow() {
		l.log.Warn(fmt.Sprintf(format, v...))
	}
}
