package main

// Fault-injection scenarios: each breaks something for real (a killed
// server, a silent or slow link, a slow reader, crashing plugins, reconnect
// churn, a flood of local connections) and asserts the invariant on every
// caller: it got its own correct reply, or a clear error of a kind of the
// table with that kind's status and return code, within its deadline.
// Nothing hangs (every request has a client-side timeout comfortably above
// its X-Event-Timeout, and hitting it fails the test), and no reply reaches
// the wrong caller (each event carries a unique argument its reply must
// echo). docs/reliability.md reports the figures they print.
//
// RESTPIPE_SOAK=1 runs the long variants (more rounds, iterations, bytes
// and time): RESTPIPE_SOAK=1 go test -run TestFault -timeout 60m -v ./cmd/restpipe

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/plugins"
)

// soak reports whether the long variants run (RESTPIPE_SOAK=1).
func soak() bool { return os.Getenv("RESTPIPE_SOAK") == "1" }

// soakOr returns normal, or long under RESTPIPE_SOAK=1.
func soakOr[T any](normal, long T) T {
	if soak() {
		return long
	}
	return normal
}

// Outcome classes, besides the error kinds of the table.
const (
	classOK = "ok"
	// The node's gateway was not listening, or the connection to it broke
	// mid-request: only acceptable where that node was killed. A reply
	// aborted mid-body also lands here (never a short success).
	classRefused = "conn_refused"
	classBroken  = "conn_broken"
	// Never acceptable: a hang, a misdelivery, an unclear error.
	classHang       = "HANG"        // no answer within the client-side timeout
	classWrongReply = "WRONG_REPLY" // a success that is not this caller's reply
	classBadError   = "BAD_ERROR"   // a failure without a consistent kind, status, code and body
)

// outcome is what one caller got for one event.
type outcome struct {
	flow       string // the stream of callers it belongs to, e.g. "c1->server"
	start, end time.Time
	class      string // classOK, an error kind, or another class above
	detail     string // the error message, or what was wrong
}

func (o outcome) took() time.Duration { return o.end.Sub(o.start) }

func (o outcome) String() string {
	return fmt.Sprintf("%s: %s after %v (%s)", o.flow, o.class, o.took().Round(time.Millisecond), o.detail)
}

// silent reports an outcome that no scenario accepts.
func (o outcome) silent() bool {
	return o.class == classHang || o.class == classWrongReply || o.class == classBadError
}

// caller sends events to nodes' gateways as a local program would. Every
// request carries X-Event-Timeout: timeout; the caller itself gives up
// margin later, which is a hang.
type caller struct {
	hc      *http.Client
	timeout time.Duration
	margin  time.Duration
}

// newCaller returns a caller; keepAlive false opens a connection per
// request (for the tests that count connections and goroutines).
func newCaller(t testing.TB, timeout time.Duration, keepAlive bool) *caller {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableKeepAlives: !keepAlive}
	t.Cleanup(tr.CloseIdleConnections)
	return &caller{hc: &http.Client{Transport: tr}, timeout: timeout, margin: 10 * time.Second}
}

// check validates a handler's reply body: nil when it is this caller's.
type check func(body []byte) error

// send sends one event and classifies what came back. A body of known
// length (bytes.Reader) is sent with Content-Length.
func (c *caller) send(flow, method, url string, body io.Reader, ok check) (o outcome) {
	o = outcome{flow: flow, start: time.Now()}
	defer func() { o.end = time.Now() }()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout+c.margin)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		o.class, o.detail = classBadError, err.Error()
		return o
	}
	req.Header.Set("X-Event-Timeout", c.timeout.String())
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		o.class, o.detail = transportClass(ctx, err)
		return o
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		o.class, o.detail = transportClass(ctx, err)
		o.detail = fmt.Sprintf("status %d, then the body broke after %d bytes: %s", resp.StatusCode, len(b), o.detail)
		return o
	}
	o.class, o.detail = classify(resp, b, ok)
	return o
}

// echo sends GET <base>/echo//<unique argument><query> and checks the
// reply is this caller's, answered by node.
func (c *caller) echo(flow, base, node, query string) outcome {
	u := uniqueArg()
	return c.send(flow, "GET", base+"/echo//"+u+query, nil, echoed(u, node))
}

var argSeq atomic.Int64

// uniqueArg returns an argument no other event of this test run carries.
func uniqueArg() string { return fmt.Sprintf("e%d-%08x", argSeq.Add(1), rand.Uint32()) }

// transportClass classifies a failure to get a (whole) reply.
func transportClass(ctx context.Context, err error) (string, string) {
	switch {
	case ctx.Err() != nil:
		return classHang, err.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return classRefused, err.Error()
	default:
		return classBroken, err.Error()
	}
}

