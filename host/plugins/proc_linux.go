package plugins

import (
	"errors"
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
