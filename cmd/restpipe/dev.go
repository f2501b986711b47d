package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/restpipe/restpipe/cmd/internal/srctree"
	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/pki"
)

// devPlugins are the example plugins the demo builds and runs.
var devPlugins = []string{"time", "cat", "echo", "files"}

// runDev runs `restpipe dev`: a server node and a client node in one
// process on loopback, with a PKI made in memory for this run only and the
// example plugins, and prints the curl lines to try.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlagSet("dev", stderr, "Run the demo: a server and a client node on loopback, with a throw-away PKI and the example plugins.")
	var (
		logs       logFlags
		serverHTTP string
		clientHTTP string
		pluginsDir string
	)
	fs.StringVar(&serverHTTP, "server-http", "127.0.0.1:8080", "`address` of the server node's gateway")
	fs.StringVar(&clientHTTP, "client-http", "127.0.0.1:8081", "`address` of the client node's gateway")
	fs.StringVar(&pluginsDir, "plugins", "", "`directory` of plugins to run (default: build the example plugins from this source tree)")
	gomaxprocs := fs.Int("gomaxprocs", defaultGOMAXPROCS(), "Go's GOMAXPROCS for both nodes (see restpipe server -h)")
	servers := fs.Int("servers", 1, "run a cluster of this many servers (embedded NATS), with two clients per server, instead of one server and one client (docs/cluster.md); the gateways then take free ports")
	logs.register(fs)
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	log, err := logs.logger("restpipe", stderr)
	if err != nil {
		return err
	}
	setGOMAXPROCS(*gomaxprocs, getenv, log)

	work, err := os.MkdirTemp("", "restpipe-dev-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if pluginsDir == "" {
		pluginsDir = filepath.Join(work, "plugins")
		fmt.Fprintln(stdout, "restpipe dev: building the example plugins...")
		if err := buildExamplePlugins(ctx, pluginsDir); err != nil {
			return err
		}
	}

	// The files plugin serves a directory of its own on each node.
	roots := map[host.Role]string{}
	for _, role := range []host.Role{host.RoleServer, host.RoleClient} {
		root := filepath.Join(work, "files-"+string(role))
		if err := os.MkdirAll(root, 0o755); err != nil {
			return err
		}
		hello := fmt.Sprintf("hello from the %s node's files plugin\n", role)
		if err := os.WriteFile(filepath.Join(root, "hello.txt"), []byte(hello), 0o644); err != nil {
			return err
		}
		roots[role] = root
	}
	if *servers > 1 {
		return runDevCluster(ctx, *servers, pluginsDir, roots, stdout, log)
	}

	ca, err := pki.NewCA(pki.CAOptions{CommonName: "restpipe dev CA (throw-away)"})
	if err != nil {
		return err
	}
	identity := func(name string, hosts ...string) (*pki.Store, error) {
		certPEM, keyPEM, err := ca.Issue(name, hosts, pki.LeafOptions{})
		if err != nil {
			return nil, err
		}
		id, err := pki.NewIdentity(ca.CertPEM(), certPEM, keyPEM, time.Now())
		if err != nil {
			return nil, err
		}
		return pki.NewStaticStore(id), nil
	}
	serverID, err := identity("server", "127.0.0.1", "localhost")
	if err != nil {
		return err
	}
	clientID, err := identity("client1")
	if err != nil {
		return err
	}
	base := nodeConfig{
		EventTimeout:     30 * time.Second,
		PeerWait:         10 * time.Second,
		Grace:            5 * time.Second,
		PluginsDir:       pluginsDir,
		PluginGOMAXPROCS: 1,
	}
	scfg := base
	scfg.Role, scfg.Store, scfg.Logger, scfg.Listen, scfg.HTTP = host.RoleServer, serverID, log.Named("server"), "127.0.0.1:0", serverHTTP
	scfg.PluginConfig = pluginConfigFlag{"files": {"root": roots[host.RoleServer]}}
	srv, err := newNode(scfg)
	if err != nil {
		return devListenHint(err)
	}
	ccfg := base
	ccfg.Role, ccfg.Store, ccfg.Logger, ccfg.Server, ccfg.ServerName, ccfg.HTTP = host.RoleClient, clientID, log.Named("client1"), srv.linkAddr(), "server", clientHTTP
	ccfg.PluginConfig = pluginConfigFlag{"files": {"root": roots[host.RoleClient]}}
	cl, err := newNode(ccfg)
	if err != nil {
		srv.closeListeners()
		return devListenHint(err)
	}

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, n := range []*node{srv, cl} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.run(ctx)
		}()
	}
	// Print the curl lines once the client is linked and the plugins run.
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if _, err := cl.client.Peer(waitCtx); err == nil {
		for _, n := range []*node{srv, cl} {
			if n.plugins != nil {
				_ = n.plugins.WaitStarted(waitCtx)
			}
		}
		fmt.Fprint(stdout, devBanner(srv, cl, pluginsDir))
	}
	cancel()
	wg.Wait()
	return errors.Join(errs...)
}

