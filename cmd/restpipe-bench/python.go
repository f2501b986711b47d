package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/restpipe/restpipe/cmd/internal/srctree"
)

// Scenario j: the Python plugin hop beside the Go one. A server node runs
// the Go time plugin and a Python plugin answering the same small event
// (pytime, written with plugin-sdk/python's native API); a client node
// calls both through the link, round after round, at concurrency 1 (p50
// latency) and 64 (events per second). The Go plugin is the baseline: the
// ratios say what the Python SDK costs per event, the link and the nodes
// being the same. Each plugin's start, as the node measures it (/status
// start_ms: exec, for Python the interpreter and its imports, go-plugin's
// handshake, describe), is reported beside.
//
// The Python plugins run with Debian's /usr/bin/python3 when it imports
// grpc and protobuf (else the first python3 on PATH that does); without
// one, or outside the source tree (the SDK is plugin-sdk/python), the
// scenario is skipped with a note.

// pytime is the Python plugin of scenario j: the Go time plugin's answer.
const pytime = `#!/usr/bin/env python3
import time
from restpipe_plugin import Plugin

p = Plugin("pytime", "1.0.0")

@p.route("get", "pytime")
def get_time(ev):
    return {"time_from_" + ev.node.role: time.time()}

p.serve()
`

// Targets of scenario j.
const (
	tGoPlugin = "go plugin"
	tPyPlugin = "python plugin"
)

// pythonProbe is what an interpreter must run for the SDK.
const pythonProbe = "import sys, grpc, google.protobuf; assert sys.version_info >= (3, 11)"

// findBenchPython returns a python3 that imports grpc and protobuf.
func findBenchPython() (string, error) {
	cands := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		cands = append(cands, p)
	}
	for _, c := range cands {
		if exec.Command(c, "-c", pythonProbe).Run() == nil {
			return c, nil
		}
	}
	return "", errors.New("no python3 (3.11+) imports grpc and google.protobuf (apt-get install python3-grpcio python3-protobuf)")
}

// runPythonHop runs scenario j. What cannot run is noted, not fatal.
func (r *runner) runPythonHop(ctx context.Context) error {
	fmt.Fprintln(r.log, "j. Python plugin hop...")
	root, err := srctree.Root()
	if err != nil {
		r.res.note("j. skipped: the Python SDK is in the source tree, which is not here: %v", err)
		return nil
	}
	py, err := findBenchPython()
	if err != nil {
		r.res.note("j. skipped: %v", err)
		return nil
	}
	base := filepath.Join(r.work, "j")
	plugins, bin := filepath.Join(base, "plugins"), filepath.Join(base, "bin")
	for _, d := range []string{plugins, bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.Symlink(py, filepath.Join(bin, "python3")); err != nil {
		return err
	}
	if err := copyFile(filepath.Join(r.bins.pluginsDir, "time"), filepath.Join(plugins, "time"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(plugins, "pytime"), []byte(pytime), 0o755); err != nil {
		return err
	}
	args := append([]string{"server", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--plugins", plugins,
		"--plugin-env", "PATH=" + bin + ":/usr/bin:/bin", "--plugin-env", "PYTHONPATH=" + filepath.Join(root, "plugin-sdk", "python"),
		"--plugin-env", "PYTHONPYCACHEPREFIX=" + filepath.Join(base, "pycache"),
		"--log-format", "json", "--log-level", "info"}, r.pki.flags(nameServer)...)
	srv, err := r.procs.start("server node (Python hop)", r.bins.restpipe, args, startOpts{})
	if err != nil {
		return err
	}
	defer r.procs.forget(srv)
	l, err := srv.waitLog(ctx, 0, time.Minute, "listening", nil)
	if err != nil {
		r.res.note("j. server node: %v", err)
		return nil
	}
	cl, err := r.startClient(ctx, "client node (Python hop)", nameClient, l.str("link"))
	if err != nil {
		r.res.note("j. client node: %v", err)
		return nil
	}
	defer r.procs.forget(cl.child)
	urls := map[string]string{tGoPlugin: "http://" + cl.http + "/server/time", tPyPlugin: "http://" + cl.http + "/server/pytime"}
	if err := getOK(ctx, urls[tPyPlugin]); err != nil {
		r.res.note("j. the Python plugin does not answer: %v\n%s", err, srv.tail(10))
		return nil
	}
	for _, file := range []string{"time", "pytime"} {
		if ms, err := pluginStartMillis(ctx, l.str("http"), file); err == nil {
			r.res.add("j.start", file, 1, ms)
		}
	}
	warm := min(time.Second, r.o.duration/5)
	for round := 1; round <= r.o.rounds; round++ {
		for _, t := range []string{tGoPlugin, tPyPlugin} {
			ep := endpoint{small: urls[t]}
			res, err := r.load(ctx, t, round, "j", ep, loadSpec{mode: "small", url: urls[t], concurrency: 1, duration: r.o.duration, warmup: warm})
			if err == nil && res.Requests > 0 {
				r.res.add("j.p50", t, round, res.P50us)
			}
			res, err = r.load(ctx, t, round, "j", ep, loadSpec{mode: "small", url: urls[t], concurrency: 64, duration: r.o.duration, warmup: warm})
			if err == nil && res.Requests > 0 {
				r.res.add("j.eps", t, round, res.EventsPerSec)
			}
		}
	}
	return nil
}

// pluginStartMillis returns a plugin's start_ms from a node's /status.
func pluginStartMillis(ctx context.Context, httpAddr, file string) (float64, error) {
	p, err := findPlugin(ctx, httpAddr, file, func(p statusPlugin) bool { return p.StartMs > 0 })
	return p.StartMs, err
}

// pythonRows are scenario j's rows: the Python plugin against the Go one.
// The caller holds r.mu.
func (r *results) pythonRows(o *options) []row {
	if !o.want("j") {
		return nil
	}
	var rows []row
	cmp := func(figure, metric string, format func(float64) string) {
		if rw, ok := r.pairRow(figure, metric, tPyPlugin, tGoPlugin, "Go", format); ok {
			rows = append(rows, rw)
		}
	}
	cmp("j. Python plugin hop: small GET, c=1, p50", "j.p50", fmtMicros)
	cmp("j. Python plugin hop: small GET, c=64, throughput", "j.eps", fmtRate)
	py, ok1 := r.median("j.start", "pytime")
	gp, ok2 := r.median("j.start", "time")
	if ok1 || ok2 {
		rows = append(rows, row{figure: "j. plugin start (start_ms in /status)", measured: fmt.Sprintf("%.1f ms", py),
			baseline: fmt.Sprintf("%.1f ms (Go)", gp), ratio: "—", goal: "reported", result: "reported"})
	}
	r.notes = append(r.notes, fmt.Sprintf("j: both plugins on one server node, called from one client node through the link; "+
		"baseline the Go time plugin; medians of %d rounds, a ratio the median of the per-round ratios; "+
		"plugin start is the node's own measure of one start each (exec, imports, handshake, describe).", o.rounds))
	return rows
}
