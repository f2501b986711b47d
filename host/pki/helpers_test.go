package pki

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// newTestCA returns a new in-memory CA.
func newTestCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCA(CAOptions{})
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

// issue returns a certificate and key for name and hosts signed by ca.
func issue(t testing.TB, ca *CA, name string, opts LeafOptions, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(name, hosts, opts)
	if err != nil {
		t.Fatalf("Issue(%q, %q): %v", name, hosts, err)
	}
	return certPEM, keyPEM
}

// newTestIdentity returns an identity for name and hosts signed by ca.
func newTestIdentity(t testing.TB, ca *CA, name string, hosts ...string) *Identity {
	t.Helper()
	certPEM, keyPEM := issue(t, ca, name, LeafOptions{}, hosts...)
	id, err := NewIdentity(ca.CertPEM(), certPEM, keyPEM, time.Now())
	if err != nil {
		t.Fatalf("NewIdentity(%q): %v", name, err)
	}
	return id
}

// writeIdentity writes ca's certificate and the given certificate and key
// to files in dir named after name, and returns their names.
func writeIdentity(t testing.TB, dir, name string, caPEM, certPEM, keyPEM []byte) Files {
	t.Helper()
	f := Files{
		CA:   filepath.Join(dir, name+"-ca.crt"),
		Cert: filepath.Join(dir, name+".crt"),
		Key:  filepath.Join(dir, name+".key"),
	}
	writeFile(t, f.CA, caPEM)
	writeFile(t, f.Cert, certPEM)
	writeFile(t, f.Key, keyPEM)
	return f
}

// writeFile writes data to path, replacing it.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// readFile returns the contents of path.
func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantErr fails t unless err wraps target (if not nil) and its message
// contains each of parts.
func wantErr(t testing.TB, err, target error, parts ...string) {
	t.Helper()
	if err == nil {
		if target != nil {
			t.Fatalf("got no error, want one wrapping %q", target)
		}
		t.Fatalf("got no error, want one mentioning %q", parts)
	}
	if target != nil && !errors.Is(err, target) {
		t.Errorf("error %q does not wrap %q", err, target)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}

// echoServer is a TLS server on a loopback port that echoes every byte it
// reads on each connection.
type echoServer struct {
	addr string

	mu        sync.Mutex
	conns     []net.Conn
	handshake []error // every server-side handshake error, in order
}

// startEcho starts an echo server using cfg; it is stopped, and all its
// goroutines waited for, when the test ends.
func startEcho(t testing.TB, cfg *tls.Config) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(c, cfg)
			s.mu.Lock()
			s.conns = append(s.conns, tc)
			s.mu.Unlock()
			wg.Go(func() {
				defer tc.Close()
				if err := tc.Handshake(); err != nil {
					s.mu.Lock()
					s.handshake = append(s.handshake, err)
					s.mu.Unlock()
					return
				}
				io.Copy(tc, tc)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	})
	return s
}

// dial connects to s with cfg and does one echo exchange, which is where a
// TLS 1.3 client learns that the server refused its certificate. The
// connection is closed when the test ends. dial may be called from any
// goroutine.
func (s *echoServer) dial(t testing.TB, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, cfg)
	t.Cleanup(func() { tc.Close() })
	// A deadline, not a sleep: it only bounds a broken test.
	if err := tc.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return nil, err
	}
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	if err := echo(tc); err != nil {
		return nil, err
	}
	return tc, nil
}

// echo writes a message on c and reads it back.
func echo(c io.ReadWriter) error {
	msg := []byte("ping")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo mismatch")
	}
	return nil
}