// devBanner is what the demo prints: where things are and what to try.
func devBanner(srv, cl *node, pluginsDir string) string {
	s, c := curlBase(srv.httpAddr()), curlBase(cl.httpAddr())
	var b strings.Builder
	fmt.Fprintf(&b, `
restpipe dev is running: server node "server" and client node "client1",
linked by mutual TLS 1.3 over %s, each with the plugins time, cat, echo, files.

From the client to the server (what RestPipe did):
  curl %s/server/time
  curl %s/server/cat//hello%%20/world
  curl %s/server/files//hello.txt
  curl -d 'any body' -H 'Content-Type: text/plain' %s/server/echo
  curl '%s/server/echo?x=1&x=2'

From the server to a client:
  curl %s/client/client1/time
  curl %s/client/client1/cat//hello%%20/world
  curl -X PUT --data-binary @/etc/hostname %s/client/client1/files//uploaded.txt

A node's own handlers, its state, a deadline:
  curl %s/local/time
  curl %s/status
  curl -H 'X-Event-Timeout: 1s' '%s/server/echo?sleep=3s'

The status pages: %s/ui/ (server) and %s/ui/ (client).

Both nodes run the plugins in %s:
drop a plugin binary there and it is live within 2 seconds (README,
"Writing a plugin"), for example
  go build -o %s/shout ./shout

Press Ctrl-C to stop.
`, srv.linkAddr(), c, c, c, c, c, s, s, s, c, s, c, uiBase(s), uiBase(c), pluginsDir, pluginsDir)
	return b.String()
}

// uiBase is where a browser finds a gateway: a Unix socket has no URL.
func uiBase(curl string) string {
	if strings.HasPrefix(curl, "--unix-socket") {
		return "(curl " + curl + ")"
	}
	return curl
}

// curlBase is how curl reaches a gateway address.
func curlBase(addr string) string {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "--unix-socket " + path + " http://localhost"
	}
	return "http://" + addr
}

// devListenHint adds what to do when the demo's ports are taken.
func devListenHint(err error) error {
	if strings.Contains(err.Error(), "address already in use") {
		return fmt.Errorf("%w (choose other ports with --server-http and --client-http)", err)
	}
	return err
}

// buildExamplePlugins builds the example plugins into dir with the go
// command, from the source tree the current directory is in.
func buildExamplePlugins(ctx context.Context, dir string) error {
	root, err := srctree.Root()
	if err != nil {
		return fmt.Errorf("%w: run restpipe dev from it, or pass --plugins DIR with built plugins", err)
	}
	if err := srctree.BuildPlugins(ctx, root, dir, devPlugins...); err != nil {
		return fmt.Errorf("build the example plugins: %w", err)
	}
	return nil
}
