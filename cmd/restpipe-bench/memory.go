package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// idleProc is the bench's side of an idle-clients process.
type idleProc struct {
	c    *child
	mu   sync.Mutex
	cond *sync.Cond
	last idleState
	all  []idleState
	done bool
}

// startIdleProc starts the idle-clients process.
func (r *runner) startIdleProc(mode, addr string, n int) (*idleProc, error) {
	c, err := r.procs.start("idle clients ("+mode+")", r.bins.self,
		[]string{cmdIdle, "--mode", mode, "--addr", addr, "--pki", r.pki.dir, "--n", strconv.Itoa(n)},
		startOpts{stdoutPipe: true, stdinPipe: true})
	if err != nil {
		return nil, err
	}
	p := &idleProc{c: c}
	p.cond = sync.NewCond(&p.mu)
	go func() {
		sc := bufio.NewScanner(c.stdout)
		for sc.Scan() {
			var st idleState
			if json.Unmarshal(sc.Bytes(), &st) != nil {
				continue
			}
			p.mu.Lock()
			p.last = st
			p.all = append(p.all, st)
			p.cond.Broadcast()
			p.mu.Unlock()
		}
		p.mu.Lock()
		p.done = true
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	return p, nil
}

// waitFor waits for a report line satisfying ok and returns it; on timeout
// it returns the last line and an error.
func (p *idleProc) waitFor(ctx context.Context, within time.Duration, ok func(idleState) bool) (idleState, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	// The last line already read counts too: it may be the one awaited.
	for i := max(0, len(p.all)-1); ; {
		for ; i < len(p.all); i++ {
			if st := p.all[i]; st.Error != "" && st.Linked == 0 {
				return st, errors.New(st.Error)
			} else if ok(st) {
				return st, nil
			}
		}
		if p.done {
			return p.last, fmt.Errorf("the idle-clients process ended\n%s", p.c.tail(10))
		}
		if ctx.Err() != nil {
			return p.last, fmt.Errorf("not within %v", within)
		}
		p.cond.Wait()
	}
}

// since returns the report lines counted at or after t.
func (p *idleProc) since(t time.Time) []idleState {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []idleState
	for _, st := range p.all {
		if st.T >= t.UnixNano() {
			out = append(out, st)
		}
	}
	return out
}

// mark asks the process to remember each client's links, and waits for the
// acknowledgement.
func (p *idleProc) mark(ctx context.Context) error {
	if _, err := io.WriteString(p.c.stdin, "mark\n"); err != nil {
		return err
	}
	_, err := p.waitFor(ctx, 30*time.Second, func(st idleState) bool { return st.Marked })
	return err
}

// runMemoryAndStorm runs scenarios f and g.
//
// f: a fresh server node's RSS before any client, then N idle clients
// linked (one process running host/link clients), a settling pause, its RSS
// again: (after - before) / N. The baseline is the same for the direct mTLS
// server holding N idle keep-alive connections.
//
// g: with the N clients linked, SIGKILL the server and start it again on
// the same address; the time from the kill until every client has linked
// again, and how many have not within four times the goal.
func (r *runner) runMemoryAndStorm(ctx context.Context) error {
	n := r.o.clients
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		// Each side holds a descriptor per client, plus its own few dozen.
		if avail := int(lim.Max) - 256; n > avail {
			r.res.note("f/g. the open-files limit is %d: %d clients instead of %d", lim.Max, avail, n)
			n = avail
		}
	}
	r.res.clients = n
	fmt.Fprintf(r.log, "f. %d idle clients of the restpipe server...\n", n)
	srv, err := r.startServer(ctx, "server node (idle clients)", "127.0.0.1:0")
	if err != nil {
		return err
	}
	perClient, storm, err := r.idleRestpipe(ctx, srv, n)
	if err != nil {
		return err
	}
	if perClient > 0 {
		r.res.add("f.kib", tRestpipe, 1, perClient)
	}
	if storm != nil {
		r.res.storm = storm
	}
	r.procs.killAll()

	if r.o.want("f") {
		fmt.Fprintf(r.log, "f. %d idle keep-alive connections to the direct server...\n", n)
		d, addr, err := r.startDirect(ctx, "direct server (idle clients)", false)
		if err != nil {
			return err
		}
		time.Sleep(time.Second)
		before, _, err := procMem(d.pid())
		if err != nil {
			return err
		}
		ip, err := r.startIdleProc("direct", addr, n)
		if err != nil {
			return err
		}
		st, err := ip.waitFor(ctx, 5*time.Minute, func(st idleState) bool { return st.Linked+st.Failed >= n })
		if err != nil || st.Failed > 0 {
			r.res.note("f. direct: %d of %d connections made (%v %s)", st.Linked, n, err, st.Error)
		}
		if st.Linked > 0 {
			after := settledRSS(ctx, d.pid())
			r.res.add("f.kib", tDirect, 1, float64(after-before)/float64(st.Linked)/1024)
		}
		r.procs.killAll()
	}
	return nil
}

