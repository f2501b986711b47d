package plugins

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// procAttr runs a plugin in its own process group, killed by the kernel if
// the daemon dies. (Pdeathsig follows the OS thread that started the
// process; Go keeps those threads alive unless a goroutine locked to one
// exits, which this package never does.)
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// watchExit waits until process pid exits, without reaping it (go-plugin
// does, through os/exec), and reports true; false if it cannot tell.
func watchExit(pid int) bool {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		switch {
		case err == nil:
			return true
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ECHILD):
			return true // reaped already
		default:
			return false
		}
	}
}

// limitProcess applies a plugin's limits to its process, just started:
// RLIMIT_DATA of maxData bytes, and the nice value of each of its threads.
func limitProcess(pid int, maxData int64, nice int) error {
	if maxData > 0 {
		lim := &unix.Rlimit{Cur: uint64(maxData), Max: uint64(maxData)}
		if err := unix.Prlimit(pid, unix.RLIMIT_DATA, lim, nil); err != nil {
			return fmt.Errorf("limit the plugin's memory: %w", err)
		}
	}
	if nice > 0 {
		// Twice: a thread started while the first pass ran inherits its
		// creator's value, which the second pass sets if the first missed it.
		for range 2 {
			tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
			if err != nil {
				return fmt.Errorf("lower the plugin's priority: %w", err)
			}
			for _, t := range tasks {
				if tid, err := strconv.Atoi(t.Name()); err == nil {
					_ = unix.Setpriority(unix.PRIO_PROCESS, tid, nice)
				}
			}
		}
	}
	return nil
}
