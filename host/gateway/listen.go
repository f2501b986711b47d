package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Listen opens the gateway's listener on addr: "unix:/path/to.sock" for a
// Unix socket (mode 0660; a stale socket file left by a dead node is
// replaced, a live one is an error), anything else a TCP address. At most
// maxConns connections are served at once (0: no limit): a new caller
// beyond it sheds the connection idle the longest, or, when none is idle,
// waits in the kernel's accept queue (see limitListener; serve the
// listener with HTTPServer, which reports idleness to it).
func Listen(addr string, maxConns int) (net.Listener, error) {
	var ln net.Listener
	var err error
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		ln, err = listenUnix(path)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	if maxConns > 0 {
		ln = newLimitListener(ln, maxConns)
	}
	return ln, nil
}

func listenUnix(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("unix: socket path is empty")
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another process is serving on this socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

// HTTPServer returns the http.Server to serve g on ln with: headers must
// arrive within 10s and stay under 1 MiB (else 431), idle keep-alive
// connections close after 2 minutes (sooner when new callers need their
// place, see Listen); bodies may stream for as long as their events'
// deadlines allow.
func (g *Gateway) HTTPServer(ln net.Listener) *http.Server {
	var connState func(net.Conn, http.ConnState)
	if l, ok := ln.(*limitListener); ok {
		connState = l.connState
	}
	return &http.Server{
		ConnState:         connState,
		Handler:           g,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          g.log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
}
