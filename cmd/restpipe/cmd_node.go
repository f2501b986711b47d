package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/link"
	"github.com/restpipe/restpipe/host/pki"
	"github.com/restpipe/restpipe/host/plugins"
)

// nodeFlags are the flags of `restpipe server` and `restpipe client`, and
// the values they set. Their definitions in register are the one source of
// the flag names, the configuration file's keys and every default.
type nodeFlags struct {
	files         pki.Files
	cfg           nodeConfig
	serverName    string
	logs          logFlags
	checksumsFile string
	configFile    string
	gomaxprocs    int
	// clusterJoin and clusterNATS are comma-separated lists.
	clusterJoin, clusterNATS string

	// fs is the flag set the fields are bound to.
	fs *flag.FlagSet
}

// register defines the flags of a node of role ("server" or "client") in fs.
func (nf *nodeFlags) register(fs *flag.FlagSet, role string) {
	defaultHTTP := "127.0.0.1:8080"
	if role == "client" {
		defaultHTTP = "127.0.0.1:8081"
	}
	nf.cfg.Role = host.Role(role)
	if nf.cfg.PluginConfig == nil {
		nf.cfg.PluginConfig = pluginConfigFlag{}
	}
	nf.fs = fs
	cfg := &nf.cfg
	fs.StringVar(&nf.configFile, "config", "", "HCL `file` of settings: a key per flag, plus plugin blocks (see docs/config.md); flags and the environment win over it")
	fs.StringVar(&nf.files.CA, "ca", "", "PEM `file` of the CA that signs every node's certificate (required)")
	fs.StringVar(&nf.files.Cert, "cert", "", "PEM `file` of this node's certificate (required)")
	fs.StringVar(&nf.files.Key, "key", "", "PEM `file` of this node's private key (required)")
	if role == "server" {
		fs.StringVar(&cfg.Listen, "listen", ":7443", "`address` to accept links on")
		fs.StringVar(&cfg.Cluster.Listen, "cluster-listen", "", "be a member of a cluster of servers (docs/cluster.md): the embedded NATS server's route `address`, host:port; needs a certificate with the server role")
		fs.StringVar(&nf.clusterJoin, "cluster-join", "", "the other members' route `addresses`, host:port,... (listing this server's own is harmless)")
		fs.StringVar(&nf.clusterNATS, "cluster-nats", "", "be a member of a cluster through an external NATS cluster at these `URLs`, tls://host:port,... (mutual TLS with this node's CA and certificate), instead of an embedded one")
		fs.StringVar(&cfg.Cluster.RouteAdvertise, "cluster-advertise", "", "route `address` the other members are told to dial (NATS's cluster advertise; default: the one they reach)")
		fs.StringVar(&cfg.Cluster.Advertise, "cluster-link-advertise", "", "link `address` the other members dial to forward events here (default: --listen, with this machine's name for an unspecified host)")
	} else {
		fs.StringVar(&cfg.Server, "server", "", "`address` of the server's link, host:port (required); several, comma-separated, for a cluster's servers: one is chosen at random, another on losing it")
		fs.StringVar(&nf.serverName, "server-name", "", "`name` to verify in the server's certificate (default: the host part of each --server address)")
	}
	fs.StringVar(&cfg.HTTP, "http", defaultHTTP, "`address` of the local REST gateway: host:port, or unix:/path/to.sock")
	fs.IntVar(&cfg.HTTPMaxConns, "http-max-conns", defaultHTTPMaxConns, "most local connections served at once; a new caller beyond it closes the connection idle the longest (or waits, when none is idle)")
	fs.DurationVar(&cfg.EventTimeout, "event-timeout", 30*time.Second, "deadline of an event whose caller sets no X-Event-Timeout")
	fs.DurationVar(&cfg.PeerWait, "peer-wait", 10*time.Second, "how long an event waits for its peer to connect (within its deadline)")
	fs.Int64Var(&cfg.MaxBody, "max-body", 0, "largest request body in `bytes`; 0 means no limit")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", link.DefaultConfig().MaxInFlight, "events in flight per peer, each way, beyond which events fail with overloaded")
	fs.DurationVar(&cfg.Grace, "grace", 30*time.Second, "on SIGTERM, how long events in flight get to finish")
	fs.StringVar(&cfg.StatsD, "statsd", "", "also send metrics to a StatsD server at `host:port` (UDP; default: off)")
	fs.StringVar(&cfg.StatsDPrefix, "statsd-prefix", "restpipe", "`prefix` of the StatsD metric names")
	fs.StringVar(&cfg.PluginsDir, "plugins", "", "`directory` of handler plugins: every executable file in it is one (default: none)")
	fs.Var(cfg.PluginConfig, "plugin-config", "a plugin setting, `NAME.KEY=VALUE` (repeatable; comma-separated in the environment); VALUE @FILE reads it from FILE (for secrets: a command line is readable by every local user)")
	fs.Var(&cfg.PluginEnv, "plugin-env", "give plugins this `NAME` from the node's environment, or NAME=VALUE (repeatable); plugins get only PATH, HOME, the locale, TZ, TMPDIR and Python's variables otherwise")
	fs.StringVar(&nf.checksumsFile, "plugin-checksums", "", "pin plugins: a sha256sum-format `file`; only files listed there with that hash are started")
	fs.BoolVar(&cfg.PluginMTLS, "plugin-mtls", false, "secure each plugin's connection with go-plugin's automatic mTLS; off by default, as each plugin's Unix socket sits in a private 0700 directory")
	fs.IntVar(&cfg.PluginMaxAbandoned, "plugin-max-abandoned", 0, "restart a plugin whose abandoned handlers (still running after their event was canceled or timed out) exceed this many; 0: never")
	fs.Int64Var(&cfg.PluginMaxMemory, "plugin-max-memory", 0, "limit each plugin's data segment (RLIMIT_DATA) to this many `bytes`; beyond it the plugin crashes and is restarted; 0: no limit (Linux)")
	fs.IntVar(&cfg.PluginNice, "plugin-nice", 0, "lower each plugin's CPU priority by this nice value, 0 to 19 (Linux)")
	fs.IntVar(&cfg.PluginGOMAXPROCS, "plugin-gomaxprocs", plugins.DefaultConfig().GOMAXPROCS, "GOMAXPROCS of plugin processes; 0 leaves Go's default (a GOMAXPROCS in the environment wins)")
	fs.IntVar(&cfg.StreamWindow, "stream-window", int(link.DefaultConfig().StreamWindow), "smallest per-stream window of the link in `bytes` (each link sizes its window from its round trip, between this and --stream-window-max)")
	fs.IntVar(&cfg.MaxStreamWindow, "stream-window-max", int(link.DefaultConfig().MaxStreamWindow), "largest per-stream window in `bytes`: caps one transfer at window/RTT, and what a slow reader holds per stream")
	fs.IntVar(&nf.gomaxprocs, "gomaxprocs", defaultGOMAXPROCS(), "Go's GOMAXPROCS for this node; the default is half the CPUs (at least 1), leaving the rest to the plugins and local callers every event also runs through; 0 is Go's own default (all CPUs); a GOMAXPROCS in the environment wins")
	fs.StringVar(&cfg.Policy, "policy", "", "HCL `file` saying which peers may call which of this node's routes, and how fast (see docs/policy.md); SIGHUP reloads it; default: every peer may call every route")
	fs.Int64Var(&cfg.LinkBuffer, "link-buffer", link.DefaultConfig().LinkBuffer, "most `bytes` a peer can make this node hold buffered on one link: it bounds the link's windows times the streams the peer may open")
	fs.StringVar(&cfg.Pprof, "pprof", "", "serve Go's profiler (/debug/pprof/) on this `address`, for profiling; off by default, and never on a public address")
	nf.logs.register(fs)
}

