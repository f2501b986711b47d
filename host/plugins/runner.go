package plugins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin/runner"
)

// procRunner runs one plugin process for go-plugin. Unlike go-plugin's own
// runner it tells us when the process exits (exited), runs the plugin in
// its own process group so that killing it also kills what it started, and
// asks the kernel to kill the plugin if the daemon dies (Linux).
//
// It watches the plugin process itself (watchExit), not its output:
// go-plugin waits for the end of the plugin's stdout and stderr before it
// reaps the process, and a child the plugin started may hold those pipes
// for as long as it lives. When the plugin process exits, the runner says
// so at once, kills its process group, and, if the pipes are still open a
// moment later (a child left the group), closes them itself.
type procRunner struct {
	log    hclog.Logger
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stderr io.ReadCloser
	exited chan struct{} // closed when the plugin process has exited
	waited chan struct{} // closed when go-plugin has reaped it (Wait)
	pid    atomic.Int64  // set once started; Kill may read it from another goroutine

	exitOnce sync.Once

	maxData int64 // limits applied after start (see limitProcess)
	nice    int
}

// pipeGrace is how long the pipes of an exited plugin may stay open (its
// output draining into the log) before the runner closes them.
const pipeGrace = time.Second

var _ runner.Runner = (*procRunner)(nil)

func newProcRunner(log hclog.Logger, cmd *exec.Cmd) (*procRunner, error) {
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = procAttr()
	return &procRunner{log: log, cmd: cmd, stdout: stdout, stderr: newStderrGuard(stderr), exited: make(chan struct{}), waited: make(chan struct{})}, nil
}

// markExited closes exited, once.
func (r *procRunner) markExited() { r.exitOnce.Do(func() { close(r.exited) }) }

// afterExit runs once the plugin process has exited: it kills what is left
// of its process group, and closes the pipes a stray child keeps open.
func (r *procRunner) afterExit() {
	r.markExited()
	if pid := int(r.pid.Load()); pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	t := time.NewTimer(pipeGrace)
	defer t.Stop()
	select {
	case <-r.waited:
	case <-t.C:
		r.log.Warn("plugin exited but its output stays open (a process it started holds it); closing it", "pid", r.pid.Load())
		_ = r.stdout.Close()
		_ = r.stderr.Close()
	}
}

func (r *procRunner) Start(context.Context) error {
	if err := r.cmd.Start(); err != nil {
		r.markExited()
		close(r.waited)
		return err
	}
	r.pid.Store(int64(r.cmd.Process.Pid))
	r.log.Debug("plugin process started", "path", r.cmd.Path, "pid", r.cmd.Process.Pid)
	if err := limitProcess(r.cmd.Process.Pid, r.maxData, r.nice); err != nil {
		r.log.Warn("plugin limits not applied", "error", err)
	}
	go func() {
		if watchExit(r.cmd.Process.Pid) {
			r.afterExit()
		}
	}()
	return nil
}

// Wait is called once by go-plugin, after the process's output is drained
// (or closed by afterExit).
func (r *procRunner) Wait(context.Context) error {
	err := r.cmd.Wait()
	close(r.waited)
	r.markExited()
	return err
}

// Kill kills the plugin's whole process group.
func (r *procRunner) Kill(context.Context) error {
	pid := int(r.pid.Load())
	if pid <= 0 {
		return nil
	}
	err := syscall.Kill(-pid, syscall.SIGKILL)
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill plugin process group %d: %w", pid, err)
	}
	return nil
}

func (r *procRunner) Stdout() io.ReadCloser { return r.stdout }
func (r *procRunner) Stderr() io.ReadCloser { return r.stderr }
func (r *procRunner) Name() string          { return r.cmd.Path }
func (r *procRunner) ID() string            { return strconv.FormatInt(r.pid.Load(), 10) }

func (r *procRunner) Diagnose(context.Context) string {
	st, err := os.Stat(r.cmd.Path)
	switch {
	case err != nil:
		return fmt.Sprintf("the plugin file cannot be read: %v", err)
	case st.Mode().Perm()&0o111 == 0:
		return "the plugin file is not executable"
	}
	return "the plugin must be built with restpipe's plugin SDK and call Serve, and print nothing to stdout before it"
}

func (r *procRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

func (r *procRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}
