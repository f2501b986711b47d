package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/restpipe/restpipe/host"
	hcluster "github.com/restpipe/restpipe/host/cluster"
	"github.com/restpipe/restpipe/host/dispatch"
	"github.com/restpipe/restpipe/host/gateway"
	"github.com/restpipe/restpipe/host/link"
	"github.com/restpipe/restpipe/host/metrics"
	"github.com/restpipe/restpipe/host/pki"
	"github.com/restpipe/restpipe/host/plugins"
	"github.com/restpipe/restpipe/host/policy"
	"github.com/restpipe/restpipe/host/ui"
)

// nodeConfig is everything a node needs, whatever set it: flags, the
// environment, or dev mode.
type nodeConfig struct {
	Role   host.Role
	Store  *pki.Store
	Logger hclog.Logger

	// Listen is the server's link address.
	Listen string
	// Server is the address a client dials (several, comma-separated:
	// the servers of a cluster), and ServerName the name it verifies in
	// the server's certificate ("": the host part of each address).
	Server     string
	ServerName string

	// Cluster makes a server a member of a cluster of servers.
	Cluster clusterConfig

	// HTTP is the gateway's address: host:port, or unix:/path; at most
	// HTTPMaxConns local connections are served at once (0: 4096).
	HTTP         string
	HTTPMaxConns int
	// EventTimeout is an event's deadline when the caller sets none;
	// PeerWait bounds the wait for an absent peer; MaxBody bounds request
	// bodies (0: no limit).
	EventTimeout time.Duration
	PeerWait     time.Duration
	MaxBody      int64
	// MaxInFlight bounds the events in flight per peer, each way; beyond it
	// events fail with overloaded. 0: the link's default (256).
	MaxInFlight int
	// StreamWindow and MaxStreamWindow bound the link's per-stream flow
	// control window in bytes; 0: the link's defaults.
	StreamWindow    int
	MaxStreamWindow int
	// LinkBuffer bounds what a peer can make the node hold on one link.
	LinkBuffer int64
	// Pprof, when set, is the address of a listener serving Go's profiler.
	Pprof string
	// PluginMTLS secures plugin connections with go-plugin's AutoMTLS;
	// PluginGOMAXPROCS is the plugins' GOMAXPROCS (0: Go's default).
	PluginMTLS       bool
	PluginGOMAXPROCS int
	// PluginMaxAbandoned, PluginMaxMemory and PluginNice are the plugins'
	// limits (see plugins.Config).
	PluginMaxAbandoned int
	PluginMaxMemory    int64
	PluginNice         int
	// Grace bounds the drain on shutdown: events in flight get this long
	// to finish.
	Grace time.Duration

	// PluginsDir is the plugins directory; "" runs no plugins.
	PluginsDir string
	// PluginConfig is each plugin's configuration, by plugin file name.
	PluginConfig pluginConfigFlag
	// PluginEnv adds to the plugins' environment (see plugins.PassEnv for
	// what they get otherwise), read with PluginEnvGetenv (default
	// os.Getenv).
	PluginEnv       envFlag
	PluginEnvGetenv func(string) string
	// Checksums pins plugins when not nil (see plugins.Config).
	Checksums map[string][]byte

	// StatsD, when set (host:port), also sends metrics as StatsD lines,
	// names under StatsDPrefix.
	StatsD       string
	StatsDPrefix string

	// Policy, when set, is the policy file: which peers may call which of
	// this node's routes, and how fast (see docs/policy.md).
	Policy string
}

// defaultHTTPMaxConns is --http-max-conns' default.
const defaultHTTPMaxConns = 4096

