package plugins

import "syscall"

// procAttr runs a plugin in its own process group, killed by the kernel if
// the daemon dies. (Pdeathsig follows the OS thread that started the
// process; Go keeps those threads alive unless a goroutine locked to one
// exits, which this package never does.)
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
