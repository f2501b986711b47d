//go:build !linux

package plugins

import "syscall"

// procAttr runs a plugin in its own process group.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