// stormResult is what scenario g measured.
type stormResult struct {
	clients     int
	back        int           // clients linked again by the end of the wait
	wait        time.Duration // how long the bench waited for them, from the kill
	atGoal      int           // clients linked again goalReconnect after the kill
	half, most  time.Duration // from the kill until 50% and 90% were back (0: never)
	all         time.Duration // from the kill until every client was back (0: not all)
	fromRestart time.Duration // from the new server process's start until every client was back
	serverCPU   time.Duration // CPU time the new server used until then
	idleCPU     time.Duration // CPU time the idle-clients process used meanwhile
}

// idleRestpipe runs f (memory per idle link) and, if asked, g on srv.
func (r *runner) idleRestpipe(ctx context.Context, srv *node, n int) (perClientKiB float64, storm *stormResult, err error) {
	time.Sleep(time.Second)
	before, _, err := procMem(srv.pid())
	if err != nil {
		return 0, nil, err
	}
	ip, err := r.startIdleProc("restpipe", srv.link, n)
	if err != nil {
		return 0, nil, err
	}
	if _, err := ip.waitFor(ctx, 5*time.Minute, func(st idleState) bool { return st.Issued == n }); err != nil {
		return 0, nil, fmt.Errorf("f. issue %d client certificates: %w", n, err)
	}
	t0 := time.Now()
	srvCPU0, idleCPU0 := procCPU(srv.pid()), procCPU(ip.c.pid())
	st, err := ip.waitFor(ctx, 5*time.Minute, func(st idleState) bool { return st.Linked == n })
	if err != nil {
		r.res.note("f. only %d of %d clients linked within 5 minutes", st.Linked, n)
		return 0, nil, nil
	}
	r.res.note("f. %d clients linked from a cold start in %.1fs (%d connection attempts; CPU used meanwhile: server %.1fs, the idle-clients process %.1fs)",
		n, time.Since(t0).Seconds(), st.Dials, (procCPU(srv.pid()) - srvCPU0).Seconds(), (procCPU(ip.c.pid()) - idleCPU0).Seconds())
	after := settledRSS(ctx, srv.pid())
	perClientKiB = float64(after-before) / float64(n) / 1024
	// Confirm with the server's own count, after the RSS was read.
	scrapeStart := time.Now()
	if links, err := scrapeLinks(ctx, srv.http); err != nil {
		r.res.note("f. confirming restpipe_links from the server's /metrics failed after %.1fs: %v", time.Since(scrapeStart).Seconds(), err)
	} else if links != n {
		r.res.note("f. the server's /metrics showed restpipe_links %d, not %d", links, n)
	} else {
		r.res.note("f. the server's /metrics confirmed restpipe_links %d (the scrape took %.1fs)", links, time.Since(scrapeStart).Seconds())
	}
	r.res.note("f. server RSS %.0f MiB before the clients, %.0f MiB with %d linked", mib(before), mib(after), n)
	if rss, _, err := procMem(ip.c.pid()); err == nil {
		r.res.note("f. the idle-clients process (the %d client ends of the links) holds %.0f MiB, %.1f KiB per client",
			n, mib(rss), float64(rss)/float64(n)/1024)
	}
	if !r.o.want("g") {
		return perClientKiB, nil, nil
	}

	fmt.Fprintf(r.log, "g. reconnect storm: SIGKILL the server, restart it on %s...\n", srv.link)
	if err := ip.mark(ctx); err != nil {
		return perClientKiB, nil, fmt.Errorf("g. mark: %w", err)
	}
	idleCPU0 = procCPU(ip.c.pid())
	killed := time.Now()
	r.procs.forget(srv.child) // SIGKILL, and wait for it
	srv2, err := r.startServer(ctx, "server node (restarted)", srv.link)
	if err != nil {
		return perClientKiB, nil, fmt.Errorf("g. restart the server on %s: %w", srv.link, err)
	}
	restarted := srv2.started
	limit := 8 * goalReconnect
	last, err := ip.waitFor(ctx, limit, func(st idleState) bool { return st.Relinked == n })
	storm = &stormResult{clients: n, back: last.Relinked, wait: limit,
		serverCPU: procCPU(srv2.pid()), idleCPU: procCPU(ip.c.pid()) - idleCPU0}
	for _, st := range ip.since(killed) {
		at := time.Unix(0, st.T)
		if at.Sub(killed) <= goalReconnect {
			storm.atGoal = max(storm.atGoal, st.Relinked)
		}
		if storm.half == 0 && 2*st.Relinked >= n {
			storm.half = at.Sub(killed)
		}
		if storm.most == 0 && 10*st.Relinked >= 9*n {
			storm.most = at.Sub(killed)
		}
	}
	if err == nil {
		at := time.Unix(0, last.T)
		storm.all, storm.fromRestart = at.Sub(killed), at.Sub(restarted)
	} else {
		r.res.note("g. %d of %d clients were back %v after the kill, when the bench stopped waiting", last.Relinked, n, limit)
	}
	return perClientKiB, storm, nil
}