// classify checks a whole reply: a consistent error of the table, or a
// handler's reply that ok accepts.
func classify(resp *http.Response, body []byte, ok check) (string, string) {
	code := resp.Header.Get("X-Event-Return-Code")
	if k := resp.Header.Get("X-Event-Error-Kind"); k != "" {
		kind := host.Kind(k)
		var eb struct {
			Error struct {
				Kind    string `json:"kind"`
				Message string `json:"message"`
			} `json:"error"`
		}
		err := json.Unmarshal(body, &eb)
		switch {
		case !kind.Known() || kind == host.KindCanceled:
			return classBadError, fmt.Sprintf("kind %q is not one of the table's (status %d, code %q, body %.300q)", k, resp.StatusCode, code, body)
		case resp.StatusCode != kind.Status() || code != strconv.Itoa(kind.ReturnCode()):
			return classBadError, fmt.Sprintf("kind %s with status %d and code %q, want %d and %d", k, resp.StatusCode, code, kind.Status(), kind.ReturnCode())
		case err != nil || eb.Error.Kind != k || eb.Error.Message == "":
			return classBadError, fmt.Sprintf("kind %s with body %.300q", k, body)
		}
		return k, eb.Error.Message
	}
	if resp.StatusCode != http.StatusOK || code != "0" {
		return classBadError, fmt.Sprintf("status %d, code %q, no error kind: %.300q", resp.StatusCode, code, body)
	}
	if err := ok(body); err != nil {
		return classWrongReply, err.Error()
	}
	return classOK, fmt.Sprintf("%d bytes", len(body))
}

