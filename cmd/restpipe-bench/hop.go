package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/dispatch"
	"github.com/restpipe/restpipe/host/plugins"
)

// pingPongSize is what one ping-pong round trip of scenario i carries:
// about what a small event and its reply put on the plugin's socket.
const pingPongSize = 128

// runPluginHop runs scenario i: the plugin hop alone, node -> plugin ->
// node, beside its floor, a Unix-socket ping-pong to a child process.
//
// The bench itself is the node here: it runs the node's plugin manager
// (host/plugins, the code a node runs) on a directory holding the time
// plugin, and sends GET time events through the route table one at a time,
// reading each reply to its end. The floor is the same number of
// 128-byte round trips on a Unix socket to a child process (this binary
// re-executed) that echoes what it reads. Each round measures both for
// half of --duration, the hop first; the row shows the medians of the
// per-round p50s and of their per-round ratio.
func (r *runner) runPluginHop(ctx context.Context) error {
	fmt.Fprintln(r.log, "i. plugin hop alone...")
	dir := filepath.Join(r.work, "i")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := copyFile(filepath.Join(r.bins.pluginsDir, "time"), filepath.Join(dir, "time"), 0o755); err != nil {
		return err
	}
	table, err := dispatch.New(dispatch.DefaultConfig())
	if err != nil {
		return err
	}
	cfg := plugins.DefaultConfig()
	cfg.Dir = dir
	cfg.Node = host.Node{Role: host.RoleServer, Name: "bench"}
	cfg.Routes = table
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "i", Level: hclog.Warn, Output: r.log})
	m, err := plugins.New(cfg)
	if err != nil {
		return err
	}
	mctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(mctx) }()
	defer func() { stop(); <-done }()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	err = m.WaitStarted(wctx)
	wcancel()
	if err != nil {
		return fmt.Errorf("i: plugin manager: %w", err)
	}

	sock := filepath.Join(dir, "pingpong.sock")
	if _, err := r.procs.start("pingpong", r.bins.self, []string{cmdPingPong, "--socket", sock}, startOpts{}); err != nil {
		return err
	}
	conn, err := dialWait(ctx, sock, 10*time.Second)
	if err != nil {
		return fmt.Errorf("i: ping-pong child: %w", err)
	}
	defer conn.Close()
	out, in := make([]byte, pingPongSize), make([]byte, pingPongSize)
	floor := func() error {
		if _, err := conn.Write(out); err != nil {
			return err
		}
		_, err := io.ReadFull(conn, in)
		return err
	}
	hop := func() error {
		rep, err := table.Handle(ctx, &host.Event{ID: "i", Verb: "get", Noun: "time", Peer: "bench"})
		if err != nil {
			return err
		}
		defer rep.Close()
		_, err = io.Copy(io.Discard, rep.Body)
		return err
	}
	// Warm both up, as the load generator warms up a and b.
	for range 200 {
		if err := hop(); err != nil {
			return fmt.Errorf("i: event: %w", err)
		}
		if err := floor(); err != nil {
			return fmt.Errorf("i: ping-pong: %w", err)
		}
	}
	for round := 1; round <= r.o.rounds; round++ {
		lat, err := timeEach(ctx, r.o.duration/2, 0, hop)
		if err != nil {
			return fmt.Errorf("i: event: %w", err)
		}
		flat, err := timeEach(ctx, 0, len(lat), floor)
		if err != nil {
			return fmt.Errorf("i: ping-pong: %w", err)
		}
		r.res.add("i.p50", tRestpipe, round, percentile(lat, 0.5))
		r.res.add("i.p50", tPingPong, round, percentile(flat, 0.5))
		fmt.Fprintf(r.log, "  round %d: plugin hop p50 %.1fµs over %d events, ping-pong p50 %.1fµs\n",
			round, percentile(lat, 0.5), len(lat), percentile(flat, 0.5))
	}
	return nil
}

// tPingPong is the floor of scenario i.
const tPingPong = "ping-pong"

// timeEach calls f for d, or n times when d is 0, and returns each call's
// duration, sorted.
func timeEach(ctx context.Context, d time.Duration, n int, f func() error) ([]time.Duration, error) {
	var lat []time.Duration
	end := time.Now().Add(d)
	for ctx.Err() == nil && (d == 0 && len(lat) < n || d > 0 && time.Now().Before(end)) {
		t0 := time.Now()
		if err := f(); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t0))
	}
	if len(lat) == 0 {
		return nil, errors.New("nothing measured")
	}
	slices.Sort(lat)
	return lat, ctx.Err()
}

// dialWait dials the Unix socket at path until it answers or within
// passes.
func dialWait(ctx context.Context, path string, within time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(within)
	for {
		c, err := net.Dial("unix", path)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// runPingPong is the child of scenario i: it accepts one connection on a
// Unix socket and writes back everything it reads, until the peer closes.
func runPingPong(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmdPingPong, flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := fs.String("socket", "", "Unix socket `path` to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() { <-ctx.Done(); ln.Close() }()
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = io.Copy(c, c)
	return err
}