// goalReconnect is scenario g's goal.
const goalReconnect = 15 * time.Second

// settledRSS waits for a process's RSS to settle and returns it. The
// links' heartbeats go on, and the Go runtime returns memory freed after
// the connection storm only gradually, so it samples every half second
// until the last 4 seconds of samples lie within 2% of each other (at most
// 40 s), and returns the smallest of those.
func settledRSS(ctx context.Context, pid int) int64 {
	const window = 8
	var samples []int64
	for i := 0; i < 80; i++ {
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(500 * time.Millisecond):
		}
		v, _, err := procMem(pid)
		if err != nil {
			break
		}
		samples = append(samples, v)
		if len(samples) >= window {
			last := samples[len(samples)-window:]
			if lo, hi := slices.Min(last), slices.Max(last); float64(hi-lo) <= 0.02*float64(hi) {
				return lo
			}
		}
	}
	if len(samples) == 0 {
		return 0
	}
	return slices.Min(samples[max(0, len(samples)-window):])
}

// scrapeLinks reads restpipe_links from a node's /metrics.
func scrapeLinks(ctx context.Context, httpAddr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "restpipe_links")
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("parse %q: %w", line, err)
		}
		return int(v), nil
	}
	return 0, errors.New("no restpipe_links in /metrics")
}

// procCPU returns the CPU time (user and system) a process has used, or 0.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name, in parentheses: state is the 3rd
	// field of the line, utime and stime the 14th and 15th.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	// The kernel counts in USER_HZ ticks, 100 per second on Linux.
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// mib converts bytes to MiB.
func mib(b int64) float64 { return float64(b) / (1 << 20) }
