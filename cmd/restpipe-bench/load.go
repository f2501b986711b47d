package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// loadResult is what the load generator reports, as JSON on its standard
// output.
type loadResult struct {
	Requests     int64   `json:"requests"` // completed in the measured window
	Errors       int64   `json:"errors"`   // failed (transport error, status not 200, short body)
	FirstError   string  `json:"first_error,omitempty"`
	P50us        float64 `json:"p50_us"`         // median latency, microseconds
	P99us        float64 `json:"p99_us"`         // 99th percentile
	EventsPerSec float64 `json:"events_per_sec"` // completed requests per second
	Bytes        int64   `json:"bytes"`          // echo: body bytes echoed back
	BytesPerSec  float64 `json:"bytes_per_sec"`  // echo: body bytes per second, one way
	Seconds      float64 `json:"seconds"`        // the measured window
}

// loadSpec says what the load generator drives.
type loadSpec struct {
	url         string // the whole URL: https://.../time, http://gateway/server/time, ...
	ca          string // for https: the CA, client certificate and key, and
	cert, key   string // the name to verify in the server's certificate
	serverName  string
	mode        string // "small" or "echo"
	concurrency int
	duration    time.Duration
	warmup      time.Duration
	size        int64 // echo: the body size
}

// args returns the load subcommand's arguments for s.
func (s loadSpec) args() []string {
	a := []string{cmdLoad, "--url", s.url, "--mode", s.mode,
		"--concurrency", fmt.Sprint(s.concurrency), "--duration", s.duration.String(),
		"--warmup", s.warmup.String(), "--size", fmt.Sprint(s.size)}
	if s.ca != "" {
		a = append(a, "--ca", s.ca, "--cert", s.cert, "--key", s.key, "--server-name", s.serverName)
	}
	return a
}

// runLoad is the load generator, run as its own process. In mode small it
// runs --concurrency workers, each with its own keep-alive HTTP/1.1
// connection (see rawClient), sending GET requests back to back for
// --warmup and then --duration, and reports latency percentiles and
// throughput of the measured part. In mode echo it POSTs one body of --size bytes (after a
// 1 MiB warm-up echo on the same connection) and reads the echo while it
// sends, checking every byte, and reports bytes per second.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmdLoad, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var s loadSpec
	fs.StringVar(&s.url, "url", "", "`URL` to request")
	fs.StringVar(&s.ca, "ca", "", "https: CA `file`")
	fs.StringVar(&s.cert, "cert", "", "https: client certificate `file`")
	fs.StringVar(&s.key, "key", "", "https: client key `file`")
	fs.StringVar(&s.serverName, "server-name", "", "https: `name` to verify in the server's certificate")
	fs.StringVar(&s.mode, "mode", "small", "small or echo")
	fs.IntVar(&s.concurrency, "concurrency", 1, "workers, each with its own connection")
	fs.DurationVar(&s.duration, "duration", 5*time.Second, "measured time")
	fs.DurationVar(&s.warmup, "warmup", time.Second, "unmeasured time first")
	fs.Int64Var(&s.size, "size", 256<<20, "echo: body `bytes`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var tlsCfg *tls.Config
	if strings.HasPrefix(s.url, "https:") {
		cert, err := tls.LoadX509KeyPair(s.cert, s.key)
		if err != nil {
			return fmt.Errorf("load the client certificate: %w", err)
		}
		pool, err := loadPool(s.ca)
		if err != nil {
			return err
		}
		tlsCfg = &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cert},
			RootCAs:      pool,
			ServerName:   s.serverName,
			NextProtos:   []string{"http/1.1"},
		}
	}
	var res loadResult
	var err error
	switch s.mode {
	case "small":
		res, err = loadSmall(ctx, s, tlsCfg)
	case "echo":
		res, err = loadEcho(ctx, s, tlsCfg)
	default:
		err = fmt.Errorf("unknown mode %q", s.mode)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}

// newClient returns an HTTP/1.1 client with one keep-alive connection.
func newClient(tlsCfg *tls.Config, bufSize int) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:     tlsCfg,
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		// HTTP/1.1 only.
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{},
		ReadBufferSize:  bufSize,
		WriteBufferSize: bufSize,
	}
	return &http.Client{Transport: tr}
}

