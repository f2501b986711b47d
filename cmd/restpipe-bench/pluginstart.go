package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// runPluginStart runs scenario h: what one plugin adds to a node's start
// until its first served event.
//
// A fresh server node is started again and again (--rounds times 5 pairs),
// alternately with an empty plugins directory and with one holding only the
// time plugin, its gateway on a Unix socket whose path is known before the
// process starts. From the moment the bench starts the process it sends
// GET /local/time over that socket, retrying at once on refusal; a node
// binds its gateway early but serves only once the plugins found at start
// are running, so the first answer (404 no_route without plugins, 200 from
// the plugin with it) marks when the node serves. The figure is the median
// of (time to the plugin's first 200) - (time to the empty node's first
// 404) over the pairs: the plugin's whole start, from the node finding the
// file (exec, go-plugin's handshake, describing its routes) to its first
// served event, without the node's own start.
//
// The node's debug log adds a breakdown: from "plugin process started"
// (just after exec) to the bench's first 200, and from "plugin found" to
// "plugin running".
func (r *runner) runPluginStart(ctx context.Context) error {
	fmt.Fprintln(r.log, "h. plugin start...")
	base := filepath.Join(r.work, "h")
	empty, withTime := filepath.Join(base, "empty"), filepath.Join(base, "time")
	for _, d := range []string{empty, withTime} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(filepath.Join(r.bins.pluginsDir, "time"), filepath.Join(withTime, "time"), 0o755); err != nil {
		return err
	}
	const perRound = 5
	sample := 0
	for round := 1; round <= r.o.rounds; round++ {
		for range perRound {
			sample++
			without, err := r.startToFirstEvent(ctx, empty, sample, http.StatusNotFound)
			if err != nil {
				return err
			}
			with, err := r.startToFirstEvent(ctx, withTime, sample, http.StatusOK)
			if err != nil {
				return err
			}
			r.res.add("h.ms", "without", sample, ms(without.first))
			r.res.add("h.ms", "with", sample, ms(with.first))
			r.res.add("h.ms", tRestpipe, sample, ms(with.first-without.first))
			if with.execToFirst > 0 {
				r.res.add("h.exec", tRestpipe, sample, ms(with.execToFirst))
			}
			if with.foundToRunning > 0 {
				r.res.add("h.found", tRestpipe, sample, ms(with.foundToRunning))
			}
		}
	}
	return nil
}

// startTimes are the times of one node start.
type startTimes struct {
	first          time.Duration // from process start to the first answer wanted
	execToFirst    time.Duration // from the plugin's exec (node log) to that answer
	foundToRunning time.Duration // from "plugin found" to "plugin running" (node log)
}

// startToFirstEvent starts a server node with pluginsDir and times it until
// GET /local/time answers want.
func (r *runner) startToFirstEvent(ctx context.Context, pluginsDir string, i int, want int) (startTimes, error) {
	sock := filepath.Join(r.work, "h", fmt.Sprintf("gw%d-%d.sock", i, want))
	args := append([]string{"server", "--listen", "127.0.0.1:0", "--http", "unix:" + sock,
		"--plugins", pluginsDir, "--log-format", "json", "--log-level", "debug"}, r.pki.flags(nameServer)...)
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	c, err := r.procs.start(fmt.Sprintf("server node (plugin start %d)", i), r.bins.restpipe, args, startOpts{})
	if err != nil {
		return startTimes{}, err
	}
	defer r.procs.forget(c)
	deadline := c.started.Add(30 * time.Second)
	var got time.Time
	for {
		if ctx.Err() != nil {
			return startTimes{}, ctx.Err()
		}
		if time.Now().After(deadline) {
			return startTimes{}, fmt.Errorf("h. no answer %d from /local/time within 30s\n%s", want, c.tail(20))
		}
		resp, err := hc.Get("http://node/local/time")
		if err != nil {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == want {
			got = time.Now()
			break
		}
		time.Sleep(200 * time.Microsecond)
	}
	st := startTimes{first: got.Sub(c.started)}
	if want != http.StatusOK {
		return st, nil
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	execLine, err1 := c.waitLog(lctx, 0, 5*time.Second, "plugin process started", nil)
	found, err2 := c.waitLog(lctx, 0, 5*time.Second, "plugin found", nil)
	running, err3 := c.waitLog(lctx, 0, 5*time.Second, "plugin running", nil)
	if err1 == nil {
		if t, ok := execLine.time(); ok {
			st.execToFirst = got.Sub(t)
		}
	}
	if err2 == nil && err3 == nil {
		t2, ok2 := found.time()
		t3, ok3 := running.time()
		if ok2 && ok3 {
			st.foundToRunning = t3.Sub(t2)
		}
	}
	return st, nil
}

// ms converts a duration to milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
