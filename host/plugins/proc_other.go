//go:build !linux

package plugins

import "syscall"

// procAttr runs a plugin in its own process group.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// watchExit cannot wait for a process without reaping it here: the node
// learns of a plugin's exit when go-plugin has drained its output.
func watchExit(int) bool { return false }

// limitProcess applies no limits where Linux's are not available.
func limitProcess(int, int64, int) error { return nil }