// node is one running restpipe node: its gateway, its link, its route
// table and plugins. It owns them all and stops them in order.
type node struct {
	cfg     nodeConfig
	log     hclog.Logger
	name    string
	table   *dispatch.Table
	plugins *plugins.Manager // nil without a plugins directory
	server  *link.Server     // server role
	linkLn  net.Listener     // server role: the link listener
	client  *link.Client     // client role
	gateway *gateway.Gateway
	http    *http.Server
	httpLn  net.Listener
	pprofLn net.Listener // nil without --pprof
	metrics *metrics.Metrics
	statsd  *metrics.StatsD   // nil unless --statsd
	policy  *policy.Enforcer  // nil without --policy
	cluster *hcluster.Cluster // nil outside a cluster
	pool    *link.Pool        // a cluster's forward links; nil outside one

	// For the status page (/ui): when the node started, each peer's
	// link changes, each plugin's last error.
	started     time.Time
	linkChanges linkChanges
	pluginErrs  pluginErrors
}

// newNode builds a node and binds its listeners, so that configuration and
// address errors surface before anything runs.
func newNode(cfg nodeConfig) (_ *node, err error) {
	n := &node{cfg: cfg, log: cfg.Logger, name: cfg.Store.Identity().Name, started: time.Now()}
	defer func() {
		if err != nil {
			n.closeListeners()
			n.closeCluster()
		}
	}()
	if n.table, err = dispatch.New(dispatch.Config{DefaultTimeout: cfg.EventTimeout}); err != nil {
		return nil, err
	}
	n.metrics = metrics.New(host.Node{Role: cfg.Role, Name: n.name}, metrics.Options{})
	if cfg.StatsD != "" {
		if n.statsd, err = metrics.NewStatsD(cfg.StatsD, cfg.StatsDPrefix); err != nil {
			return nil, err
		}
		n.metrics.SetStatsD(n.statsd)
	}
	// Events from peers pass the policy, if any; the gateway's /local/
	// callers go straight to the table.
	var fromPeers host.Handler = n.table
	if cfg.Policy != "" {
		if n.policy, err = n.newPolicy(cfg.Policy, n.table); err != nil {
			return nil, err
		}
		fromPeers = n.policy
	}

	if cfg.PluginsDir != "" {
		pc := plugins.DefaultConfig()
		pc.Dir = cfg.PluginsDir
		pc.Node = host.Node{Role: cfg.Role, Name: n.name}
		pc.Routes = n.table
		pc.Logger = cfg.Logger.Named("plugins")
		pc.PluginConfig = cfg.PluginConfig
		getenv := cfg.PluginEnvGetenv
		if getenv == nil {
			getenv = os.Getenv
		}
		pc.Env = append(plugins.EnvFrom(plugins.PassEnv, getenv), cfg.PluginEnv.resolve(getenv)...)
		pc.Checksums = cfg.Checksums
		pc.Observer = pluginObserver{Metrics: n.metrics, errs: &n.pluginErrs}
		pc.AutoMTLS = cfg.PluginMTLS
		pc.GOMAXPROCS = cfg.PluginGOMAXPROCS
		pc.MaxAbandoned, pc.MaxMemory, pc.Nice = cfg.PluginMaxAbandoned, cfg.PluginMaxMemory, cfg.PluginNice
		if n.plugins, err = plugins.New(pc); err != nil {
			return nil, err
		}
	}

	lc := link.DefaultConfig()
	lc.Logger = cfg.Logger.Named("link")
	lc.Software = software()
	lc.Handler = fromPeers
	lc.MaxInFlight = cfg.MaxInFlight
	lc.StreamWindow = uint32(cfg.StreamWindow)
	lc.MaxStreamWindow = uint32(cfg.MaxStreamWindow)
	lc.LinkBuffer = cfg.LinkBuffer
	lc.Observer = linkObserver{n}
	var peers gateway.Peers
	switch cfg.Role {
	case host.RoleServer:
		if n.linkLn, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("listen for links: %w", err)
		}
		sc := link.ServerConfig{Config: lc, TLS: cfg.Store.ServerTLS()}
		if cfg.Cluster.enabled() {
			if sc.Registry, sc.Forward, err = n.joinCluster(lc); err != nil {
				return nil, err
			}
		}
		if n.server, err = link.NewServer(sc); err != nil {
			return nil, err
		}
		peers = serverPeers{n.server}
		if n.cluster != nil {
			peers = clusterPeers{n.cluster}
		}
	case host.RoleClient:
		serverName := cfg.ServerName
		ccfg := link.ClientConfig{
			Config: lc,
			Addr:   cfg.Server,
			TLS:    func() *tls.Config { return cfg.Store.ClientTLS(serverName) },
		}
		if addrs := splitList(cfg.Server); len(addrs) > 1 {
			ccfg.Addr, ccfg.Addrs = "", addrs
		}
		n.client, err = link.NewClient(ccfg)
		if err != nil {
			return nil, err
		}
		peers = clientPeers{n.client}
	default:
		return nil, fmt.Errorf("unknown role %q", cfg.Role)
	}

	page, err := ui.New(ui.Config{Source: uiSource{n}, Logger: cfg.Logger.Named("ui")})
	if err != nil {
		return nil, err
	}
	n.gateway, err = gateway.New(gateway.Config{
		Node:           host.Node{Role: cfg.Role, Name: n.name},
		Local:          n.table,
		Peers:          peers,
		Logger:         cfg.Logger.Named("gateway"),
		DefaultTimeout: cfg.EventTimeout,
		PeerWait:       cfg.PeerWait,
		MaxBody:        cfg.MaxBody,
		Observer:       n.metrics,
		Status:         n.status,
		Metrics:        n.metrics.Handler(),
		UI:             page,
	})
	if err != nil {
		return nil, err
	}
	n.metrics.SetSnapshot(n.snapshot)
	maxConns := cfg.HTTPMaxConns
	if maxConns == 0 {
		maxConns = defaultHTTPMaxConns
	}
	if n.httpLn, err = gateway.Listen(cfg.HTTP, maxConns); err != nil {
		return nil, fmt.Errorf("listen for local HTTP: %w", err)
	}
	n.http = n.gateway.HTTPServer(n.httpLn)
	if cfg.Pprof != "" {
		if n.pprofLn, err = net.Listen("tcp", cfg.Pprof); err != nil {
			return nil, fmt.Errorf("listen for --pprof: %w", err)
		}
	}
	return n, nil
}

