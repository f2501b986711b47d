// Package hosttest holds the test helpers the daemon's packages share, as
// net/http/httptest does for net/http: waiting for a condition, a log sink
// safe for concurrent writes, and building the binaries a test runs. It is
// imported only by tests.
package hosttest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// WaitFor polls cond every 5 ms until it holds, and fails the test once
// within has passed without it, naming what it waited for.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitEvery(t, within, 5*time.Millisecond, what, cond)
}

// WaitEvery is WaitFor polling every interval, for a cond that costs more
// than a look at memory (an HTTP request, say).
func WaitEvery(t testing.TB, within, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(interval)
	}
}

// LogBuffer is a log sink safe for concurrent writes, for an hclog logger
// whose output a test reads. The zero value is ready to use.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines returns the complete lines written so far.
func (l *LogBuffer) Lines() []string {
	s := l.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}

// Build builds the main packages pkgs into dir, each binary named after
// its package's directory, with one go command so that the packages
// compile in parallel and share their dependencies' work. Extra go build
// flags (-ldflags ...) come first in flags. The go command's output goes to
// standard error.
func Build(dir string, flags []string, pkgs ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	args := append(append([]string{"build"}, flags...), "-o", dir+string(os.PathSeparator))
	cmd := exec.Command("go", append(args, pkgs...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w", strings.Join(append(args, pkgs...), " "), err)
	}
	return nil
}
