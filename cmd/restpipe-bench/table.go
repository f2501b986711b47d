package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// results are the figures of a run: per metric, per who (a target, or a
// process for peak RSS), per round (or sample), one value.
type results struct {
	mu      sync.Mutex
	vals    map[string]map[string]map[int]float64
	notes   []string
	machine machineInfo
	source  string // what was measured
	clients int
	storm   *stormResult
	elapsed time.Duration
}

func newResults() *results {
	return &results{vals: map[string]map[string]map[int]float64{}}
}

// add records one value.
func (r *results) add(metric, who string, round int, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.vals[metric]
	if m == nil {
		m = map[string]map[int]float64{}
		r.vals[metric] = m
	}
	if m[who] == nil {
		m[who] = map[int]float64{}
	}
	m[who][round] = v
}

// note records a line for the notes under the table.
func (r *results) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// median returns the median of who's values of metric.
func (r *results) median(metric, who string) (float64, bool) {
	var vs []float64
	for _, v := range r.vals[metric][who] {
		vs = append(vs, v)
	}
	return median(vs)
}

// max returns the largest of who's values of metric.
func (r *results) max(metric, who string) (float64, bool) {
	var vs []float64
	for _, v := range r.vals[metric][who] {
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return 0, false
	}
	return slices.Max(vs), true
}

// ratio returns the median over rounds of who's value divided by base's
// in the same round: each round pairs figures measured moments apart, which
// cancels most of a shared machine's drift.
func (r *results) ratio(metric, who, base string) (float64, bool) {
	var vs []float64
	for round, v := range r.vals[metric][who] {
		if b, ok := r.vals[metric][base][round]; ok && b != 0 {
			vs = append(vs, v/b)
		}
	}
	return median(vs)
}

func median(vs []float64) (float64, bool) {
	if len(vs) == 0 {
		return 0, false
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2], true
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2, true
}

// row is one line of the table.
type row struct {
	figure, measured, baseline, ratio, goal, result string
}

