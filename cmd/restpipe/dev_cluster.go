package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/pki"
)

// runDevCluster runs `restpipe dev --servers N` (N > 1): N clustered
// servers with embedded NATS on loopback, two clients per server linked to
// any of them, and prints curl lines whose events cross servers.
func runDevCluster(ctx context.Context, servers int, pluginsDir string, roots map[host.Role]string, stdout io.Writer, log hclog.Logger) error {
	ca, err := pki.NewCA(pki.CAOptions{CommonName: "restpipe dev CA (throw-away)"})
	if err != nil {
		return err
	}
	identity := func(name string, role bool, hosts ...string) (*pki.Store, error) {
		certPEM, keyPEM, err := ca.Issue(name, hosts, pki.LeafOptions{ServerRole: role})
		if err != nil {
			return nil, err
		}
		id, err := pki.NewIdentity(ca.CertPEM(), certPEM, keyPEM, time.Now())
		if err != nil {
			return nil, err
		}
		return pki.NewStaticStore(id), nil
	}
	routes := make([]string, servers)
	for i := range routes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		routes[i] = ln.Addr().String()
		ln.Close()
	}
	base := nodeConfig{
		EventTimeout:     30 * time.Second,
		PeerWait:         10 * time.Second,
		Grace:            5 * time.Second,
		PluginsDir:       pluginsDir,
		PluginGOMAXPROCS: 1,
		HTTP:             "127.0.0.1:0",
	}
	var nodes, srvs, cls []*node
	closeAll := func() {
		for _, n := range nodes {
			n.closeListeners()
			n.closeCluster()
		}
	}
	for i := range servers {
		name := fmt.Sprintf("s%d", i+1)
		store, err := identity(name, true, "127.0.0.1", "localhost")
		if err != nil {
			return err
		}
		cfg := base
		cfg.Role, cfg.Store, cfg.Logger, cfg.Listen = host.RoleServer, store, log.Named(name), "127.0.0.1:0"
		cfg.Cluster = clusterConfig{Listen: routes[i], Join: routes}
		cfg.PluginConfig = pluginConfigFlag{"files": {"root": roots[host.RoleServer]}}
		n, err := newNode(cfg)
		if err != nil {
			closeAll()
			return err
		}
		nodes, srvs = append(nodes, n), append(srvs, n)
	}
	var addrs []string
	for _, s := range srvs {
		addrs = append(addrs, s.linkAddr())
	}
	for i := range 2 * servers {
		name := fmt.Sprintf("client%d", i+1)
		store, err := identity(name, false)
		if err != nil {
			closeAll()
			return err
		}
		cfg := base
		cfg.Role, cfg.Store, cfg.Logger, cfg.Server = host.RoleClient, store, log.Named(name), strings.Join(addrs, ",")
		cfg.PluginConfig = pluginConfigFlag{"files": {"root": roots[host.RoleClient]}}
		n, err := newNode(cfg)
		if err != nil {
			closeAll()
			return err
		}
		nodes, cls = append(nodes, n), append(cls, n)
	}

	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.run(ctx)
		}()
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ready := true
	for _, c := range cls {
		if _, err := c.client.Peer(waitCtx); err != nil {
			ready = false
		}
	}
	for _, s := range srvs {
		for ready && s.cluster.MembersUp() < servers && waitCtx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	cancel()
	if ready {
		fmt.Fprint(stdout, devClusterBanner(srvs, cls))
	}
	wg.Wait()
	return errors.Join(errs...)
}

// devClusterBanner prints the cluster's nodes and curl lines that cross
// servers: each client called on a server that does not hold it.
func devClusterBanner(srvs, cls []*node) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nrestpipe dev is running a cluster of %d servers (embedded NATS, mutual TLS routes) and %d clients:\n", len(srvs), len(cls))
	holder := map[string]*node{}
	for _, s := range srvs {
		var held []string
		for _, ss := range s.server.Sessions() {
			held = append(held, ss.Peer())
			holder[ss.Peer()] = s
		}
		fmt.Fprintf(&b, "  %s  gateway %s  link %s  routes %s  clients %s\n", s.name, curlBase(s.httpAddr()), s.linkAddr(), s.cluster.RouteAddr(), strings.Join(held, ","))
	}
	fmt.Fprintf(&b, "\nEvents that cross servers (the gateway's server forwards them to the client's):\n")
	for i, c := range cls {
		h := holder[c.name]
		s := srvs[i%len(srvs)]
		if s == h {
			s = srvs[(i+1)%len(srvs)]
		}
		fmt.Fprintf(&b, "  curl %s/client/%s/echo//hello   # %s -> %s -> %s\n", curlBase(s.httpAddr()), c.name, s.name, nameOf(h), c.name)
	}
	fmt.Fprintf(&b, "\nThe members and who holds whom:\n  curl %s/status\n  open %s/ui\n\nPress Ctrl-C to stop.\n", curlBase(srvs[0].httpAddr()), curlBase(srvs[0].httpAddr()))
	return b.String()
}

// nameOf is a node's name, or "?" for none.
func nameOf(n *node) string {
	if n == nil {
		return "?"
	}
	return n.name
}
