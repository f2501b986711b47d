package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/dispatch"
	"github.com/restpipe/restpipe/host/link"
	"github.com/restpipe/restpipe/host/pki"
	"github.com/restpipe/restpipe/host/plugins"
)

// nodeConfig is everything a node needs, whatever set it: flags, the
// environment, or dev mode.
type nodeConfig struct {
	Role   host.Role
	Store  *pki.Store
	Logger hclog.Logger

	// Listen is the server's link address.
	Listen string
	// Server is the address a client dials, and ServerName the name it
	// verifies in the server's certificate.
	Server     string
	ServerName string

	// PluginsDir is the plugins directory; "" runs no plugins.
	PluginsDir string
	// PluginConfig is each plugin's configuration, by plugin file name.
	PluginConfig map[string]map[string]string
	// Checksums pins plugins when not nil (see plugins.Config).
	Checksums map[string][]byte
}

// node is one running restpipe node.
type node struct {
	cfg     nodeConfig
	log     hclog.Logger
	table   *dispatch.Table  // this node's routes, served by its plugins
	plugins *plugins.Manager // nil without a plugins directory
	server  *link.Server     // server role
	ln      net.Listener     // server role: the link listener
	client  *link.Client     // client role
}

// newNode builds a node and binds its listeners, so that address errors
// surface before anything runs.
func newNode(cfg nodeConfig) (*node, error) {
	n := &node{cfg: cfg, log: cfg.Logger}
	table, err := dispatch.New(dispatch.DefaultConfig())
	if err != nil {
		return nil, err
	}
	n.table = table
	if cfg.PluginsDir != "" {
		pc := plugins.DefaultConfig()
		pc.Dir = cfg.PluginsDir
		pc.Node = host.Node{Role: cfg.Role, Name: cfg.Store.Identity().Name}
		pc.Routes = table
		pc.Logger = cfg.Logger.Named("plugins")
		pc.PluginConfig = cfg.PluginConfig
		pc.Checksums = cfg.Checksums
		if n.plugins, err = plugins.New(pc); err != nil {
			return nil, err
		}
	}
	lc := link.DefaultConfig()
	lc.Logger = cfg.Logger.Named("link")
	lc.Software = software()
	lc.Handler = table
	switch cfg.Role {
	case host.RoleServer:
		srv, err := link.NewServer(link.ServerConfig{Config: lc, TLS: cfg.Store.ServerTLS()})
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("listen for links: %w", err)
		}
		n.server, n.ln = srv, ln
	case host.RoleClient:
		serverName := cfg.ServerName
		cl, err := link.NewClient(link.ClientConfig{
			Config: lc,
			Addr:   cfg.Server,
			TLS:    func() *tls.Config { return cfg.Store.ClientTLS(serverName) },
		})
		if err != nil {
			return nil, err
		}
		n.client = cl
	default:
		return nil, fmt.Errorf("unknown role %q", cfg.Role)
	}
	return n, nil
}

// linkAddr returns the address the server's link listens on.
func (n *node) linkAddr() string { return n.ln.Addr().String() }

// run serves until ctx ends, then shuts the node down and returns once
// everything it started has stopped. Plugins stop last, after the link.
func (n *node) run(ctx context.Context) error {
	if n.plugins != nil {
		pctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan error, 1)
		go func() { done <- n.plugins.Run(pctx) }()
		defer func() {
			stop()
			if err := <-done; err != nil {
				n.log.Error("plugins", "error", err)
			}
		}()
	}
	return n.runLink(ctx)
}

// runLink runs the link until ctx ends.
func (n *node) runLink(ctx context.Context) error {
	name := n.cfg.Store.Identity().Name
	switch n.cfg.Role {
	case host.RoleServer:
		n.log.Info("listening", "role", "server", "name", name, "link", n.linkAddr())
		errc := make(chan error, 1)
		go func() { errc <- n.server.Serve(n.ln) }()
		select {
		case <-ctx.Done():
			n.server.Close()
			<-errc
			return nil
		case err := <-errc:
			n.server.Close()
			return err
		}
	default:
		n.log.Info("starting", "role", "client", "name", name, "server", n.cfg.Server, "server_name", n.cfg.ServerName)
		return n.client.Run(ctx)
	}
}

// runNode runs `restpipe server` or `restpipe client`.
func runNode(ctx context.Context, role string, args []string, stderr io.Writer, getenv func(string) string) error {
	help := "Run the server node: accept links from client nodes."
	if role == "client" {
		help = "Run a client node: keep a link to the server node, dialing out."
	}
	fs := newFlagSet(role, stderr, help)
	var (
		files          pki.Files
		listen, server string
		serverName     string
		logs           logFlags
		pluginsDir     string
		pluginConfig   = pluginConfigFlag{}
		checksumsFile  string
	)
	fs.StringVar(&files.CA, "ca", "", "PEM file of the CA that signs every node's certificate (required)")
	fs.StringVar(&files.Cert, "cert", "", "PEM file of this node's certificate (required)")
	fs.StringVar(&files.Key, "key", "", "PEM file of this node's private key (required)")
	if role == "server" {
		fs.StringVar(&listen, "listen", ":7443", "address to accept links on")
	} else {
		fs.StringVar(&server, "server", "", "address of the server's link, host:port (required)")
		fs.StringVar(&serverName, "server-name", "", "name to verify in the server's certificate (default: the host part of --server)")
	}
	fs.StringVar(&pluginsDir, "plugins", "", "directory of handler plugins: every executable file in it is one (default: none)")
	fs.Var(pluginConfig, "plugin-config", "a plugin setting, `NAME.KEY=VALUE` (repeatable; comma-separated in the environment)")
	fs.StringVar(&checksumsFile, "plugin-checksums", "", "pin plugins: a sha256sum-format `FILE`; only files listed there with that hash are started")
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
	cfg := nodeConfig{Role: host.Role(role), Listen: listen, Server: server, PluginsDir: pluginsDir, PluginConfig: pluginConfig}
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
	if role == "client" {
		if server == "" {
			return errors.New("--server is required (or RESTPIPE_SERVER)")
		}
		name, err := serverNameOf(server, serverName)
		if err != nil {
			return err
		}
		cfg.ServerName = name
	}
	store, err := pki.NewStore(files)
	if err != nil {
		return err
	}
	cfg.Store, cfg.Logger = store, log
	n, err := newNode(cfg)
	if err != nil {
		return err
	}
	stopHUP := reloadOnHUP(store, log)
	defer stopHUP()
	return n.run(ctx)
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

// reloadOnHUP reloads the node's certificate and key on SIGHUP until the
// returned stop function is called. Links stay up; new handshakes use the
// new identity. A bad new identity is refused and logged.
func reloadOnHUP(store *pki.Store, log hclog.Logger) (stop func()) {
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
					continue
				}
				id := store.Identity()
				log.Info("SIGHUP: certificate reloaded", "name", id.Name, "not_after", id.Leaf.NotAfter)
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
