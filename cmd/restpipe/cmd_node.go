package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/pki"
	"github.com/restpipe/restpipe/host/plugins"
)

// runNode runs `restpipe server` or `restpipe client`.
func runNode(ctx context.Context, role string, args []string, stderr io.Writer, getenv func(string) string) error {
	help := "Run the server node: accept links from client nodes."
	defaultHTTP := "127.0.0.1:8080"
	if role == "client" {
		help = "Run a client node: keep a link to the server node, dialing out."
		defaultHTTP = "127.0.0.1:8081"
	}
	fs := newFlagSet(role, stderr, help)
	var (
		files         pki.Files
		cfg           = nodeConfig{Role: host.Role(role), PluginConfig: pluginConfigFlag{}}
		serverName    string
		logs          logFlags
		checksumsFile string
	)
	fs.StringVar(&files.CA, "ca", "", "PEM `file` of the CA that signs every node's certificate (required)")
	fs.StringVar(&files.Cert, "cert", "", "PEM `file` of this node's certificate (required)")
	fs.StringVar(&files.Key, "key", "", "PEM `file` of this node's private key (required)")
	if role == "server" {
		fs.StringVar(&cfg.Listen, "listen", ":7443", "`address` to accept links on")
	} else {
		fs.StringVar(&cfg.Server, "server", "", "`address` of the server's link, host:port (required)")
		fs.StringVar(&serverName, "server-name", "", "`name` to verify in the server's certificate (default: the host part of --server)")
	}
	fs.StringVar(&cfg.HTTP, "http", defaultHTTP, "`address` of the local REST gateway: host:port, or unix:/path/to.sock")
	fs.DurationVar(&cfg.EventTimeout, "event-timeout", 30*time.Second, "deadline of an event whose caller sets no X-Event-Timeout")
	fs.DurationVar(&cfg.PeerWait, "peer-wait", 10*time.Second, "how long an event waits for its peer to connect (within its deadline)")
	fs.Int64Var(&cfg.MaxBody, "max-body", 0, "largest request body in `bytes`; 0 means no limit")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", 256, "events in flight per peer, each way, beyond which events fail with overloaded")
	fs.DurationVar(&cfg.Grace, "grace", 30*time.Second, "on SIGTERM, how long events in flight get to finish")
	fs.StringVar(&cfg.StatsD, "statsd", "", "also send metrics to a StatsD server at `host:port` (UDP; default: off)")
	fs.StringVar(&cfg.StatsDPrefix, "statsd-prefix", "restpipe", "`prefix` of the StatsD metric names")
	fs.StringVar(&cfg.PluginsDir, "plugins", "", "`directory` of handler plugins: every executable file in it is one (default: none)")
	fs.Var(cfg.PluginConfig, "plugin-config", "a plugin setting, `NAME.KEY=VALUE` (repeatable; comma-separated in the environment)")
	fs.StringVar(&checksumsFile, "plugin-checksums", "", "pin plugins: a sha256sum-format `file`; only files listed there with that hash are started")
	logs.register(fs)
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	log, err := logs.logger("restpipe", stderr)
	if err != nil {
		return err
	}
	if files.CA == "" || files.Cert == "" || files.Key == "" {
		return errors.New("--ca, --cert and --key are required (or RESTPIPE_CA, RESTPIPE_CERT, RESTPIPE_KEY)")
	}
	if role == "client" {
		if cfg.Server == "" {
			return errors.New("--server is required (or RESTPIPE_SERVER)")
		}
		if cfg.ServerName, err = serverNameOf(cfg.Server, serverName); err != nil {
			return err
		}
	}
	if checksumsFile != "" {
		f, err := os.Open(checksumsFile)
		if err != nil {
			return fmt.Errorf("--plugin-checksums: %w", err)
		}
		cfg.Checksums, err = plugins.ParseChecksums(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("--plugin-checksums %s: %w", checksumsFile, err)
		}
	}
	if cfg.Store, err = pki.NewStore(files); err != nil {
		return err
	}
	cfg.Logger = log
	n, err := newNode(cfg)
	if err != nil {
		return err
	}
	stopHUP := reloadOnHUP(cfg.Store, log)
	defer stopHUP()
	return n.run(ctx)
}
