package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host/hosttest"
)

// binDir holds the binaries built once for this test run.
var binDir string

// restpipeBin is the restpipe binary under test.
func restpipeBin() string { return filepath.Join(binDir, "restpipe") }

// examplePlugins are the plugins of plugins/, built for the tests.
var examplePlugins = []string{"time", "cat", "echo", "files"}

// pluginBin is a plugin binary built for the tests.
func pluginBin(name string) string { return filepath.Join(binDir, "plugins", name) }

func TestMain(m *testing.M) {
	if spec := os.Getenv(idleClientsEnv); spec != "" {
		os.Exit(runIdleClients(spec))
	}
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "restpipe-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binDir = dir
		// One go command for the plugins: they compile in parallel.
		pkgs := []string{"../../testdata/plugins/misbehave"}
		for _, p := range examplePlugins {
			pkgs = append(pkgs, "../../plugins/"+p)
		}
		if err := hosttest.Build(dir, nil, "."); err != nil {
			fmt.Fprintln(os.Stderr, "build restpipe:", err)
			return 1
		}
		if err := hosttest.Build(filepath.Join(dir, "plugins"), nil, pkgs...); err != nil {
			fmt.Fprintln(os.Stderr, "build the test plugins:", err)
			return 1
		}
		return m.Run()
	}())
}

// proc is a restpipe process started by a test, logging JSON to stderr.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd

	mu     sync.Mutex
	cond   *sync.Cond
	lines  []logLine
	stdout strings.Builder
	ended  bool
	done   chan struct{}
	err    error // Wait's result
}

// logLine is one hclog JSON line.
type logLine map[string]any

func (l logLine) msg() string { s, _ := l["@message"].(string); return s }
func (l logLine) str(k string) string {
	s, _ := l[k].(string)
	return s
}

// startProc starts restpipe with args (JSON logs at debug are added) and
// stops it with SIGKILL at the end of the test if it still runs.
func startProc(t testing.TB, name string, env []string, args ...string) *proc {
	t.Helper()
	args = append(args, "--log-format", "json", "--log-level", "debug")
	if (args[0] == "server" || args[0] == "client") && !slices.Contains(args, "--http") {
		args = append(args, "--http", "127.0.0.1:0") // never a fixed port
	}
	// The process's TMPDIR is its own, so what a SIGKILL leaves behind
	// (its plugins' socket directories) goes with the test; the removal
	// runs after the kill below, and tolerates a plugin not yet dead.
	tmp, err := os.MkdirTemp("", "restpipe-proc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	cmd := exec.Command(restpipeBin(), args...)
	cmd.Env = append(append(os.Environ(), "TMPDIR="+tmp), env...)
	cmd.SysProcAttr = dieWithParent()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, cmd: cmd, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var l logLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l = logLine{"@message": sc.Text(), "@raw": true}
			}
			p.mu.Lock()
			p.lines = append(p.lines, l)
			p.cond.Broadcast()
			p.mu.Unlock()
		}
	}()
	go func() {
		defer readers.Done()
		buf := make([]byte, 4096)
		for {
			n, err := stdout.Read(buf)
			p.mu.Lock()
			p.stdout.Write(buf[:n])
			p.cond.Broadcast()
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		readers.Wait()
		err := cmd.Wait()
		p.mu.Lock()
		p.ended, p.err = true, err
		p.cond.Broadcast()
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			p.dump()
		}
	})
	return p
}

// dump logs everything the process printed.
func (p *proc) dump() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		b, _ := json.Marshal(l)
		p.t.Logf("%s: %s", p.name, b)
	}
	if p.stdout.Len() > 0 {
		p.t.Logf("%s stdout: %s", p.name, p.stdout.String())
	}
}

func (p *proc) signal(sig syscall.Signal) {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// mark returns a position in the log, for waitLog to search after.
func (p *proc) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// since returns the log lines from position from on.
func (p *proc) since(from int) []logLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lines[from:])
}

// waitLog waits until a log line after position from has message msg and
// satisfies match (if not nil), and returns it.
func (p *proc) waitLog(from int, within time.Duration, msg string, match func(logLine) bool) logLine {
	p.t.Helper()
	deadline := time.Now().Add(within)
	timer := time.AfterFunc(within, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := from; ; {
		for ; i < len(p.lines); i++ {
			if l := p.lines[i]; l.msg() == msg && (match == nil || match(l)) {
				return l
			}
		}
		if p.ended || time.Now().After(deadline) {
			p.mu.Unlock()
			p.dump()
			p.mu.Lock()
			state := "still running"
			if p.ended {
				state = fmt.Sprintf("exited: %v", p.err)
			}
			p.t.Fatalf("%s: no log %q within %v (%s)", p.name, msg, within, state)
		}
		p.cond.Wait()
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(within time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		p.t.Fatalf("%s did not exit within %v", p.name, within)
	}
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitOutput waits until the process has written want to stdout and
// returns all it wrote so far.
func (p *proc) waitOutput(within time.Duration, want string) string {
	p.t.Helper()
	timer := time.AfterFunc(within, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(within)
	p.mu.Lock()
	defer p.mu.Unlock()
	for !strings.Contains(p.stdout.String(), want) {
		if p.ended || time.Now().After(deadline) {
			p.t.Fatalf("%s did not print %q within %v; it printed:\n%s", p.name, want, within, p.stdout.String())
		}
		p.cond.Wait()
	}
	return p.stdout.String()
}

// output returns what the process wrote to stdout so far.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

// runCmd runs restpipe to completion and returns stdout, stderr and the
// exit code.
func runCmd(t testing.TB, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(restpipeBin(), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}
