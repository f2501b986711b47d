package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Targets of scenario k.
const (
	tDirectHold = "direct (holding server)"
	tForwarded  = "forwarded (other server)"
)

// runForward runs scenario k: forwarded against direct small events in a
// cluster of two servers with embedded NATS (SPEC §8). One client node is
// linked to server s2; the load generator sends GET /client/client1/time
// to s2's gateway (direct: s2 holds the link) and to s1's (forwarded: s1
// looks the client up in NATS and forwards over its forward link to s2),
// c=1 p50 and c=64 throughput, alternating round after round. It also
// reads s1's presence lookups from its /metrics: how many went to NATS and
// their mean time, and how many the cache answered.
func (r *runner) runForward(ctx context.Context) error {
	fmt.Fprintln(r.log, "k. forwarded vs direct in a cluster of two servers...")
	if err := r.issueServers(ctx, []string{"s1", "s2"}); err != nil {
		return err
	}
	var routes []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		routes = append(routes, ln.Addr().String())
		ln.Close()
	}
	var srv []*node
	for i, name := range []string{"s1", "s2"} {
		args := append([]string{"server", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--plugins", r.bins.pluginsDir,
			"--cluster-listen", routes[i], "--cluster-join", strings.Join(routes, ","), "--log-format", "json", "--log-level", "info"},
			r.pki.flags(name)...)
		c, err := r.procs.start("server "+name+" (k)", r.bins.restpipe, args, startOpts{})
		if err != nil {
			return err
		}
		defer r.procs.forget(c)
		l, err := c.waitLog(ctx, 0, time.Minute, "listening", nil)
		if err != nil {
			r.res.note("k. server %s: %v", name, err)
			return nil
		}
		srv = append(srv, &node{child: c, http: l.str("http"), link: l.str("link")})
	}
	args := append([]string{"client", "--server", srv[1].link, "--server-name", "s2", "--http", "127.0.0.1:0",
		"--plugins", r.bins.pluginsDir, "--log-format", "json", "--log-level", "info"}, r.pki.flags(nameClient)...)
	cl, err := r.procs.start("client node (k)", r.bins.restpipe, args, startOpts{})
	if err != nil {
		return err
	}
	defer r.procs.forget(cl)
	if _, err := cl.waitLog(ctx, 0, time.Minute, "link up", nil); err != nil {
		r.res.note("k. client node: %v", err)
		return nil
	}
	urls := map[string]string{tDirectHold: "http://" + srv[1].http + "/client/" + nameClient + "/time",
		tForwarded: "http://" + srv[0].http + "/client/" + nameClient + "/time"}
	for _, u := range urls {
		if err := getOK(ctx, u); err != nil {
			r.res.note("k. first event %s: %v", u, err)
			return nil
		}
	}
	warm := min(time.Second, r.o.duration/5)
	for round := 1; round <= r.o.rounds; round++ {
		for _, t := range []string{tDirectHold, tForwarded} {
			ep := endpoint{small: urls[t]}
			res, err := r.load(ctx, t, round, "k", ep, loadSpec{mode: "small", url: urls[t], concurrency: 1, duration: r.o.duration, warmup: warm})
			if err == nil && res.Requests > 0 {
				r.res.add("k.p50", t, round, res.P50us)
			}
			res, err = r.load(ctx, t, round, "k", ep, loadSpec{mode: "small", url: urls[t], concurrency: 64, duration: r.o.duration, warmup: warm})
			if err == nil && res.Requests > 0 {
				r.res.add("k.eps", t, round, res.EventsPerSec)
			}
		}
	}
	m, err := scrapeMetrics(ctx, srv[0].http)
	if err != nil {
		r.res.note("k. s1 /metrics: %v", err)
		return nil
	}
	sum, count := m["restpipe_cluster_presence_lookup_seconds_sum"], m["restpipe_cluster_presence_lookup_seconds_count"]
	if count > 0 {
		r.res.add("k.lookup", "nats", 1, sum/count*1e6)
		r.res.add("k.lookups", "nats", 1, count)
	}
	r.res.add("k.lookups", "cached", 1, m[`restpipe_cluster_presence_lookups_total{result="cached"}`])
	for _, c := range []*child{cl, srv[0].child, srv[1].child} {
		r.procs.forget(c)
	}
	if r.o.clusterClients > 0 {
		return r.runClusterIdle(ctx, r.o.clusterClients)
	}
	return nil
}