// echoed accepts the echo plugin's description of the GET event that
// carried the argument uniq, answered by the node named node.
func echoed(uniq, node string) check {
	return func(b []byte) error {
		var v struct {
			Verb string   `json:"verb"`
			Args []string `json:"args"`
			Node struct {
				Name string `json:"name"`
			} `json:"node"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("echo reply %.200q: %v", b, err)
		}
		if v.Verb != "get" || len(v.Args) != 1 || v.Args[0] != uniq || v.Node.Name != node {
			return fmt.Errorf("reply for verb %q args %q from node %q reached the caller of %q on %q", v.Verb, v.Args, v.Node.Name, uniq, node)
		}
		return nil
	}
}

// hasKey accepts a JSON object with key.
func hasKey(key string) check {
	return func(b []byte) error {
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("reply %.200q: %v", b, err)
		}
		if _, ok := v[key]; !ok {
			return fmt.Errorf("reply %.200q has no %q", b, key)
		}
		return nil
	}
}

// sameBytes accepts exactly want.
func sameBytes(want []byte) check {
	sum := sha256.Sum256(want)
	return func(b []byte) error {
		if len(b) != len(want) || sha256.Sum256(b) != sum {
			return fmt.Errorf("echoed %d bytes that differ from the %d sent", len(b), len(want))
		}
		return nil
	}
}

// neverOK refuses any handler reply: for routes that cannot answer.
func neverOK(b []byte) error { return fmt.Errorf("unexpected reply %.200q", b) }

// pattern returns n bytes repeating a block of 4093 bytes (a prime, no
// multiple of any chunk size), so a lost, repeated or reordered chunk
// changes them.
func pattern(n int) []byte {
	block := make([]byte, 4093)
	for i := range block {
		block[i] = byte(i*7 + i>>8)
	}
	return bytes.Repeat(block, n/len(block)+1)[:n]
}

// tally collects outcomes from many goroutines.
type tally struct {
	mu   sync.Mutex
	list []outcome
}

func (ta *tally) add(o outcome) {
	ta.mu.Lock()
	ta.list = append(ta.list, o)
	ta.mu.Unlock()
}

func (ta *tally) all() []outcome {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return slices.Clone(ta.list)
}

// count counts the outcomes f accepts.
func (ta *tally) count(f func(outcome) bool) int {
	n := 0
	for _, o := range ta.all() {
		if f(o) {
			n++
		}
	}
	return n
}

// summary counts outcomes by flow and class, sorted.
func summary(outs []outcome) string {
	counts := map[string]map[string]int{}
	for _, o := range outs {
		if counts[o.flow] == nil {
			counts[o.flow] = map[string]int{}
		}
		counts[o.flow][o.class]++
	}
	var parts []string
	for _, flow := range slices.Sorted(maps.Keys(counts)) {
		var cs []string
		for _, class := range slices.Sorted(maps.Keys(counts[flow])) {
			cs = append(cs, fmt.Sprintf("%s=%d", class, counts[flow][class]))
		}
		parts = append(parts, flow+" "+strings.Join(cs, " "))
	}
	return strings.Join(parts, "; ")
}

// noSilentLoss fails the test for every outcome no scenario accepts, and
// logs the totals.
func noSilentLoss(t testing.TB, outs []outcome) {
	t.Helper()
	lost := 0
	for _, o := range outs {
		if o.silent() {
			lost++
			t.Errorf("not acceptable: %v", o)
		}
	}
	t.Logf("events: %d sent, %d answered with the right reply or a clear error, %d lost silently (hung, misdelivered or answered unclearly)", len(outs), len(outs)-lost, lost)
}

// allow fails the test for an outcome whose class is not in classes.
func allow(t testing.TB, o outcome, why string, classes ...string) {
	t.Helper()
	if !slices.Contains(classes, o.class) {
		t.Errorf("%v; %s allows only %v", o, why, classes)
	}
}

// latencies returns the durations of the outcomes.
func latencies(outs []outcome) []time.Duration {
	ds := make([]time.Duration, len(outs))
	for i, o := range outs {
		ds[i] = o.took()
	}
	return ds
}

// percentile returns the p-th (0..1) percentile of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

// startProxiedCluster starts a server node and client c1 whose link runs
// through a fault proxy.
func startProxiedCluster(t testing.TB, opts clusterOpts) (*cluster, *faultProxy) {
	t.Helper()
	c := startCluster(t, opts)
	fp := newFaultProxy(t, c.server.linkAddr())
	c.clients["c1"] = c.startNode(host.RoleClient, "c1", fp.addr, opts)
	c.waitLinked("c1")
	return c, fp
}

// pluginDir returns a new plugins directory holding the named test plugins.
func pluginDir(t testing.TB, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		installPlugin(t, pluginBin(n), filepath.Join(dir, n))
	}
	return dir
}

// pluginStatus returns the status of plugin file on the node at httpAddr.
func pluginStatus(t testing.TB, httpAddr, file string) plugins.Status {
	t.Helper()
	for _, p := range getStatus(t, httpAddr).Plugins {
		if p.File == file {
			return p
		}
	}
	t.Fatalf("no plugin %q in the /status of %s", file, httpAddr)
	return plugins.Status{}
}

// procBytes reads a size field of /proc/<pid>/status (VmRSS, VmHWM), in
// bytes.
func procBytes(pid int, field string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// ownFDs counts this process's open file descriptors, less the event
// connections the cluster's nodes keep to their plugins: idle ones stay
// open for later events (at most eventpath.DefaultMaxIdle per plugin), by
// design, and are not a leak.
func (c *cluster) ownFDs(t testing.TB) int {
	n := openFDs(t)
	for _, tn := range append([]*testNode{c.server}, slices.Collect(maps.Values(c.clients))...) {
		if tn.node == nil || tn.node.plugins == nil {
			continue
		}
		for _, p := range tn.node.plugins.Status() {
			n -= p.Connections
		}
	}
	return n
}

// openFDs counts this process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(entries)
}

// settled returns f's value once it has not changed for 500ms (or after
// 10s): a baseline taken when background work has wound down.
func settled(f func() int) int {
	deadline := time.Now().Add(10 * time.Second)
	v, since := f(), time.Now()
	for time.Now().Before(deadline) && time.Since(since) < 500*time.Millisecond {
		time.Sleep(50 * time.Millisecond)
		if n := f(); n != v {
			v, since = n, time.Now()
		}
	}
	return v
}

// goroutines counts this process's goroutines, leaving out toxiproxy's:
// toxiproxy leaks some when a connection through it ends with data in its
// pipeline (its reader blocks on a channel nobody drains any more; about
// two per resetMidStream), and what these tests measure is restpipe. The
// count of toxiproxy's is returned too, for the log.
func goroutines() (own, proxy int) {
	for _, g := range strings.Split(allStacks(), "\n\n") {
		switch {
		case strings.TrimSpace(g) == "":
		case strings.Contains(g, "github.com/Shopify/toxiproxy"):
			proxy++
		default:
			own++
		}
	}
	return own, proxy
}

func ownGoroutines() int { own, _ := goroutines(); return own }

// allStacks returns the stacks of every goroutine.
func allStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// waitBack waits until f is back within slack of base, and fails the test
// (with the stacks of restpipe's goroutines) if it is not within 15s. It
// returns f's value.
func waitBack(t testing.TB, what string, base, slack int, f func() int) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		n := f()
		if n <= base+slack {
			return n
		}
		if time.Now().After(deadline) {
			var own []string
			for _, g := range strings.Split(allStacks(), "\n\n") {
				if !strings.Contains(g, "github.com/Shopify/toxiproxy") {
					own = append(own, g)
				}
			}
			t.Errorf("%s = %d 15s after the fault, want at most %d (baseline %d + %d); goroutines:\n%s", what, n, base+slack, base, slack, strings.Join(own, "\n\n"))
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// maps2string formats a map of sizes in MiB, sorted by name.
func maps2string(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %.1f MiB", k, float64(m[k])/(1<<20)))
	}
	return strings.Join(parts, ", ")
}

// untilStopped runs step again and again in a goroutine of wg until stop
// is closed: the load workers of the fault tests.
func untilStopped(wg *sync.WaitGroup, stop <-chan struct{}, step func()) {
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			step()
		}
	})
}
