package eventpath

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// checkPeer refuses a Unix connection from another user than this
// process's (root excepted), as the kernel reports it (SO_PEERCRED). The
// socket's 0700 directory already keeps other users out; this holds even
// when that directory's mode is loosened.
func checkPeer(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("event connection: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("event connection: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("event connection: read peer credentials: %w", cerr)
	}
	if me := uint32(os.Getuid()); cred.Uid != me && cred.Uid != 0 {
		return fmt.Errorf("event connection refused: from user %d (pid %d), this plugin runs as user %d", cred.Uid, cred.Pid, me)
	}
	return nil
}

// hungUp reports whether the other end of a Unix connection has closed
// it, even while unread data is still queued (POLLRDHUP), without reading.
func hungUp(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	_ = raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			gone = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return gone
}
