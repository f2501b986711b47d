//go:build unix

package pluginsdk

import (
	"os"

	"golang.org/x/sys/unix"
)

// keepStdoutForHandshake moves the process's file descriptor 1, the pipe
// go-plugin reads its handshake from, out of everyone else's reach: os.Stdout
// keeps a private duplicate for go-plugin, and descriptor 1 becomes a copy
// of standard error. Whatever else writes to descriptor 1 (C code, a child
// process) ends up in the node's log instead of corrupting the protocol.
func keepStdoutForHandshake() {
	fd, err := unix.Dup(1)
	if err != nil {
		return
	}
	if err := dupOnto(2, 1); err != nil {
		unix.Close(fd)
		return
	}
	unix.CloseOnExec(fd)
	os.Stdout = os.NewFile(uintptr(fd), "/dev/stdout")
}