// print writes the machine, the table and the notes.
func (r *results) print(w io.Writer, o *options) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.machine
	fmt.Fprintf(w, "\nrestpipe-bench, %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "machine: %d CPUs (%s), %s, %s, Linux %s, %.0f GiB RAM\n", m.cpus, m.model, m.goVersion, m.arch, m.kernel, m.memGiB)
	fmt.Fprintf(w, "load average: %s at the start, %s at the end; %s\n", m.loadStart, m.loadEnd, r.elapsed.Round(time.Second))
	fmt.Fprintf(w, "restpipe: %s\n", r.source)
	fmt.Fprintf(w, "options: --rounds %d --duration %v --large-mb %d --clients %d --rtt %v\n\n", o.rounds, o.duration, o.largeMB, o.clients, o.rtt)

	rows := r.rows(o)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tmeasured\tbaseline\tratio\tgoal\tresult")
	fmt.Fprintln(tw, "------\t--------\t--------\t-----\t----\t------")
	for _, rw := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", rw.figure, rw.measured, rw.baseline, rw.ratio, rw.goal, rw.result)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nbaseline: direct mTLS HTTP/1.1 (Go server, TLS 1.3, ECDSA P-256, in-process handlers), in the same run.\n")
	if o.want("a") || o.want("b") || o.want("c") || o.want("d") || o.want("e") {
		fmt.Fprintf(w, "a-e: figures are medians of %d rounds; a ratio is the median of the per-round ratios (measured / baseline).\n", o.rounds)
	}
	if o.want("c") {
		fmt.Fprintln(w, "c: peak RSS is the highest VmHWM over the rounds, each reset just before the echo.")
	}
	if o.want("f") || o.want("g") {
		fmt.Fprintln(w, "f, g: one run each; f's baseline is the direct server holding as many idle keep-alive mTLS connections.")
	}
	if o.want("h") {
		fmt.Fprintf(w, "h: median of %d pairs of fresh node starts, with the time plugin and with none.\n", 5*o.rounds)
	}
	if len(r.notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range r.notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

// rows builds the table's rows from what was measured.
func (r *results) rows(o *options) []row {
	var rows []row
	size := fmt.Sprintf("%d MiB", o.largeMB)
	// cmp builds a row of who against the direct baseline.
	cmp := func(figure, metric, who string, format func(float64) string, goal string, pass func(ratio float64) bool) {
		v, okV := r.median(metric, who)
		b, okB := r.median(metric, tDirect)
		if !okV && !okB {
			return
		}
		rw := row{figure: figure, measured: "—", baseline: "—", ratio: "—", goal: goal, result: "n/a"}
		if okV {
			rw.measured = format(v)
		}
		if okB {
			rw.baseline = format(b)
		}
		if ratio, ok := r.ratio(metric, who, tDirect); ok {
			rw.ratio = fmt.Sprintf("%.2fx", ratio)
			if pass != nil {
				rw.result = verdict(pass(ratio))
			} else {
				rw.result = "reported"
			}
		}
		rows = append(rows, rw)
	}
	lt := func(limit float64) func(float64) bool { return func(x float64) bool { return x < limit } }
	gt := func(limit float64) func(float64) bool { return func(x float64) bool { return x > limit } }
	ge := func(limit float64) func(float64) bool { return func(x float64) bool { return x >= limit } }

	// The goals of issue 10: a, b and c beat ssh -R's ratio in the same
	// run (c also at least half the direct transfer); without an ssh row,
	// the older fixed goals of issue 6 stand in.
	vsSSH := func(metric, sign string, fallback float64, floor float64) (string, func(float64) bool) {
		ssh, ok := r.ratio(metric, tSSH, tDirect)
		if !ok {
			if sign == "<" {
				return fmt.Sprintf("< %.2gx", fallback), lt(fallback)
			}
			return fmt.Sprintf("> %.2gx", fallback), gt(fallback)
		}
		if sign == "<" {
			return fmt.Sprintf("< ssh (%.2fx)", ssh), lt(ssh)
		}
		if floor > 0 {
			return fmt.Sprintf("> ssh (%.2fx), >= %.2gx", ssh, floor), func(x float64) bool { return x > ssh && x >= floor }
		}
		return fmt.Sprintf("> ssh (%.2fx)", ssh), gt(ssh)
	}

	if o.want("a") {
		goal, pass := vsSSH("a.p50", "<", 2.2, 0)
		cmp("a. small GET, c=1, p50 latency", "a.p50", tRestpipe, fmtMicros, goal, pass)
		cmp("a. small GET, c=1, p99 latency", "a.p99", tRestpipe, fmtMicros, "reported", nil)
	}
	if o.want("b") {
		goal, pass := vsSSH("b.eps", ">", 0.55, 0)
		cmp("b. small GET, c=64, throughput", "b.eps", tRestpipe, fmtRate, goal, pass)
		cmp("b. small GET, c=64, p99 latency", "b.p99", tRestpipe, fmtMicros, "reported", nil)
		rows = append(rows, r.policyRows(o)...)
	}
	if o.want("b") {
		// CPU per event: restpipe's two nodes against ssh's two processes
		// (each side's handler process, the plugin and the origin, apart).
		cpu := func(who string, names ...string) (float64, string, bool) {
			var total float64
			var parts []string
			for _, n := range names {
				v, ok := r.median("b.cpu "+n, who)
				if !ok {
					return 0, "", false
				}
				total += v
				parts = append(parts, fmt.Sprintf("%s %.0f", n, v))
			}
			return total, strings.Join(parts, " + "), true
		}
		rp, rpParts, ok1 := cpu(tRestpipe, "client node", "server node")
		sh, shParts, ok2 := cpu(tSSH, "ssh", "sshd")
		if ok1 {
			rw := row{figure: "b. CPU per event at c=64, the two tunnel ends", measured: fmt.Sprintf("%.0f µs", rp), baseline: "—", ratio: "—",
				goal: "< sshd + ssh", result: "n/a"}
			if ok2 {
				rw.baseline = fmt.Sprintf("%.0f µs (ssh)", sh)
				rw.ratio = fmt.Sprintf("%.2fx", rp/sh)
				rw.result = verdict(rp < sh)
			}
			rows = append(rows, rw)
			line := "b. CPU µs per event at c=64 (utime+stime over warm-up and measurement): restpipe " + rpParts
			if v, ok := r.median("b.cpu time plugin", tRestpipe); ok {
				line += fmt.Sprintf(", time plugin %.0f", v)
			}
			if ok2 {
				line += "; ssh -R " + shParts
				if v, ok := r.median("b.cpu origin", tSSH); ok {
					line += fmt.Sprintf(", origin %.0f", v)
				}
			}
			if v, ok := r.median("b.cpu direct server", tDirect); ok {
				line += fmt.Sprintf("; direct server %.0f", v)
			}
			r.notes = append(r.notes, line)
		}
	}
	if o.want("c") {
		goal, pass := vsSSH("c.mbps", ">", 0.6, 0.5)
		cmp("c. "+size+" echo, up and back at once", "c.mbps", tRestpipe, fmtMBps, goal, pass)
		base, okB := r.max("c.rss", "direct server")
		for _, who := range []string{"server node", "client node", "echo plugin"} {
			v, ok := r.max("c.rss", who)
			if !ok {
				continue
			}
			rw := row{figure: "c. peak RSS during the " + size + " echo, " + who, measured: fmtMiB(v), baseline: "—", ratio: "—",
				goal: "flat: < 100 MiB", result: verdict(v < 100)}
			if okB {
				rw.baseline = fmtMiB(base)
				rw.ratio = fmt.Sprintf("%.2fx", v/base)
			}
			rows = append(rows, rw)
		}
	}
	if o.want("d") {
		cmp(fmt.Sprintf("d. %s echo over %v RTT (delaying proxy)", size, o.rtt), "d.mbps", tRestpipe, fmtMBps, ">= 0.5x", ge(0.5))
	}
	if o.want("e") {
		// A peer row: ssh -R against the same baseline; the goal is
		// restpipe's own ratio beating the peer's.
		peer := func(figure, metric string, format func(float64) string, better func(rp, ssh float64) bool, sign string) {
			v, ok := r.median(metric, tSSH)
			if !ok {
				return
			}
			b, _ := r.median(metric, tDirect)
			rw := row{figure: figure, measured: format(v), baseline: format(b), ratio: "—", goal: "restpipe " + sign + " ssh", result: "n/a"}
			sshRatio, ok1 := r.ratio(metric, tSSH, tDirect)
			if ok1 {
				rw.ratio = fmt.Sprintf("%.2fx", sshRatio)
			}
			if rpRatio, ok2 := r.ratio(metric, tRestpipe, tDirect); ok1 && ok2 {
				rw.result = fmt.Sprintf("%s (restpipe %.2fx)", verdict(better(rpRatio, sshRatio)), rpRatio)
			}
			rows = append(rows, rw)
		}
		lower := func(rp, ssh float64) bool { return rp < ssh }
		higher := func(rp, ssh float64) bool { return rp > ssh }
		peer("e. ssh -R (peer): small GET, c=1, p50", "a.p50", fmtMicros, lower, "<")
		peer("e. ssh -R (peer): small GET, c=64, throughput", "b.eps", fmtRate, higher, ">")
		peer("e. ssh -R (peer): "+size+" echo", "c.mbps", fmtMBps, higher, ">")
	}
	if o.want("f") {
		v, ok := r.median("f.kib", tRestpipe)
		b, okB := r.median("f.kib", tDirect)
		if ok || okB {
			rw := row{figure: fmt.Sprintf("f. server memory per idle client (%d)", r.clients), measured: "—", baseline: "—", ratio: "—",
				goal: "<= 40 KiB", result: "n/a"}
			if ok {
				rw.measured, rw.result = fmt.Sprintf("%.1f KiB", v), verdict(v <= 40)
			}
			if okB {
				rw.baseline = fmt.Sprintf("%.1f KiB", b)
			}
			if ok && okB && b > 0 {
				rw.ratio = fmt.Sprintf("%.2fx", v/b)
			}
			rows = append(rows, rw)
		}
	}
	if o.want("g") && r.storm != nil {
		s := r.storm
		rw := row{figure: fmt.Sprintf("g. reconnect storm: %d clients back after a restart", s.clients), baseline: "—", ratio: "—",
			goal: "<= 15 s, none lost"}
		lost := s.clients - s.back
		if s.all > 0 {
			rw.measured = fmt.Sprintf("%.1f s, none lost", s.all.Seconds())
			rw.result = verdict(s.all <= goalReconnect)
		} else {
			rw.measured = fmt.Sprintf("%d not back in %v", lost, s.wait)
			rw.result = verdict(false)
		}
		rows = append(rows, rw)
		line := fmt.Sprintf("g. from the SIGKILL: %d of %d back within %v", s.atGoal, s.clients, goalReconnect)
		if s.half > 0 {
			line += fmt.Sprintf("; half back after %.1f s", s.half.Seconds())
		}
		if s.most > 0 {
			line += fmt.Sprintf(", 90%% after %.1f s", s.most.Seconds())
		}
		if s.all > 0 {
			line += fmt.Sprintf(", all after %.1f s (%.1f s from the new server process's start)", s.all.Seconds(), s.fromRestart.Seconds())
		}
		line += fmt.Sprintf("; CPU used meanwhile: server %.1f s, the idle-clients process %.1f s", s.serverCPU.Seconds(), s.idleCPU.Seconds())
		r.notes = append(r.notes, line)
	}
	if o.want("h") {
		if v, ok := r.median("h.ms", tRestpipe); ok {
			with, _ := r.median("h.ms", "with")
			without, _ := r.median("h.ms", "without")
			rows = append(rows, row{figure: "h. plugin start, to its first served event", measured: fmt.Sprintf("%.1f ms", v),
				baseline: "—", ratio: "—", goal: "<= 50 ms", result: verdict(v <= 50)})
			line := fmt.Sprintf("h. node start to first answer: %.1f ms with the time plugin, %.1f ms with none (medians)", with, without)
			if e, ok := r.median("h.exec", tRestpipe); ok {
				line += fmt.Sprintf("; from the plugin's exec to its first served event %.1f ms", e)
			}
			if f, ok := r.median("h.found", tRestpipe); ok {
				line += fmt.Sprintf("; \"plugin found\" to \"plugin running\" %.1f ms", f)
			}
			r.notes = append(r.notes, line)
		}
	}
	if o.want("i") {
		if v, ok := r.median("i.p50", tRestpipe); ok {
			b, _ := r.median("i.p50", tPingPong)
			rw := row{figure: "i. plugin hop alone (node -> plugin -> node), c=1, p50", measured: fmtMicros(v),
				baseline: fmtMicros(b) + " (Unix ping-pong)", ratio: "—", goal: "reported", result: "reported"}
			if x, ok := r.ratio("i.p50", tRestpipe, tPingPong); ok {
				rw.ratio = fmt.Sprintf("%.2fx", x)
			}
			rows = append(rows, rw)
		}
	}
	rows = append(rows, r.pythonRows(o)...)
	return append(rows, r.forwardRows(o)...)
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func fmtMicros(us float64) string {
	if us >= 10000 {
		return fmt.Sprintf("%.1f ms", us/1000)
	}
	return fmt.Sprintf("%.0f µs", us)
}

func fmtRate(v float64) string { return commas(int64(v+0.5)) + "/s" }
func fmtMBps(v float64) string { return fmt.Sprintf("%.0f MB/s", v) }
func fmtMiB(v float64) string  { return fmt.Sprintf("%.1f MiB", v) }

// commas formats n with thousands separators.
func commas(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// machineInfo describes where the bench ran.
type machineInfo struct {
	cpus      int
	model     string
	goVersion string
	arch      string
	kernel    string
	memGiB    float64
	loadStart string
	loadEnd   string
}

func describeMachine() machineInfo {
	m := machineInfo{cpus: runtime.NumCPU(), goVersion: runtime.Version(), arch: runtime.GOOS + "/" + runtime.GOARCH,
		model: "unknown CPU", loadStart: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.memGiB = float64(kb) / (1 << 20)
		}
	}
	return m
}

func (m machineInfo) oneLine() string {
	return fmt.Sprintf("%d CPUs (%s), %s, load average %s", m.cpus, m.model, m.goVersion, m.loadStart)
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// pairRow is a "reported" row of metric for who against base (named
// baseLabel in the baseline column), with the median of the per-round
// ratios; false when neither was measured. The caller holds r.mu.
func (r *results) pairRow(figure, metric, who, base, baseLabel string, format func(float64) string) (row, bool) {
	v, okV := r.median(metric, who)
	b, okB := r.median(metric, base)
	if !okV && !okB {
		return row{}, false
	}
	rw := row{figure: figure, measured: "—", baseline: "—", ratio: "—", goal: "reported", result: "reported"}
	if okV {
		rw.measured = format(v)
	}
	if okB {
		rw.baseline = format(b) + " (" + baseLabel + ")"
	}
	if ratio, ok := r.ratio(metric, who, base); ok {
		rw.ratio = fmt.Sprintf("%.2fx", ratio)
	}
	return rw, true
}
