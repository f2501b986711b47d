// Package hopbench measures one hop of the event path beside its floor in
// the same benchmark, so that a hop's overhead over what the machine
// allows is one line of `go test -bench` output:
//
//	BenchmarkPluginHop-2   10000   61843 ns/op   38210 floor-ns/op   1.62 x-floor
//
// The floors are the cheapest way to do the hop's work at all: a
// Unix-socket ping-pong to a child process for the plugin hop, an echo over
// one mutual-TLS connection for the link, a bare net/http handler for the
// gateway. Hop and floor run interleaved in blocks, so a machine that gets
// slower halfway through (a shared 2-core CI box) slows both alike.
//
// Only tests import this package.
package hopbench

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// block is how many hops run before as many floors.
const block = 64

// Run runs hop b.N times and floor b.N times, interleaved in blocks, and
// reports the hop's ns/op, the floor's (floor-ns/op) and their ratio
// (x-floor). An error from either stops the benchmark.
func Run(b *testing.B, hop, floor func() error) {
	b.Helper()
	b.ReportAllocs()
	var hopTime, floorTime time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(block, b.N-done)
		t0 := time.Now()
		for range n {
			if err := hop(); err != nil {
				b.Fatalf("hop: %v", err)
			}
		}
		t1 := time.Now()
		b.StopTimer()
		for range n {
			if err := floor(); err != nil {
				b.Fatalf("floor: %v", err)
			}
		}
		floorTime += time.Since(t1)
		b.StartTimer()
		hopTime += t1.Sub(t0)
		done += n
	}
	b.StopTimer()
	h := float64(hopTime.Nanoseconds()) / float64(b.N)
	f := float64(floorTime.Nanoseconds()) / float64(b.N)
	b.ReportMetric(h, "ns/op")
	b.ReportMetric(f, "floor-ns/op")
	if f > 0 {
		b.ReportMetric(h/f, "x-floor")
	}
}

// childEnv names the Unix socket a re-executed test binary serves its
// echo on.
const childEnv = "RESTPIPE_HOPBENCH_ECHO_SOCKET"

// MaybeChild serves the echo of a ping-pong child and exits, when this
// process was started as one by PingPongChild. Call it first in TestMain.
func MaybeChild() {
	path := os.Getenv(childEnv)
	if path == "" {
		return
	}
	if err := serveEcho(path); err != nil {
		fmt.Fprintln(os.Stderr, "hopbench child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveEcho accepts one connection on a Unix socket at path and writes
// back everything it reads until the peer closes.
func serveEcho(path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	defer ln.Close()
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = io.Copy(c, c)
	return err
}

// PingPongChild starts this test binary again as a child process serving
// an echo on a Unix socket (see MaybeChild) and returns a floor that sends
// size bytes and reads them back: a round trip to another process, which
// every plugin event makes. The child is stopped when the benchmark ends.
func PingPongChild(b *testing.B, size int) func() error {
	b.Helper()
	path := filepath.Join(b.TempDir(), "echo.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var c net.Conn
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if c, err = net.Dial("unix", path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			b.Fatalf("ping-pong child not listening within 10s: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Cleanup(func() {
		c.Close() // the child's io.Copy ends and it exits
		if err := cmd.Wait(); err != nil {
			b.Errorf("ping-pong child: %v", err)
		}
	})
	return pingPong(c, size)
}

// TLSEcho returns a floor that sends size bytes over one mutual-TLS
// connection on loopback and reads them back from an echo at the far end,
// which is what a link event costs at the least. The server side verifies
// the client's certificate as a link server does.
func TLSEcho(b *testing.B, server, client *tls.Config, size int) func() error {
	b.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c)
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c.Close()
		ln.Close()
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			b.Errorf("TLS echo: %v", err)
		}
	})
	return pingPong(c, size)
}

// pingPong returns a round trip of size bytes over c.
func pingPong(c net.Conn, size int) func() error {
	out, in := make([]byte, size), make([]byte, size)
	return func() error {
		if _, err := c.Write(out); err != nil {
			return err
		}
		_, err := io.ReadFull(c, in)
		return err
	}
}
