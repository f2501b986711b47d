package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/dispatch"
	"github.com/restpipe/restpipe/host/hosttest"
	"github.com/restpipe/restpipe/host/internal/hopbench"
)

// bins holds the plugin binaries built once for this test run.
var bins string

func TestMain(m *testing.M) {
	hopbench.MaybeChild()
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "restpipe-plugins-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		bins = dir
		// One go command for the plugins: they compile in parallel.
		pkgs := []string{"../../testdata/plugins/misbehave"}
		for _, name := range []string{"time", "cat", "echo", "files"} {
			pkgs = append(pkgs, "../../plugins/"+name)
		}
		if err := hosttest.Build(dir, nil, pkgs...); err != nil {
			fmt.Fprintln(os.Stderr, "build the test plugins:", err)
			return 1
		}
		if err := hosttest.Build(filepath.Join(dir, "v2"), []string{"-ldflags", "-X main.version=2"}, "../../testdata/plugins/misbehave"); err != nil {
			fmt.Fprintln(os.Stderr, "build the test plugins:", err)
			return 1
		}
		if err := os.Rename(filepath.Join(dir, "v2", "misbehave"), filepath.Join(dir, "misbehave-v2")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}())
}

// bin returns the path of a built test binary.
func bin(name string) string { return filepath.Join(bins, name) }

// logBuffer collects log output for assertions.
type logBuffer struct {
	t    testing.TB
	mu   sync.Mutex
	buf  bytes.Buffer
	cond *sync.Cond
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	b.cond.Broadcast()
	return len(p), nil
}

// wait waits for a log line containing every part.
func (b *logBuffer) wait(within time.Duration, parts ...string) string {
	b.t.Helper()
	deadline := time.Now().Add(within)
	timer := time.AfterFunc(within, func() { b.mu.Lock(); b.cond.Broadcast(); b.mu.Unlock() })
	defer timer.Stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
	lines:
		for _, line := range strings.Split(b.buf.String(), "\n") {
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			return line
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("no log line with %q within %v; log:\n%s", parts, within, b.buf.String())
		}
		b.cond.Wait()
	}
}

// has reports whether a log line contains every part.
func (b *logBuffer) has(parts ...string) bool { return b.count(parts...) > 0 }

// count returns the number of log lines containing every part.
func (b *logBuffer) count(parts ...string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
lines:
	for _, line := range strings.Split(b.buf.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue lines
			}
		}
		n++
	}
	return n
}

// env is a plugins directory with a running Manager and route table.
type env struct {
	t     testing.TB
	dir   string
	table *dispatch.Table
	m     *Manager
	logs  *logBuffer
	stop  func()
}

func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	logs := &logBuffer{t: t}
	logs.cond = sync.NewCond(&logs.mu)
	e := &env{t: t, dir: t.TempDir(), logs: logs}
	var err error
	e.table, err = dispatch.New(dispatch.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Dir = e.dir
	cfg.Node = host.Node{Role: host.RoleServer, Name: "srv"}
	cfg.Routes = e.table
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "plugins", Level: hclog.Debug, Output: logs})
	cfg.Settle = 100 * time.Millisecond
	cfg.MinRestart = 20 * time.Millisecond
	cfg.MaxRestart = 200 * time.Millisecond
	cfg.StartTimeout = 15 * time.Second // a Python start on a loaded machine took over 5 s
	if mod != nil {
		mod(&cfg)
	}
	e.m, err = New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

// start runs the manager until the test ends and waits for the first
// scan's plugins to have started once.
func (e *env) start() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.m.Run(ctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run() = %v", err)
			}
		})
	}
	e.t.Cleanup(func() {
		pids := e.pids()
		e.stop()
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil {
				e.t.Errorf("plugin process %d still alive after Run returned", pid)
			}
		}
		if e.t.Failed() {
			e.t.Logf("log:\n%s", e.logs.buf.String())
		}
	})
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if err := e.m.WaitStarted(wctx); err != nil {
		e.t.Fatalf("WaitStarted: %v", err)
	}
}

// pids returns the running plugin processes.
func (e *env) pids() []int {
	var out []int
	for _, st := range e.m.Status() {
		if st.PID > 0 {
			out = append(out, st.PID)
		}
	}
	return out
}

// install puts binary src into the plugins directory as name, atomically
// (a temporary name, then a rename), as the docs recommend.
func (e *env) install(src, name string) {
	e.t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		e.t.Fatal(err)
	}
	tmp := filepath.Join(e.dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(e.dir, name)); err != nil {
		e.t.Fatal(err)
	}
}

// status returns the status of plugin file.
func (e *env) status(file string) (Status, bool) {
	for _, st := range e.m.Status() {
		if st.File == file {
			return st, true
		}
	}
	return Status{}, false
}

// waitState waits until plugin file is in state.
func (e *env) waitState(file, state string, within time.Duration) Status {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, ok := e.status(file)
		if ok && st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("plugin %s: state %q (%+v), want %q within %v", file, st.State, st, state, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// call sends an event through the route table and reads the reply.
func (e *env) call(ctx context.Context, verb, noun string, body []byte, args ...string) (*host.Reply, []byte, error) {
	ev := &host.Event{ID: "t", Verb: verb, Noun: noun, Args: args, Peer: "peer1"}
	if body != nil {
		ev.Body, ev.Size, ev.ContentType = bytes.NewReader(body), int64(len(body)), "application/octet-stream"
	}
	rep, err := e.table.Handle(ctx, ev)
	if err != nil {
		return nil, nil, err
	}
	defer rep.Close()
	b, err := io.ReadAll(rep.Body)
	return rep, b, err
}

// get calls verb get and decodes a JSON reply.
func (e *env) get(noun string, args ...string) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := e.call(ctx, "get", noun, nil, args...)
	if err != nil {
		return nil, err
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("decode %q: %w", b, err)
	}
	return v, nil
}

// wantKind fails unless err is an *host.Error of kind k mentioning text.
func wantKind(t testing.TB, err error, k host.Kind, text string) {
	t.Helper()
	var he *host.Error
	if !errors.As(err, &he) || he.Kind != k || !strings.Contains(he.Message, text) {
		t.Fatalf("error = %v, want kind %s mentioning %q", err, k, text)
	}
}

var syscallZero = syscall.Signal(0)

// String returns everything logged so far.
func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
