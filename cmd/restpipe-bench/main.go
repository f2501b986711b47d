// Command restpipe-bench measures restpipe against a direct mutual-TLS
// baseline in the same run and prints one table of ratios.
//
//	go run ./cmd/restpipe-bench [--rounds 3] [--duration 5s] [--only a,b,...]
//	                            [--clients 10000] [--large-mb 256]
//	go tool -modfile=cmd/task.mod task bench -- --only a,b
//
// Every part runs as its own process on loopback, on ports the kernel picks:
// a restpipe server node and client nodes (real binaries built from this
// source tree, a real PKI made with `restpipe pki`), the baseline (a Go
// HTTP/1.1 server with mTLS, TLS 1.3 and ECDSA P-256, answering in-process)
// and the load generator, which is this same binary re-executed with a
// hidden subcommand. The scenarios:
//
//	a  small event, concurrency 1: p50 and p99 latency
//	b  small event, concurrency 64: events per second
//	c  a large body echoed up and back at once: MB/s, and each restpipe
//	   process's peak RSS
//	d  the same echo over an emulated 10 ms round trip (a delaying proxy)
//	e  ssh -R (OpenSSH, a private sshd) as a peer, through a, b and c
//	f  server memory per connected idle client
//	g  reconnect storm: every client back after the server is killed and
//	   restarted
//	h  plugin start: what one plugin adds to a node's start until its first
//	   served event
//	i  the plugin hop alone (node -> plugin -> node) beside a Unix-socket
//	   ping-pong to a child process
//	j  the Python plugin hop beside the Go one: c=1 p50 and c=64 events per
//	   second, and each plugin's start (python.go)
//	k  forwarded vs direct small events in a cluster of two servers
//	   (embedded NATS): c=1 p50, c=64 events per second, and the presence
//	   lookups (forward.go)
//
// Scenarios a to e are run --rounds times, alternating the baseline and
// restpipe, and each ratio is the median of the per-round ratios. See
// docs/performance.md for what each figure means and a table from one run.
//
// Every child process runs in its own process group with a parent-death
// signal, and is killed (with its descendants) when the bench ends, however
// it ends; everything it writes goes to one temporary directory, removed at
// the end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Hidden subcommands: the bench re-executes itself with one of these to run
// a part in its own process.
const (
	cmdServeDirect = "serve-direct" // the baseline server (or the plain origin behind ssh -R)
	cmdLoad        = "load"         // the load generator
	cmdIdle        = "idle"         // many idle clients of a server
	cmdPingPong    = "pingpong"     // the Unix-socket echo of scenario i
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "restpipe-bench: %v\n", err)
		os.Exit(1)
	}
}

// run dispatches to a hidden subcommand, or runs the bench.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case cmdServeDirect:
			return runServeDirect(ctx, args[1:], stdout, stderr)
		case cmdLoad:
			return runLoad(ctx, args[1:], stdout, stderr)
		case cmdIdle:
			return runIdle(ctx, args[1:], os.Stdin, stdout, stderr)
		case cmdPingPong:
			return runPingPong(ctx, args[1:], stderr)
		}
	}
	opts, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	return runBench(ctx, opts, stdout, stderr)
}

// options are the bench's command-line settings.
type options struct {
	rounds         int
	duration       time.Duration
	only           map[string]bool // the scenarios to run, by letter
	clients        int
	clusterClients int // scenario k: idle clients over three clustered servers
	largeMB        int
	rtt            time.Duration
	restpipe       string // a built restpipe binary, or "" to build one
	pluginsDir     string // a directory with built time and echo plugins, or ""
	installSSH     bool
}

// scenarios are the letters of every scenario, in order.
const scenarios = "abcdefghijk"

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("restpipe-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	var only string
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of scenarios a-d (and h); each figure is the median of the rounds")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measuring time of one round of scenarios a and b")
	fs.StringVar(&only, "only", "", "comma-separated `letters` of the scenarios to run (default: all of "+scenarios+")")
	fs.IntVar(&o.clients, "clients", 10000, "idle clients of scenarios f and g")
	fs.IntVar(&o.clusterClients, "cluster-clients", 3000, "idle clients over three clustered servers in scenario k (0: that part is skipped)")
	fs.IntVar(&o.largeMB, "large-mb", 256, "body size of scenarios c, d and e, in MiB")
	fs.DurationVar(&o.rtt, "rtt", 10*time.Millisecond, "round trip the delaying proxy of scenario d adds (half each way)")
	fs.StringVar(&o.restpipe, "restpipe", "", "`path` of a built restpipe binary (default: go build it from this source tree)")
	fs.StringVar(&o.pluginsDir, "plugins", "", "`directory` holding built time and echo plugins (default: go build them)")
	fs.BoolVar(&o.installSSH, "install-ssh", true, "for scenario e, install openssh-server and openssh-client with apt-get when missing (root only)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: restpipe-bench [flags]\n\nMeasure restpipe against a direct mTLS baseline in the same run; print one table of ratios.\n"+
			"Scenarios: a small c=1 latency, b small c=64 throughput, c large echo MB/s and peak RSS,\n"+
			"d large echo over an emulated RTT, e ssh -R peer, f memory per idle client,\n"+
			"g reconnect storm, h plugin start, i plugin hop alone, j Python plugin hop,\n"+
			"k forwarded vs direct events in a cluster of two servers.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.only = map[string]bool{}
	if only == "" {
		only = strings.Join(strings.Split(scenarios, ""), ",")
	}
	for _, s := range strings.Split(only, ",") {
		s = strings.ToLower(strings.TrimSpace(s))
		if len(s) != 1 || !strings.Contains(scenarios, s) {
			return nil, fmt.Errorf("--only: unknown scenario %q (want letters of %s)", s, scenarios)
		}
		o.only[s] = true
	}
	switch {
	case o.rounds < 1:
		return nil, errors.New("--rounds must be at least 1")
	case o.duration < 100*time.Millisecond:
		return nil, errors.New("--duration must be at least 100ms")
	case o.clients < 1:
		return nil, errors.New("--clients must be at least 1")
	case o.largeMB < 1:
		return nil, errors.New("--large-mb must be at least 1")
	case o.rtt < 2*time.Millisecond:
		return nil, errors.New("--rtt must be at least 2ms")
	}
	return o, nil
}

// want reports whether scenario s was asked for.
func (o *options) want(s string) bool { return o.only[s] }
