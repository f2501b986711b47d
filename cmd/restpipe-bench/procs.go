package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procSet owns every child process of a run. killAll kills them all, with
// their descendants, in the reverse order of their start; it is safe to
// call more than once and from any goroutine.
type procSet struct {
	// tmp is every child's TMPDIR, inside the run's directory: what a
	// killed child leaves there (go-plugin's socket directories of a node
	// that was SIGKILLed) goes with it.
	tmp string

	mu   sync.Mutex
	kids []*child
}

// child is one process the bench started. Its standard error is kept line
// by line (parsed as JSON when it is), to wait for log lines and to explain
// failures; its standard output is either collected or handed to the
// caller.
type child struct {
	name string
	cmd  *exec.Cmd

	stdout io.ReadCloser  // when the caller reads it (startOpts.stdoutPipe)
	stdin  io.WriteCloser // when startOpts.stdinPipe

	mu      sync.Mutex
	cond    *sync.Cond
	lines   []logLine
	dropped int // lines not kept past maxLines
	out     bytes.Buffer
	ended   bool
	err     error
	done    chan struct{}
	started time.Time
}

// maxLines bounds the log lines kept per child.
const maxLines = 200_000

// logLine is one line a child wrote to standard error: an hclog JSON object,
// or {"@message": line, "@raw": true}.
type logLine map[string]any

func (l logLine) msg() string { s, _ := l["@message"].(string); return s }
func (l logLine) str(k string) string {
	s, _ := l[k].(string)
	return s
}

// time returns the line's hclog timestamp.
func (l logLine) time() (time.Time, bool) {
	s := l.str("@timestamp")
	if s == "" {
		return time.Time{}, false
	}
	t, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", s)
	if err != nil {
		if t, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return time.Time{}, false
		}
	}
	return t, true
}

// startOpts are the less common ways to start a child.
type startOpts struct {
	stdoutPipe bool // hand standard output to the caller (child.stdout)
	stdinPipe  bool // give the caller the child's standard input (child.stdin)
}

// start starts path with args as a child named name, in its own process
// group and killed by the kernel if the bench dies.
func (ps *procSet) start(name, path string, args []string, o startOpts) (*child, error) {
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if ps.tmp != "" {
		cmd.Env = append(os.Environ(), "TMPDIR="+ps.tmp)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	var stdout io.ReadCloser
	if o.stdoutPipe {
		if c.stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, err
		}
	} else if stdout, err = cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	if o.stdinPipe {
		if c.stdin, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	c.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	ps.kids = append(ps.kids, c)

	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var l logLine
			if b := sc.Bytes(); len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &l) != nil {
				l = logLine{"@message": sc.Text(), "@raw": true}
			}
			c.mu.Lock()
			if len(c.lines) < maxLines {
				c.lines = append(c.lines, l)
			} else {
				c.dropped++
			}
			c.cond.Broadcast()
			c.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	if stdout != nil {
		readers.Add(1)
		go func() {
			defer readers.Done()
			var b bytes.Buffer
			_, _ = io.Copy(&b, stdout)
			c.mu.Lock()
			c.out.Write(b.Bytes())
			c.mu.Unlock()
		}()
	}
	go func() {
		readers.Wait()
		err := cmd.Wait()
		c.mu.Lock()
		c.ended, c.err = true, err
		c.cond.Broadcast()
		c.mu.Unlock()
		close(c.done)
	}()
	return c, nil
}

// pid returns the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// output returns what the child wrote to standard output (unless the
// caller reads it).
func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// tail returns the last n lines of the child's standard error, for error
// messages.
func (c *child) tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, l := range c.lines[max(0, len(c.lines)-n):] {
		if l["@raw"] == true {
			fmt.Fprintf(&b, "  %s: %s\n", c.name, l.msg())
			continue
		}
		j, _ := json.Marshal(l)
		fmt.Fprintf(&b, "  %s: %s\n", c.name, j)
	}
	return b.String()
}

// waitLog waits until a line after position from has message msg (any
// message when msg is "") and satisfies match (when not nil), and returns
// it. It fails when the child
// exits first, within passes or ctx ends.
func (c *child) waitLog(ctx context.Context, from int, within time.Duration, msg string, match func(logLine) bool) (logLine, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := from; ; {
		for ; i < len(c.lines); i++ {
			if l := c.lines[i]; (msg == "" || l.msg() == msg) && (match == nil || match(l)) {
				return l, nil
			}
		}
		if c.ended {
			return nil, fmt.Errorf("%s exited (%v) before logging %q", c.name, c.err, msg)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: no log %q within %v: %w", c.name, msg, within, context.Cause(ctx))
		}
		c.cond.Wait()
	}
}

// wait waits until the child has exited or ctx ends, and returns its exit
// error.
func (c *child) wait(ctx context.Context) error {
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// kill kills the child's process group and every descendant it has, then
// waits for it (at most a few seconds: it is SIGKILL).
func (c *child) kill() {
	select {
	case <-c.done:
		return
	default:
	}
	pid := c.pid()
	// Descendants may have left the group (a daemon's per-connection child
	// calls setsid): find them first, while the parent links still show.
	desc := descendants(pid)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for _, d := range desc {
		_ = syscall.Kill(d, syscall.SIGKILL)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
	}
}

// killAll kills every child still running, the last started first.
func (ps *procSet) killAll() {
	ps.mu.Lock()
	kids := slices.Clone(ps.kids)
	ps.kids = nil
	ps.mu.Unlock()
	slices.Reverse(kids)
	for _, c := range kids {
		if c.stdin != nil {
			c.stdin.Close()
		}
		c.kill()
	}
}

// forget kills c and drops it from the set.
func (ps *procSet) forget(c *child) {
	c.kill()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.kids = slices.DeleteFunc(ps.kids, func(k *child) bool { return k == c })
}

// descendants returns the process ids of every descendant of pid, from the
// parent links in /proc.
func descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name, in parentheses, may hold spaces: read after it.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			parent[p] = pp
		}
	}
	var out []int
	for p := range parent {
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// procMem reads a process's memory figures from /proc/PID/status: its
// resident set size now (VmRSS) and its peak (VmHWM), in bytes.
func procMem(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		switch k {
		case "VmRSS":
			n, _ := strconv.ParseInt(v, 10, 64)
			rss = n << 10
		case "VmHWM":
			n, _ := strconv.ParseInt(v, 10, 64)
			hwm = n << 10
		}
	}
	if hwm == 0 {
		return 0, 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
	}
	return rss, hwm, nil
}

// resetPeak resets a process's VmHWM to its current RSS (Linux 4.0+).
func resetPeak(pid int) error {
	return os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0)
}

// errSkipped marks a scenario that could not run here; its message says
// why, for the table's notes.
var errSkipped = errors.New("skipped")