// parseNodeFlags returns the settings of a node of role. Each flag takes its
// value from the first that gives one of: the command line, the environment
// (RESTPIPE_<FLAG>), the configuration file (--config), its default.
func parseNodeFlags(role string, args []string, stderr io.Writer, getenv func(string) string) (*nodeFlags, error) {
	help := "Run the server node: accept links from client nodes."
	if role == "client" {
		help = "Run a client node: keep a link to the server node, dialing out."
	}
	fs := newFlagSet(role, stderr, help)
	nf := &nodeFlags{}
	nf.register(fs, role)
	if err := parseFlags(fs, args, getenv); err != nil {
		return nil, err
	}
	if nf.configFile == "" {
		return nf, nil
	}
	cf, err := loadConfigFile(nf.configFile, role)
	if err != nil {
		return nil, err
	}
	inEnv := func(flagName string) bool { return getenv(envName(flagName)) != "" }
	if err := cf.Apply(fs, inEnv, nf.cfg.PluginConfig); err != nil {
		return nil, err
	}
	return nf, nil
}

// runNode runs `restpipe server` or `restpipe client`.
func runNode(ctx context.Context, role string, args []string, stderr io.Writer, getenv func(string) string) error {
	nf, err := parseNodeFlags(role, args, stderr, getenv)
	if err != nil {
		return err
	}
	cfg := nf.cfg
	log, err := nf.logs.logger("restpipe", stderr)
	if err != nil {
		return err
	}
	if nf.configFile != "" {
		log.Info("read the configuration file", "file", nf.configFile)
	}
	if nf.files.CA == "" || nf.files.Cert == "" || nf.files.Key == "" {
		return errors.New("--ca, --cert and --key are required (or RESTPIPE_CA, RESTPIPE_CERT, RESTPIPE_KEY, or ca, cert and key in --config)")
	}
	if role == "client" {
		if cfg.Server == "" {
			return errors.New("--server is required (or RESTPIPE_SERVER, or server in --config)")
		}
		if addrs := splitList(cfg.Server); len(addrs) > 1 {
			cfg.ServerName = nf.serverName // "": each address's host
		} else if cfg.ServerName, err = serverNameOf(cfg.Server, nf.serverName); err != nil {
			return err
		}
	}
	if role == "server" {
		if cfg.Cluster, err = nf.cluster(); err != nil {
			return err
		}
	}
	if nf.checksumsFile != "" {
		f, err := os.Open(nf.checksumsFile)
		if err != nil {
			return fmt.Errorf("--plugin-checksums: %w", err)
		}
		cfg.Checksums, err = plugins.ParseChecksums(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("--plugin-checksums %s: %w", nf.checksumsFile, err)
		}
	}
	if cfg.Store, err = pki.NewStore(nf.files); err != nil {
		return err
	}
	cfg.Logger = log
	if err := cfg.PluginConfig.readFiles(); err != nil {
		return err
	}
	cfg.PluginEnvGetenv = getenv
	setGOMAXPROCS(nf.gomaxprocs, getenv, log)
	n, err := newNode(cfg)
	if err != nil {
		return err
	}
	stopHUP := reloadOnHUP(cfg.Store, log, n.reloadPolicy)
	defer stopHUP()
	return n.run(ctx)
}