// loadSmall runs the small-event load.
func loadSmall(ctx context.Context, s loadSpec, tlsCfg *tls.Config) (loadResult, error) {
	u, err := url.Parse(s.url)
	if err != nil {
		return loadResult{}, err
	}
	start := time.Now()
	measureFrom := start.Add(s.warmup)
	stopAt := measureFrom.Add(s.duration)
	type worker struct {
		lat      []time.Duration
		errs     int64
		firstErr string
		last     time.Time
	}
	workers := make([]worker, s.concurrency)
	var wg sync.WaitGroup
	for i := range workers {
		w := &workers[i]
		w.lat = make([]time.Duration, 0, 1<<16)
		wg.Go(func() {
			c := &rawClient{url: u, tls: tlsCfg}
			defer c.close()
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(stopAt) {
					return
				}
				err := c.get(ctx)
				t1 := time.Now()
				if err != nil {
					if t0.After(measureFrom) {
						w.errs++
						if w.firstErr == "" {
							w.firstErr = err.Error()
						}
					}
					// Do not spin on a refusing server.
					time.Sleep(time.Millisecond)
					continue
				}
				if !t0.Before(measureFrom) {
					w.lat = append(w.lat, t1.Sub(t0))
					w.last = t1
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return loadResult{}, err
	}
	var res loadResult
	var all []time.Duration
	end := measureFrom
	for _, w := range workers {
		all = append(all, w.lat...)
		res.Errors += w.errs
		if res.FirstError == "" {
			res.FirstError = w.firstErr
		}
		if w.last.After(end) {
			end = w.last
		}
	}
	res.Requests = int64(len(all))
	res.Seconds = end.Sub(measureFrom).Seconds()
	if len(all) == 0 {
		return res, nil
	}
	slices.Sort(all)
	res.P50us = percentile(all, 0.50)
	res.P99us = percentile(all, 0.99)
	res.EventsPerSec = float64(len(all)) / res.Seconds
	return res, nil
}

// percentile returns the p-quantile of sorted durations, in microseconds.
func percentile(sorted []time.Duration, p float64) float64 {
	i := int(float64(len(sorted)-1) * p)
	return float64(sorted[i]) / float64(time.Microsecond)
}

// rawClient makes GET requests on one keep-alive HTTP/1.1 connection
// (over mTLS when tls is set), from the calling goroutine alone: it writes
// the request and parses the reply itself, so that the load generator adds
// no goroutine hand-offs (net/http's Transport adds two per request) to
// what it measures. It redials after an error.
type rawClient struct {
	url  *url.URL
	tls  *tls.Config
	conn net.Conn
	br   *bufio.Reader
	req  []byte
}

// get makes one request and reads the whole reply, which must be a 200
// with a body.
func (c *rawClient) get(ctx context.Context) error {
	if c.conn == nil {
		if err := c.dial(ctx); err != nil {
			return err
		}
	}
	err := c.roundTrip()
	if err != nil {
		c.close()
	}
	return err
}

func (c *rawClient) dial(ctx context.Context) error {
	var d net.Dialer
	host := c.url.Host
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return err
	}
	if c.tls != nil {
		tc := tls.Client(conn, c.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return err
		}
		conn = tc
	}
	c.conn, c.br = conn, bufio.NewReaderSize(conn, 16<<10)
	c.req = fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: restpipe-bench\r\n\r\n", c.url.RequestURI(), host)
	return nil
}

func (c *rawClient) roundTrip() error {
	if _, err := c.conn.Write(c.req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n == 0 {
		return fmt.Errorf("status %d, %d body bytes", resp.StatusCode, n)
	}
	if resp.Close {
		c.close()
	}
	return nil
}

func (c *rawClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// loadEcho runs one large echo, after a small one on the same connection.
func loadEcho(ctx context.Context, s loadSpec, tlsCfg *tls.Config) (loadResult, error) {
	c := newClient(tlsCfg, 64<<10)
	defer c.CloseIdleConnections()
	if _, err := echoOnce(ctx, c, s.url, 1<<20); err != nil {
		return loadResult{Errors: 1, FirstError: "warm-up: " + err.Error()}, nil
	}
	t0 := time.Now()
	n, err := echoOnce(ctx, c, s.url, s.size)
	el := time.Since(t0)
	res := loadResult{Bytes: n, Seconds: el.Seconds()}
	if err != nil {
		res.Errors, res.FirstError = 1, err.Error()
		return res, nil
	}
	res.Requests = 1
	res.BytesPerSec = float64(n) / el.Seconds()
	res.P50us = float64(el.Microseconds())
	res.P99us = res.P50us
	return res, nil
}

// pattern is the content of echoed bodies, repeated.
var pattern = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = byte(i*131 + i>>8)
	}
	return b
}()

// patternReader yields size bytes of pattern.
type patternReader struct{ off, size int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.off < r.size {
		i := int(r.off % int64(len(pattern)))
		k := copy(p[n:], pattern[i:min(len(pattern), i+int(r.size-r.off))])
		n += k
		r.off += int64(k)
	}
	return n, nil
}

// errMismatch is a body that did not come back as sent.
var errMismatch = errors.New("the echoed body differs from the one sent")

// patternChecker checks that what it is given is pattern, from offset 0.
type patternChecker struct{ off int64 }

func (w *patternChecker) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		i := int(w.off % int64(len(pattern)))
		k := min(len(p)-n, len(pattern)-i)
		if !bytes.Equal(p[n:n+k], pattern[i:i+k]) {
			return n, fmt.Errorf("%w at byte %d", errMismatch, w.off)
		}
		n += k
		w.off += int64(k)
	}
	return n, nil
}

// echoOnce POSTs size bytes to url and checks that the same come back.
func echoOnce(ctx context.Context, c *http.Client, url string, size int64) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url, &patternReader{size: size})
	if err != nil {
		return 0, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	// restpipe's default deadline is 30 s; a slow path must not hit it.
	req.Header.Set("X-Event-Timeout", "30m")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	chk := &patternChecker{}
	n, err := io.CopyBuffer(chk, resp.Body, make([]byte, 64<<10))
	if err != nil {
		return n, err
	}
	if n != size {
		return n, fmt.Errorf("echoed %d of %d bytes", n, size)
	}
	return n, nil
}
