//go:build unix

package plugins

import (
	"os"
	"syscall"
)

// inode returns the file's inode number, so a file replaced by rename is
// seen as changed even with the same size and time.
func inode(st os.FileInfo) uint64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return uint64(s.Ino)
	}
	return 0
}
