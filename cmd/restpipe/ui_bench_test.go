package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/link"
	"github.com/restpipe/restpipe/host/pki"
)

// BenchmarkUIStateLinks measures what one poll of the status page costs a
// server node with many real links: a real server node in this process,
// and N host/link clients in a helper process (this test binary again, see
// runIdleClients), each with a certificate of its own, linked over
// real TLS and yamux. Each iteration is one GET /ui/api/state (the default
// view, gzipped as a browser asks) through the node's gateway handler,
// without the network; /status, which lists every peer, is measured beside
// it. The baseline is 100 links; set RESTPIPE_UI_BENCH_LINKS for the other
// count (default 1000; docs/ui.md has the figures for 10000).
func BenchmarkUIStateLinks(b *testing.B) {
	n := 1000
	if v := os.Getenv("RESTPIPE_UI_BENCH_LINKS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("RESTPIPE_UI_BENCH_LINKS=%q: want a positive number", v)
		}
	}
	for _, links := range []int{100, n} {
		b.Run(fmt.Sprintf("links=%d", links), func(b *testing.B) {
			dir := b.TempDir()
			ca, err := pki.InitCA(dir, pki.CAOptions{})
			if err != nil {
				b.Fatal(err)
			}
			c := &cluster{t: b, ca: ca, clients: map[string]*testNode{}}
			c.server = c.startNode(host.RoleServer, "server", "", clusterOpts{plugins: []string{}})
			idleClientsProcess(b, c, dir, links)
			h := c.server.http.Handler
			for _, path := range []string{"/ui/api/state", "/status"} {
				b.Run(path, func(b *testing.B) {
					req := httptest.NewRequest("GET", path, nil)
					req.Header.Set("Accept-Encoding", "gzip")
					var size int
					// The process's CPU while idle (the links' keepalives),
					// to take off what the polls cost.
					idle := idleCPU(b, time.Second)
					b.ReportAllocs()
					start, cpu0 := time.Now(), processCPU(b)
					polls := 0
					for b.Loop() {
						rec := httptest.NewRecorder()
						h.ServeHTTP(rec, req)
						if rec.Code != http.StatusOK {
							b.Fatalf("GET %s = %d", path, rec.Code)
						}
						size = rec.Body.Len()
						polls++
					}
					used := processCPU(b) - cpu0 - time.Duration(float64(time.Since(start))*idle)
					b.ReportMetric(float64(size), "bytes/poll")
					b.ReportMetric(float64(used.Nanoseconds())/float64(polls), "cpu-ns/poll")
					if got := c.server.links(); got != links {
						b.Errorf("%d links after the benchmark, want %d", got, links)
					}
				})
			}
		})
	}
}

// idleClientsEnv tells this test binary to be the helper process of
// BenchmarkUIStateLinks: "ADDR|N|CADIR".
const idleClientsEnv = "RESTPIPE_UI_BENCH_IDLE"

// idleClientsProcess runs n idle clients of c's server in a helper process
// (each link is two file descriptors when both ends share a process), waits
// until the server has them all, and stops the process when b ends.
func idleClientsProcess(b *testing.B, c *cluster, caDir string, n int) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.timeout=1h") // TestMain runs runIdleClients
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%d|%s", idleClientsEnv, c.server.linkAddr(), n, caDir))
	cmd.SysProcAttr = dieWithParent()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	var out syncBuffer
	go func() {
		defer close(exited)
		_, _ = io.Copy(&out, stdout)
		_ = cmd.Wait()
	}()
	b.Cleanup(func() {
		stdin.Close() // the helper stops when its standard input closes
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(10 * time.Minute)
	for c.server.links() < n {
		select {
		case <-exited:
			b.Fatalf("the idle clients' process exited with %d of %d linked:\n%s\n%s", c.server.links(), n, out.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d clients linked after 10 minutes:\n%s", c.server.links(), n, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Logf("%d clients linked %v after starting their process", n, time.Since(start).Round(time.Millisecond))
}

// runIdleClients is the helper process of BenchmarkUIStateLinks, run by
// TestMain when RESTPIPE_UI_BENCH_IDLE is set (so that no test of the suite
// shows as skipped): it links N idle clients, 200 at a time, prints
// "linked N", then waits for its standard input to close. It returns the
// process's exit code.
func runIdleClients(spec string) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "idle clients:", err); return 1 }
	parts := strings.Split(spec, "|")
	if len(parts) != 3 {
		return fail(fmt.Errorf("%s=%q: want ADDR|N|CADIR", idleClientsEnv, spec))
	}
	addr, caDir := parts[0], parts[2]
	n, err := strconv.Atoi(parts[1])
	if err != nil {
		return fail(err)
	}
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	clients := make([]*link.Client, n)
	for i := range clients {
		if clients[i], err = idleClient(ca, fmt.Sprintf("idle-%05d", i), addr); err != nil {
			return fail(err)
		}
	}
	const batch = 200
	for first := 0; first < n; first += batch {
		for _, cl := range clients[first:min(first+batch, n)] {
			wg.Go(func() { _ = cl.Run(ctx) })
		}
		for linked := 0; linked < min(first+batch, n); {
			time.Sleep(20 * time.Millisecond)
			linked = 0
			for _, cl := range clients[:min(first+batch, n)] {
				if cl.Session() != nil {
					linked++
				}
			}
		}
	}
	fmt.Printf("linked %d\n", n)
	_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	return 0
}

// idleClient is a link client that serves nothing, as restpipe-bench's idle
// clients are.
func idleClient(ca *pki.CA, name, addr string) (*link.Client, error) {
	certPEM, keyPEM, err := ca.Issue(name, nil, pki.LeafOptions{})
	if err != nil {
		return nil, err
	}
	id, err := pki.NewIdentity(ca.CertPEM(), certPEM, keyPEM, time.Now())
	if err != nil {
		return nil, err
	}
	store := pki.NewStaticStore(id)
	cfg := link.DefaultConfig()
	cfg.Handler = host.HandlerFunc(func(context.Context, *host.Event) (*host.Reply, error) {
		return nil, host.Errorf(host.KindNoRoute, "an idle client serves nothing")
	})
	cfg.Software = "restpipe ui bench idle client"
	return link.NewClient(link.ClientConfig{Config: cfg, Addr: addr, TLS: func() *tls.Config { return store.ClientTLS("server") }})
}

// processCPU returns the CPU time this process used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// idleCPU returns the share of a CPU this process uses while nothing but
// its background work runs, measured over d.
func idleCPU(b *testing.B, d time.Duration) float64 {
	start, cpu0 := time.Now(), processCPU(b)
	time.Sleep(d)
	return float64(processCPU(b)-cpu0) / float64(time.Since(start))
}