// cluster returns a server's cluster settings from its flags.
func (nf *nodeFlags) cluster() (clusterConfig, error) {
	cc := nf.cfg.Cluster
	cc.Join, cc.NATS = splitList(nf.clusterJoin), splitList(nf.clusterNATS)
	switch {
	case cc.Listen == "" && len(cc.Join) > 0:
		return cc, errors.New("--cluster-join needs --cluster-listen")
	case cc.Listen != "" && len(cc.NATS) > 0:
		return cc, errors.New("--cluster-listen (an embedded NATS) and --cluster-nats (an external one) exclude each other")
	}
	return cc, nil
}

// defaultGOMAXPROCS is the --gomaxprocs default: half the CPUs, at least
// one. Every event crosses the node, its plugin and a local caller on the
// same machine, and the node's work per event is short: on a small machine
// a node that may spread over every CPU wakes idle threads on each
// hand-off between its goroutines (futex calls, spinning threads) and
// takes CPU from the plugin and the caller. Measured on a 2-CPU machine
// (docs/performance.md): one P per node lowered a small event's p50 from
// about 220 us to 165 us and raised throughput at 64 concurrent callers.
func defaultGOMAXPROCS() int { return max(1, runtime.NumCPU()/2) }

// setGOMAXPROCS applies --gomaxprocs unless GOMAXPROCS is in the
// environment (which Go has applied already).
func setGOMAXPROCS(n int, getenv func(string) string, log hclog.Logger) {
	if getenv("GOMAXPROCS") != "" || n <= 0 {
		return
	}
	runtime.GOMAXPROCS(n)
	log.Debug("GOMAXPROCS set", "gomaxprocs", n, "cpus", runtime.NumCPU())
}
