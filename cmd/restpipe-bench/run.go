package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// runner holds what one run of the bench shares: options, processes,
// binaries, PKI, and the figures measured so far.
type runner struct {
	o     *options
	log   io.Writer // progress, on standard error
	work  string    // the run's temporary directory
	procs *procSet
	bins  *binaries
	pki   *benchPKI
	res   *results
}

// Targets of scenarios a-e: what the load generator drives.
const (
	tDirect   = "direct"   // the baseline, direct mTLS HTTP/1.1
	tRestpipe = "restpipe" // the client node's gateway, through the link and a plugin
	tSSH      = "ssh"      // ssh -R to a plain HTTP origin
)

// endpoint is where a target answers small events and echoes.
type endpoint struct {
	small, echo string // URLs
	https       bool   // the load generator authenticates with mTLS
}

// runBench runs the scenarios asked for and prints the table.
func runBench(ctx context.Context, o *options, stdout, stderr io.Writer) (err error) {
	work, err := os.MkdirTemp("", "restpipe-bench-")
	if err != nil {
		return err
	}
	r := &runner{o: o, log: stderr, work: work, procs: &procSet{tmp: filepath.Join(work, "tmp")}, res: newResults()}
	defer func() {
		r.procs.killAll()
		os.RemoveAll(work)
	}()
	if err := os.Mkdir(r.procs.tmp, 0o700); err != nil {
		return err
	}
	r.res.machine = describeMachine()
	fmt.Fprintf(stderr, "restpipe-bench: %s\n", r.res.machine.oneLine())

	if r.bins, err = prepareBinaries(ctx, o, work, stderr); err != nil {
		return err
	}
	r.res.source = r.bins.source
	if r.pki, err = makePKI(ctx, r.bins.restpipe, filepath.Join(work, "pki")); err != nil {
		return err
	}
	started := time.Now()
	if err := r.runTraffic(ctx); err != nil {
		return err
	}
	r.procs.killAll() // f and g want a quiet machine
	if o.want("f") || o.want("g") {
		if err := r.runMemoryAndStorm(ctx); err != nil {
			return err
		}
	}
	if o.want("h") {
		if err := r.runPluginStart(ctx); err != nil {
			return err
		}
	}
	if o.want("i") {
		if err := r.runPluginHop(ctx); err != nil {
			return err
		}
	}
	if o.want("j") {
		if err := r.runPythonHop(ctx); err != nil {
			return err
		}
	}
	if o.want("k") {
		if err := r.runForward(ctx); err != nil {
			return err
		}
	}
	r.res.machine.loadEnd = loadAvg()
	r.res.elapsed = time.Since(started)
	r.res.print(stdout, o)
	return nil
}