func (n *node) closeListeners() {
	for _, ln := range []net.Listener{n.linkLn, n.httpLn, n.pprofLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// linkAddr returns the address the server's link listens on.
func (n *node) linkAddr() string { return n.linkLn.Addr().String() }

// httpAddr returns the gateway's address, as --http takes it.
func (n *node) httpAddr() string {
	if a, ok := n.httpLn.Addr().(*net.UnixAddr); ok {
		return "unix:" + a.Name
	}
	return n.httpLn.Addr().String()
}

// run serves until ctx ends, then drains and stops the node: the gateway
// refuses new events and waits (up to Grace) for those in flight, then the
// link and the local HTTP servers stop, then the cluster, then the plugins
// (see layers). It returns once everything it started has stopped; an
// error means a component failed on its own.
func (n *node) run(ctx context.Context) error {
	svcs := newLayers(context.WithoutCancel(ctx))
	if n.plugins != nil {
		svcs.start(service{name: "plugins", run: n.plugins.Run})
		// Take events only once the plugins found at start are up (or
		// have failed to start), so the first events find their routes.
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		if err := n.plugins.WaitStarted(wctx); err != nil {
			n.log.Warn("plugins still starting; serving anyway", "error", err)
		}
		cancel()
	}
	svcs.start(closeService("cluster", n.closeCluster))
	front := []service{serveService("local HTTP", func() error { return n.http.Serve(n.httpLn) }, func() { n.http.Close() }, http.ErrServerClosed)}
	if n.server != nil {
		front = append(front, serveService("link", func() error { return n.server.Serve(n.linkLn) }, func() { n.server.Close() }, link.ErrServerClosed))
	} else {
		front = append(front, service{name: "link", run: n.client.Run})
	}
	if n.pprofLn != nil {
		profiler := &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
		front = append(front, serveService("pprof", func() error { return profiler.Serve(n.pprofLn) }, func() { profiler.Close() }, http.ErrServerClosed))
		n.log.Warn("serving Go's profiler", "pprof", n.pprofLn.Addr().String())
	}
	svcs.start(front...)
	args := []any{"role", n.cfg.Role, "name", n.name, "http", n.httpAddr()}
	if n.server != nil {
		args = append(args, "link", n.linkAddr())
	} else {
		args = append(args, "server", n.cfg.Server, "server_name", n.cfg.ServerName)
	}
	n.log.Info("listening", args...)

	var failure error
	select {
	case <-ctx.Done():
	case failure = <-svcs.failure():
		n.log.Error("stopping: a component failed", "error", failure)
	}
	n.drain(context.WithoutCancel(ctx))
	if err := svcs.stop(); failure == nil {
		failure = err
	}
	if n.statsd != nil {
		n.statsd.Close()
	}
	n.log.Info("stopped")
	return failure
}

// drain refuses new events, locally and from peers, and waits up to Grace
// for those in flight both ways; what is left then is cut off. The gateway
// keeps answering (503) until then.
func (n *node) drain(ctx context.Context) {
	if n.cluster != nil {
		// A member leaves the cluster first and hands its clients to the
		// others, each once its events are done, within the grace.
		leaveCtx, cancel := context.WithTimeout(ctx, n.cfg.Grace)
		n.leaveCluster(leaveCtx)
		cancel()
	}
	n.gateway.Drain()
	lk := linkDrainer(n.client)
	if n.server != nil {
		lk = n.server
	}
	lk.Drain()
	// Logged once new events are refused, never before: whoever reads
	// the log (an operator, a test) may rely on it.
	n.log.Info("draining", "grace", n.cfg.Grace)
	graceCtx, cancel := context.WithTimeout(ctx, n.cfg.Grace)
	defer cancel()
	var wg sync.WaitGroup
	for _, w := range []struct {
		what string
		wait func(context.Context) error
	}{{"events from peers", lk.WaitIdle}, {"local events", n.gateway.WaitIdle}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.wait(graceCtx); err != nil {
				n.log.Warn(w.what+" still in flight after the grace period; cutting them off", "error", err)
			}
		}()
	}
	wg.Wait()
	closeCtx, cancelClose := context.WithTimeout(ctx, time.Second)
	defer cancelClose()
	if err := n.http.Shutdown(closeCtx); err != nil {
		n.http.Close()
	}
}

// linkDrainer is what drain needs of the link, server or client.
type linkDrainer interface {
	Drain()
	WaitIdle(ctx context.Context) error
}

// serverPeers reaches clients through the link server.
type serverPeers struct{ s *link.Server }

func (p serverPeers) Peer(ctx context.Context, name string) (host.Handler, error) {
	s, err := p.s.Peer(ctx, name)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// clientPeers reaches the server through the link client.
type clientPeers struct{ c *link.Client }

func (p clientPeers) Peer(ctx context.Context, _ string) (host.Handler, error) {
	s, err := p.c.Peer(ctx)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// serverNameOf returns the name a client verifies in the server's
// certificate: the explicit one, else the host part of addr without any
// IPv6 zone.
func serverNameOf(addr, explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--server %q: %w", addr, err)
	}
	if i := strings.IndexByte(h, '%'); i >= 0 {
		h = h[:i]
	}
	return h, nil
}

// reloadOnHUP reloads the node's certificate and key on each SIGHUP, then
// calls each of also (the policy's reload, which logs for itself), until
// the returned stop function is called. Links stay up; new handshakes use
// the new identity. A bad new identity is refused and logged.
func reloadOnHUP(store *pki.Store, log hclog.Logger, also ...func()) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-hup:
				if err := store.Reload(); err != nil {
					log.Error("SIGHUP: keeping the current certificate", "error", err)
				} else {
					id := store.Identity()
					log.Info("SIGHUP: certificate reloaded", "name", id.Name, "not_after", id.Leaf.NotAfter)
				}
				for _, f := range also {
					f()
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-finished
	}
}

// pprofMux serves Go's profiler, as net/http/pprof registers it on the
// default mux, on a mux of its own.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
