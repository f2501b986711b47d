// Command restpipe runs a restpipe node, manages its identities, and runs the
// one-command demo.
//
//	restpipe server   run the server node: accept links from clients
//	restpipe client   run a client node: keep a link to the server
//	restpipe dev      a server and a client in one process on loopback,
//	                  with a throw-away PKI: the demo
//	restpipe pki      create a CA and issue node certificates
//	restpipe version  print the version
//
// Every flag of server and client can also be set in the environment as
// RESTPIPE_<FLAG>, with dashes as underscores (RESTPIPE_SERVER_NAME for
// --server-name), and in an HCL configuration file (--config, see
// docs/config.md). A flag on the command line wins over the environment,
// which wins over the file, which wins over the default.
//
// This package is the only place that knows every concrete type of the
// daemon: it wires host/link, host/pki and the rest together and owns their
// lifetimes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// errUsage marks a command line that could not be understood; it exits 2.
// errHelp marks one that asked for the usage (-h, --help); it exits 0.
var (
	errUsage = errors.New("usage")
	errHelp  = errors.New("help requested")
)

const usage = `restpipe: a durable mutual-TLS pipe for events between nodes

Usage:
  restpipe server  [flags]   run the server node
  restpipe client  [flags]   run a client node
  restpipe dev     [flags]   run the demo: a server and a client on loopback
  restpipe pki init  --dir DIR                         create a CA
  restpipe pki issue --dir DIR --name NAME [--host H]  issue a node certificate
  restpipe version           print the version

Run 'restpipe <command> -h' for the flags of a command.
`

// run runs one command and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "server", "client":
		err = runNode(ctx, cmd, rest, stderr, getenv)
	case "dev":
		err = runDev(ctx, rest, stdout, stderr, getenv)
	case "pki":
		err = runPKI(rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, versionString())
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "restpipe: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "restpipe %s: %v\n", cmd, err)
		return 1
	}
}
