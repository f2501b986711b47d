package main

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/pki"
)

// runDev runs `restpipe dev`: a server node and a client node in one
// process on loopback, with a PKI made in memory for this run only.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlagSet("dev", stderr, "Run the demo: a server and a client node on loopback with a throw-away PKI.")
	var logs logFlags
	logs.register(fs)
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	log, err := logs.logger("restpipe", stderr)
	if err != nil {
		return err
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
		id, err := pki.NewIdentity(ca.CertPEM(), certPEM, keyPEM, timeNow())
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

	srv, err := newNode(nodeConfig{Role: host.RoleServer, Store: serverID, Logger: log.Named("server"), Listen: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	cl, err := newNode(nodeConfig{Role: host.RoleClient, Store: clientID, Logger: log.Named("client1"),
		Server: srv.linkAddr(), ServerName: "server"})
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "restpipe dev: server node \"server\" links on %s; client node \"client1\" dials it.\nPress Ctrl-C to stop.\n", srv.linkAddr())
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, n := range []*node{srv, cl} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.run(ctx)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