// runTraffic runs scenarios a-e: the same load against the baseline,
// restpipe and (e) ssh -R, round after round.
func (r *runner) runTraffic(ctx context.Context) error {
	o := r.o
	abc := o.want("a") || o.want("b") || o.want("c")
	if !abc && !o.want("d") && !o.want("e") {
		return nil
	}
	// e alone runs a, b and c for the baseline and ssh only.
	scen := map[string]bool{"a": o.want("a"), "b": o.want("b"), "c": o.want("c")}
	if o.want("e") && !abc {
		scen["a"], scen["b"], scen["c"] = true, true, true
	}
	withRestpipe := abc || o.want("d")
	targets := []string{tDirect}
	eps := map[string]endpoint{}

	direct, directAddr, err := r.startDirect(ctx, "direct server", false)
	if err != nil {
		return err
	}
	eps[tDirect] = endpoint{small: "https://" + directAddr + "/time", echo: "https://" + directAddr + "/echo", https: true}

	var srv, cl *node
	if withRestpipe {
		if srv, err = r.startServer(ctx, "server node", "127.0.0.1:0"); err != nil {
			return err
		}
		if cl, err = r.startClient(ctx, "client node", nameClient, srv.link); err != nil {
			return err
		}
		if abc {
			targets = append(targets, tRestpipe)
		}
		eps[tRestpipe] = endpoint{small: "http://" + cl.http + "/server/time", echo: "http://" + cl.http + "/server/echo"}
	}
	// The processes each target's events cross, for CPU per event (b).
	procs := map[string][]cpuProc{tDirect: {{"direct server", direct.pid(), false}}}
	if withRestpipe {
		procs[tRestpipe] = []cpuProc{{"client node", cl.pid(), false}, {"server node", srv.pid(), false}}
		if pid, err := pluginPID(ctx, srv.http, "time"); err == nil {
			procs[tRestpipe] = append(procs[tRestpipe], cpuProc{"time plugin", pid, false})
		}
	}
	if o.want("e") {
		peer, err := r.startSSHPeer(ctx)
		if err != nil {
			r.res.note("e. ssh -R: %v", err)
		} else {
			targets = append(targets, tSSH)
			eps[tSSH] = endpoint{small: "http://" + peer.fwd + "/time", echo: "http://" + peer.fwd + "/echo"}
			procs[tSSH] = []cpuProc{{"ssh", peer.ssh, false}, {"sshd", peer.sshd, true}, {"origin", peer.origin, false}}
		}
	}

	// b: a second pair with a policy of 100 rules (policy.go).
	bTargets := targets
	if o.want("b") && withRestpipe {
		if bTargets, err = r.addPolicyTarget(ctx, targets, eps, procs); err != nil {
			return err
		}
	}

	// d: the delaying proxies and a second client node dialing through one.
	var rttDirect, rttRestpipe string
	if o.want("d") {
		half := o.rtt / 2
		pd, err := startDelayProxy("rtt-direct", directAddr, half)
		if err != nil {
			return err
		}
		defer pd.Stop()
		ps, err := startDelayProxy("rtt-link", srv.link, half)
		if err != nil {
			return err
		}
		defer ps.Stop()
		cl2, err := r.startClient(ctx, "client node (delayed link)", nameClient2, ps.Listen)
		if err != nil {
			return err
		}
		rttDirect = "https://" + pd.Listen + "/echo"
		rttRestpipe = "http://" + cl2.http + "/server/echo"
	}

	size := int64(o.largeMB) << 20
	warm := min(time.Second, o.duration/5)
	for round := 1; round <= o.rounds; round++ {
		fmt.Fprintf(r.log, "round %d of %d (load average %s)\n", round, o.rounds, loadAvg())
		if scen["a"] {
			for _, t := range targets {
				res, err := r.load(ctx, t, round, "a", eps[t], loadSpec{mode: "small", url: eps[t].small, concurrency: 1, duration: o.duration, warmup: warm})
				if err == nil && res.Requests > 0 {
					r.res.add("a.p50", t, round, res.P50us)
					r.res.add("a.p99", t, round, res.P99us)
				}
			}
		}
		if scen["b"] {
			for _, t := range policyOrder(bTargets, round) {
				before := cpuOf(procs[t])
				res, err := r.load(ctx, t, round, "b", eps[t], loadSpec{mode: "small", url: eps[t].small, concurrency: 64, duration: o.duration, warmup: warm})
				after := cpuOf(procs[t])
				if err == nil && res.Requests > 0 {
					r.res.add("b.eps", t, round, res.EventsPerSec)
					r.res.add("b.p99", t, round, res.P99us)
					// CPU over warm-up and measurement, per event of both.
					events := res.EventsPerSec * (warm + o.duration).Seconds()
					for i, p := range procs[t] {
						r.res.add("b.cpu "+p.name, t, round, float64(after[i]-before[i])/float64(time.Microsecond)/events)
					}
				}
			}
		}
		if scen["c"] {
			peaks := map[string]int{"direct server": direct.pid()}
			if srv != nil {
				peaks["server node"] = srv.pid()
				peaks["client node"] = cl.pid()
				if pid, err := pluginPID(ctx, srv.http, "echo"); err == nil {
					peaks["echo plugin"] = pid
				} else {
					r.res.note("c. peak RSS of the echo plugin: %v", err)
				}
			}
			resetOK := true
			for _, pid := range peaks {
				if resetPeak(pid) != nil {
					resetOK = false
				}
			}
			if !resetOK && round == 1 {
				r.res.note("c. could not reset VmHWM (/proc/PID/clear_refs): peak RSS is over each process's whole life")
			}
			for _, t := range targets {
				res, err := r.load(ctx, t, round, "c", eps[t], loadSpec{mode: "echo", url: eps[t].echo, concurrency: 1, size: size})
				if err == nil && res.Requests > 0 {
					r.res.add("c.mbps", t, round, res.BytesPerSec/1e6)
				}
			}
			for who, pid := range peaks {
				if _, hwm, err := procMem(pid); err == nil {
					r.res.add("c.rss", who, round, float64(hwm)/(1<<20))
				}
			}
		}
		if o.want("d") {
			for _, t := range []struct{ name, url string }{{tDirect, rttDirect}, {tRestpipe, rttRestpipe}} {
				ep := endpoint{echo: t.url, https: t.name == tDirect}
				res, err := r.load(ctx, t.name, round, "d", ep, loadSpec{mode: "echo", url: t.url, concurrency: 1, size: size})
				if err == nil && res.Requests > 0 {
					r.res.add("d.mbps", t.name, round, res.BytesPerSec/1e6)
				}
			}
		}
	}
	return nil
}

