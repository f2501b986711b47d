package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/restpipe/restpipe/host/pki"
)

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// runPKI runs `restpipe pki init|issue`.
func runPKI(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, "Usage:\n  restpipe pki init  --dir DIR\n  restpipe pki issue --dir DIR --name NAME [--host H]... [--role server]\n")
		return errUsage
	}
	switch args[0] {
	case "init":
		fs := newFlagSet("pki init", stderr, "Create a CA: DIR/ca.crt and DIR/ca.key (mode 0600). Never overwrites.")
		dir := fs.String("dir", "", "directory for the CA files (required)")
		if err := parseFlags(fs, args[1:], noEnv); err != nil {
			return err
		}
		if *dir == "" {
			return errors.New("--dir is required")
		}
		ca, err := pki.InitCA(*dir, pki.CAOptions{})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created CA %q in %s (ca.crt, ca.key); keep ca.key secret\n", ca.Certificate().Subject.CommonName, *dir)
		return nil
	case "issue":
		fs := newFlagSet("pki issue", stderr, "Issue a node certificate signed by the CA in DIR: DIR/NAME.crt and DIR/NAME.key.\nNAME is the node's identity; each --host (DNS name or IP) is a further name it may be reached by.")
		dir := fs.String("dir", "", "directory holding the CA; the new files go there too (required)")
		name := fs.String("name", "", "the node's name, a lower-case DNS name (required)")
		var hosts multiFlag
		fs.Var(&hosts, "host", "a further DNS name or IP address for the certificate (repeatable)")
		role := fs.String("role", "", "server: mark the certificate as a server's, which a cluster of servers requires (docs/cluster.md); client (or nothing): no mark. Never give the server role to a client")
		if err := parseFlags(fs, args[1:], noEnv); err != nil {
			return err
		}
		if *dir == "" || *name == "" {
			return errors.New("--dir and --name are required")
		}
		var opts pki.LeafOptions
		switch *role {
		case "", "client":
		case "server":
			opts.ServerRole = true
		default:
			return fmt.Errorf("--role %q: want server or client", *role)
		}
		certFile, keyFile, err := pki.IssueFiles(*dir, *name, hosts, opts)
		if err != nil {
			return err
		}
		what := ""
		if opts.ServerRole {
			what = " (server role)"
		}
		fmt.Fprintf(stdout, "issued %s%s: %s and %s\n", *name, what, certFile, keyFile)
		return nil
	default:
		fmt.Fprintf(stderr, "restpipe pki: unknown subcommand %q (want init or issue)\n", args[0])
		return errUsage
	}
}

// noEnv is the environment of commands whose flags the environment does
// not set: pki commands act once, on purpose.
func noEnv(string) string { return "" }