// runClusterIdle is the second part of scenario k: n idle clients (one
// process of host/link clients, each given the three servers' addresses)
// spread over three clustered servers; the servers' RSS per client, and
// the time until the clients of a SIGKILLed server are all linked to the
// other two.
func (r *runner) runClusterIdle(ctx context.Context, n int) error {
	fmt.Fprintf(r.log, "k. %d idle clients over three clustered servers...\n", n)
	names := []string{"s1", "s2", "s3"}
	if err := r.issueServers(ctx, names); err != nil {
		return err
	}
	var routes []string
	for range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		routes = append(routes, ln.Addr().String())
		ln.Close()
	}
	var srv []*node
	var links []string
	for i, name := range names {
		args := append([]string{"server", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
			"--cluster-listen", routes[i], "--cluster-join", strings.Join(routes, ","), "--log-format", "json", "--log-level", "info"},
			r.pki.flags(name)...)
		c, err := r.procs.start("server "+name+" (k idle)", r.bins.restpipe, args, startOpts{})
		if err != nil {
			return err
		}
		defer r.procs.forget(c)
		l, err := c.waitLog(ctx, 0, time.Minute, "listening", nil)
		if err != nil {
			r.res.note("k. server %s: %v", name, err)
			return nil
		}
		srv = append(srv, &node{child: c, http: l.str("http"), link: l.str("link")})
		links = append(links, l.str("link"))
	}
	time.Sleep(time.Second)
	var before int64
	for _, s := range srv {
		rss, _, err := procMem(s.pid())
		if err != nil {
			return err
		}
		before += rss
	}
	ip, err := r.startIdleProc("restpipe", strings.Join(links, ","), n)
	if err != nil {
		return err
	}
	defer r.procs.forget(ip.c)
	if _, err := ip.waitFor(ctx, 10*time.Minute, func(st idleState) bool { return st.Issued == n }); err != nil {
		return fmt.Errorf("k. issue %d client certificates: %w", n, err)
	}
	t0 := time.Now()
	if st, err := ip.waitFor(ctx, 10*time.Minute, func(st idleState) bool { return st.Linked == n }); err != nil {
		r.res.note("k. only %d of %d idle clients linked within 10 minutes", st.Linked, n)
		return nil
	}
	linkedIn := time.Since(t0)
	var after int64
	var spread []string
	held := make([]int, len(srv))
	for i, s := range srv {
		after += settledRSS(ctx, s.pid())
		held[i], _ = scrapeLinks(ctx, s.http)
		spread = append(spread, fmt.Sprintf("%s %d", names[i], held[i]))
	}
	r.res.add("k.idle.kib", "cluster", 1, float64(after-before)/float64(n)/1024)
	r.res.note("k. %d idle clients linked over three servers in %.1fs (%s); the servers' RSS %.0f MiB before, %.0f MiB after",
		n, linkedIn.Seconds(), strings.Join(spread, ", "), mib(before), mib(after))
	if err := ip.mark(ctx); err != nil {
		return fmt.Errorf("k. mark: %w", err)
	}
	victim := 2
	killed := time.Now()
	r.procs.forget(srv[victim].child)
	last, err := ip.waitFor(ctx, 2*time.Minute, func(st idleState) bool { return st.Relinked >= held[victim] && st.Linked == n })
	if err != nil {
		r.res.note("k. after %s was killed, %d of its %d clients relinked within 2 minutes", names[victim], last.Relinked, held[victim])
		return nil
	}
	back := time.Unix(0, last.T).Sub(killed)
	r.res.add("k.idle.back", "cluster", 1, back.Seconds())
	r.res.note("k. SIGKILL of %s: its %d clients all linked to s1 and s2 %.1fs later", names[victim], held[victim], back.Seconds())
	return nil
}

// issueServers issues certificates with the server role, once per run.
func (r *runner) issueServers(ctx context.Context, names []string) error {
	for _, name := range names {
		cmd := exec.CommandContext(ctx, r.bins.restpipe, "pki", "issue", "--dir", r.pki.dir, "--name", name, "--host", "127.0.0.1", "--role", "server")
		if b, err := cmd.CombinedOutput(); err != nil && !strings.Contains(string(b), "exist") {
			return fmt.Errorf("k: pki issue %s: %v\n%s", name, err, b)
		}
	}
	return nil
}

// scrapeMetrics returns a node's /metrics samples by name and labels,
// without the labels every series of the node carries (node, role).
func scrapeMetrics(ctx context.Context, httpAddr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[stripNodeLabels(line[:i])] = v
	}
	return out, sc.Err()
}

// stripNodeLabels drops the node and role labels from a series name.
func stripNodeLabels(s string) string {
	open := strings.IndexByte(s, '{')
	if open < 0 {
		return s
	}
	var keep []string
	for _, l := range strings.Split(strings.TrimSuffix(s[open+1:], "}"), ",") {
		if l != "" && !strings.HasPrefix(l, "node=") && !strings.HasPrefix(l, "role=") {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		return s[:open]
	}
	return s[:open] + "{" + strings.Join(keep, ",") + "}"
}

// forwardRows are scenario k's rows: forwarded events against direct ones,
// and the presence lookups. The caller holds r.mu.
func (r *results) forwardRows(o *options) []row {
	if !o.want("k") {
		return nil
	}
	var rows []row
	cmp := func(figure, metric string, format func(float64) string) {
		if rw, ok := r.pairRow(figure, metric, tForwarded, tDirectHold, "direct", format); ok {
			rows = append(rows, rw)
		}
	}
	cmp("k. forwarded small GET, c=1, p50", "k.p50", fmtMicros)
	cmp("k. forwarded small GET, c=64, throughput", "k.eps", fmtRate)
	if us, ok := r.median("k.lookup", "nats"); ok {
		n, _ := r.median("k.lookups", "nats")
		cached, _ := r.median("k.lookups", "cached")
		rows = append(rows, row{figure: "k. presence lookup in NATS (mean)", measured: fmtMicros(us),
			baseline: fmt.Sprintf("%.0f lookups, %.0f cached", n, cached), ratio: "—", goal: "reported", result: "reported"})
	}
	if kib, ok := r.median("k.idle.kib", "cluster"); ok {
		rows = append(rows, row{figure: fmt.Sprintf("k. server memory per idle client, %d over 3 servers", o.clusterClients), measured: fmt.Sprintf("%.1f KiB", kib),
			baseline: "—", ratio: "—", goal: "reported", result: "reported"})
	}
	if s, ok := r.median("k.idle.back", "cluster"); ok {
		rows = append(rows, row{figure: "k. a killed server's clients all relinked elsewhere", measured: fmt.Sprintf("%.1f s", s),
			baseline: "—", ratio: "—", goal: "reported", result: "reported"})
	}
	r.notes = append(r.notes, fmt.Sprintf("k: two clustered servers (embedded NATS) and one client linked to s2; direct is GET "+
		"/client/client1/time on s2, forwarded the same on s1 (NATS lookup, then s1 -> s2 forward link -> client); medians of %d rounds.", o.rounds))
	return rows
}
