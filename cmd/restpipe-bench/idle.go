package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/link"
	"github.com/restpipe/restpipe/host/pki"
)

// idleState is one report line of the idle-clients process.
type idleState struct {
	T        int64  `json:"t"`                // when counted, Unix nanoseconds
	Issued   int    `json:"issued,omitempty"` // certificates issued so far
	Linked   int    `json:"linked"`           // clients with a live link (connections, direct mode)
	Relinked int    `json:"relinked"`         // linked clients that came up again since the last mark
	Dials    int    `json:"dials"`            // connection attempts so far
	Marked   bool   `json:"marked,omitempty"` // this line acknowledges a mark
	Failed   int    `json:"failed,omitempty"` // direct mode: connections that could not be made
	Error    string `json:"error,omitempty"`
}

// runIdle runs many idle clients of one server, as its own process.
//
// In mode restpipe it issues a certificate in memory for each of c0..cN-1
// with the CA in --pki and runs a host/link Client for each, exactly as a
// client node's link does, but with no gateway or plugins. In mode direct it
// opens N mutual-TLS connections to the baseline server, makes one request
// on each and keeps them open, idle.
//
// It prints an idleState line whenever the counts change (at most every
// 20 ms) and at least every second. A line "mark" on standard input makes
// it remember each client's link count, so that later lines count the
// clients that linked again since (Relinked). It stops when standard input
// closes.
func runIdle(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmdIdle, flag.ContinueOnError)
	fs.SetOutput(stderr)
	mode := fs.String("mode", "restpipe", "restpipe or direct")
	addr := fs.String("addr", "", "the server's `address`")
	pkiDir := fs.String("pki", "", "the bench's PKI `directory` (its CA signs the clients)")
	n := fs.Int("n", 10000, "clients")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := &idleOut{enc: json.NewEncoder(stdout)}
	var count, mark func() idleState
	var wait func()
	var err error
	switch *mode {
	case "restpipe":
		count, mark, wait, err = idleLinks(ctx, *addr, *pkiDir, *n, out)
	case "direct":
		count, wait, err = idleConns(ctx, *addr, *pkiDir, *n)
		mark = count
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		out.write(idleState{Error: err.Error()})
		return err
	}

	marks := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			if sc.Text() == "mark" {
				select {
				case marks <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
		}
		cancel() // standard input closed: the bench is done with us
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last idleState
	lastAt := time.Time{}
	for {
		select {
		case <-ctx.Done():
			wait()
			return nil
		case <-marks:
			st := mark()
			st.Marked = true
			out.write(st)
			last, lastAt = st, time.Now()
		case <-tick.C:
			st := count()
			if st.Linked != last.Linked || st.Relinked != last.Relinked || time.Since(lastAt) >= time.Second {
				out.write(st)
				last, lastAt = st, time.Now()
			}
		}
	}
}

// idleOut writes report lines, one goroutine at a time.
type idleOut struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (o *idleOut) write(st idleState) {
	if st.T == 0 {
		st.T = time.Now().UnixNano()
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.enc.Encode(st)
}

// idleLinks runs n link clients to addr. count reports them; mark
// remembers each client's links so far, then counts; wait returns once
// every client has stopped after ctx ends.
func idleLinks(ctx context.Context, addr, pkiDir string, n int, out *idleOut) (count, mark func() idleState, wait func(), err error) {
	ca, err := pki.LoadCA(pkiDir)
	if err != nil {
		return nil, nil, nil, err
	}
	clients := make([]*link.Client, n)
	// Issue on every core: ECDSA keys and signatures take a while for 10k.
	var issued atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 4 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := newIdleClient(ca, fmt.Sprintf("c%d", i), addr)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				clients[i] = c
				if k := issued.Add(1); k%1000 == 0 {
					out.write(idleState{Issued: int(k)})
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, nil, nil, firstErr
	}
	out.write(idleState{Issued: n})
	var runs sync.WaitGroup
	for _, c := range clients {
		runs.Go(func() { _ = c.Run(ctx) })
	}
	var mu sync.Mutex
	marked := make([]int, n) // each client's Ups at the last mark
	count = func() idleState {
		st := idleState{}
		mu.Lock()
		defer mu.Unlock()
		for i, c := range clients {
			s := c.Stats()
			st.Dials += s.Dials
			if c.Session() == nil {
				continue
			}
			st.Linked++
			if s.Ups > marked[i] {
				st.Relinked++
			}
		}
		return st
	}
	mark = func() idleState {
		mu.Lock()
		for i, c := range clients {
			marked[i] = c.Stats().Ups
		}
		mu.Unlock()
		return count()
	}
	return count, mark, runs.Wait, nil
}

// newIdleClient returns a link client named name, with a certificate issued
// in memory by ca, that answers every event with no_route.
func newIdleClient(ca *pki.CA, name, addr string) (*link.Client, error) {
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
		return nil, host.Errorf(host.KindNoRoute, "an idle bench client serves nothing")
	})
	cfg.Software = "restpipe-bench idle client"
	cc := link.ClientConfig{
		Config: cfg,
		Addr:   addr,
		TLS:    func() *tls.Config { return store.ClientTLS(nameServer) },
	}
	if addrs := strings.Split(addr, ","); len(addrs) > 1 {
		// The servers of a cluster (scenario k): each verified by the
		// host part of its address, as a client node does.
		cc.Addr, cc.Addrs = "", addrs
		cc.TLS = func() *tls.Config { return store.ClientTLS("") }
	}
	return link.NewClient(cc)
}

// idleConns opens n keep-alive mutual-TLS connections to the baseline
// server at addr, one request on each, and keeps them open until ctx ends.
func idleConns(ctx context.Context, addr, pkiDir string, n int) (count func() idleState, wait func(), err error) {
	p := &benchPKI{dir: pkiDir}
	certFile, keyFile := p.files(nameLoad)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, err
	}
	pool, err := loadPool(p.ca())
	if err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool,
		ServerName: nameDirect, NextProtos: []string{"http/1.1"}}
	var mu sync.Mutex
	var conns []net.Conn
	var failed, dials int
	var firstErr string
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 32 {
		wg.Go(func() {
			for ctx.Err() == nil && next.Add(1) <= int64(n) {
				c, err := idleConn(ctx, addr, cfg)
				mu.Lock()
				dials++
				if err != nil {
					failed++
					if firstErr == "" {
						firstErr = err.Error()
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		})
	}
	count = func() idleState {
		mu.Lock()
		defer mu.Unlock()
		return idleState{Linked: len(conns), Dials: dials, Failed: failed, Error: firstErr}
	}
	wait = func() {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
	return count, wait, nil
}

// idleConn opens one connection and makes one GET /time on it.
func idleConn(ctx context.Context, addr string, cfg *tls.Config) (net.Conn, error) {
	d := tls.Dialer{Config: cfg}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "GET /time HTTP/1.1\r\nHost: "+nameDirect+"\r\n\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