// load runs the load generator as its own process against target and
// returns its result. A failure is noted for the table and returned.
func (r *runner) load(ctx context.Context, target string, round int, scen string, ep endpoint, s loadSpec) (loadResult, error) {
	if ep.https {
		s.ca = r.pki.ca()
		s.cert, s.key = r.pki.files(nameLoad)
		s.serverName = nameDirect
	}
	label := fmt.Sprintf("%s. %s round %d", scen, target, round)
	res, err := r.runLoadProc(ctx, label, s)
	if err != nil {
		r.res.note("%s: %v", label, err)
		return res, err
	}
	if res.Errors > 0 {
		r.res.note("%s: %d errors (first: %s)", label, res.Errors, res.FirstError)
	}
	fmt.Fprintf(r.log, "  %-22s %s\n", label, res.summary(s.mode))
	return res, nil
}

// runLoadProc starts the load generator, waits for it and decodes its
// report.
func (r *runner) runLoadProc(ctx context.Context, label string, s loadSpec) (loadResult, error) {
	c, err := r.procs.start("load generator ("+label+")", r.bins.self, s.args(), startOpts{})
	if err != nil {
		return loadResult{}, err
	}
	defer r.procs.forget(c)
	limit := s.warmup + s.duration + time.Minute
	if s.mode == "echo" {
		// At least 1 MB/s, the slowest path worth reporting.
		limit = time.Minute + time.Duration(s.size/1e6)*time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if err := c.wait(wctx); err != nil {
		return loadResult{}, fmt.Errorf("load generator: %v\n%s", err, c.tail(10))
	}
	var res loadResult
	if err := json.Unmarshal([]byte(c.output()), &res); err != nil {
		return loadResult{}, fmt.Errorf("load generator's report %q: %w", strings.TrimSpace(c.output()), err)
	}
	return res, nil
}

// summary is one progress line about a result.
func (l loadResult) summary(mode string) string {
	if mode == "echo" {
		return fmt.Sprintf("%.1f MB/s (%d MiB in %.2fs), %d errors", l.BytesPerSec/1e6, l.Bytes>>20, l.Seconds, l.Errors)
	}
	return fmt.Sprintf("p50 %.0fµs p99 %.0fµs %.0f events/s, %d errors", l.P50us, l.P99us, l.EventsPerSec, l.Errors)
}

// cpuProc is a process whose CPU time the bench reads: with tree, its
// descendants' too (sshd serves a connection in a child).
type cpuProc struct {
	name string
	pid  int
	tree bool
}

// cpuOf returns the CPU time (user and system) each process has used.
func cpuOf(ps []cpuProc) []time.Duration {
	out := make([]time.Duration, len(ps))
	for i, p := range ps {
		out[i] = procCPU(p.pid)
		if p.tree {
			for _, d := range descendants(p.pid) {
				out[i] += procCPU(d)
			}
		}
	}
	return out
}
