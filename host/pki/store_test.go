package pki

import (
	"crypto/tls"
	"crypto/x509"
	"sync"
	"testing"
	"time"
)

func TestHandshake(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	server := NewStaticStore(newTestIdentity(t, ca, "server", "127.0.0.1", "::1"))
	client := NewStaticStore(newTestIdentity(t, ca, "client-a"))
	stranger := NewStaticStore(newTestIdentity(t, other, "client-a"))
	badNameCert, badNameKey := rawLeaf(t, ca, "Bad_Name", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	badName, err := tls.X509KeyPair(badNameCert, badNameKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := startEcho(t, server.ServerTLS())

	tests := []struct {
		name    string
		client  func() *tls.Config
		wantErr string // "" for success
	}{
		{"same CA", func() *tls.Config { return client.ClientTLS("server") }, ""},
		{"same CA by IP SAN", func() *tls.Config { return client.ClientTLS("127.0.0.1") }, ""},
		{"client from another CA", func() *tls.Config {
			c := stranger.ClientTLS("server")
			c.RootCAs = ca.Pool() // it trusts the server, the server does not trust it
			return c
		}, "unknown certificate authority"},
		{"server from another CA", func() *tls.Config { return stranger.ClientTLS("server") }, "unknown authority"},
		{"server name mismatch", func() *tls.Config { return client.ClientTLS("client-a") }, "not client-a"},
		{"IP not in server cert", func() *tls.Config { return client.ClientTLS("127.0.0.2") }, "127.0.0.2"},
		{"client offers TLS 1.2 only", func() *tls.Config {
			c := client.ClientTLS("server")
			c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			return c
		}, "protocol version"},
		{"no client certificate", func() *tls.Config {
			c := client.ClientTLS("server")
			c.Certificates = nil
			return c
		}, "certificate required"},
		{"client certificate without a node name", func() *tls.Config {
			c := client.ClientTLS("server")
			c.Certificates = []tls.Certificate{badName}
			return c
		}, "bad certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := srv.dial(t, tc.client())
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				st := conn.ConnectionState()
				if st.Version != tls.VersionTLS13 {
					t.Errorf("version = %x, want TLS 1.3", st.Version)
				}
				if got := st.PeerCertificates[0].Subject.CommonName; got != "server" {
					t.Errorf("server CN = %q, want %q", got, "server")
				}
				if st.CurveID != tls.SecP256r1MLKEM768 {
					t.Errorf("key exchange = %v, want SecP256r1MLKEM768", st.CurveID)
				}
				return
			}
			wantErr(t, err, nil, tc.wantErr)
		})
	}
}

// leafSerial returns the serial number of the certificate c's peer presented.
func leafSerial(t testing.TB, c *tls.Conn) string {
	t.Helper()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestStoreReload(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	dir := t.TempDir()
	cert1, key1 := issue(t, ca, "server", LeafOptions{})
	files := writeIdentity(t, dir, "server", ca.CertPEM(), cert1, key1)
	store, err := NewStore(files)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	client := NewStaticStore(newTestIdentity(t, ca, "client-a"))
	srv := startEcho(t, store.ServerTLS())

	dial := func(t *testing.T) *tls.Conn {
		t.Helper()
		c, err := srv.dial(t, client.ClientTLS("server"))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		return c
	}
	before := dial(t)
	serial1 := leafSerial(t, before)
	if got := store.Identity().Leaf.SerialNumber.String(); got != serial1 {
		t.Fatalf("server presented serial %s, Identity() has %s", serial1, got)
	}

	cert2, key2 := issue(t, ca, "server", LeafOptions{})
	writeFile(t, files.Cert, cert2)
	writeFile(t, files.Key, key2)
	if err := store.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	serial2 := store.Identity().Leaf.SerialNumber.String()
	if serial2 == serial1 {
		t.Fatal("Identity() unchanged after Reload")
	}
	after := dial(t)
	if got := leafSerial(t, after); got != serial2 {
		t.Errorf("after Reload the server presented serial %s, want %s", got, serial2)
	}
	if err := echo(before); err != nil {
		t.Errorf("connection made before Reload: %v", err)
	}

	expiredCert, expiredKey := issue(t, ca, "server", LeafOptions{NotBefore: time.Now().Add(-2 * time.Hour), Validity: time.Hour})
	strangerCert, strangerKey := issue(t, other, "server", LeafOptions{})
	cert3, _ := issue(t, ca, "server", LeafOptions{})
	bad := []struct {
		name      string
		cert, key []byte
		target    error
	}{
		{"expired", expiredCert, expiredKey, ErrExpired},
		{"other CA", strangerCert, strangerKey, ErrUntrusted},
		{"new cert, old key", cert3, key2, ErrKeyMismatch},
		{"garbage", []byte("junk"), []byte("junk"), ErrBadPEM},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			writeFile(t, files.Cert, tc.cert)
			writeFile(t, files.Key, tc.key)
			wantErr(t, store.Reload(), tc.target, files.Cert)
			if got := store.Identity().Leaf.SerialNumber.String(); got != serial2 {
				t.Errorf("Identity() serial = %s after a failed Reload, want %s", got, serial2)
			}
			if got := leafSerial(t, dial(t)); got != serial2 {
				t.Errorf("server presented serial %s after a failed Reload, want %s", got, serial2)
			}
		})
	}
	if err := echo(before); err != nil {
		t.Errorf("connection made before the failed Reloads: %v", err)
	}
}

func TestStoreReloadNewCA(t *testing.T) {
	oldCA, newCA := newTestCA(t), newTestCA(t)
	dir := t.TempDir()
	cert, key := issue(t, oldCA, "server", LeafOptions{})
	files := writeIdentity(t, dir, "server", oldCA.CertPEM(), cert, key)
	store, err := NewStore(files)
	if err != nil {
		t.Fatal(err)
	}
	oldClient := NewStaticStore(newTestIdentity(t, oldCA, "client-a"))
	newClient := NewStaticStore(newTestIdentity(t, newCA, "client-b"))
	srv := startEcho(t, store.ServerTLS())
	before, err := srv.dial(t, oldClient.ClientTLS("server"))
	if err != nil {
		t.Fatal(err)
	}

	cert, key = issue(t, newCA, "server", LeafOptions{})
	writeFile(t, files.CA, newCA.CertPEM())
	writeFile(t, files.Cert, cert)
	writeFile(t, files.Key, key)
	if err := store.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if _, err := srv.dial(t, newClient.ClientTLS("server")); err != nil {
		t.Errorf("client of the new CA: %v", err)
	}
	oldCfg := oldClient.ClientTLS("server")
	oldCfg.RootCAs = newCA.Pool()
	_, err = srv.dial(t, oldCfg)
	wantErr(t, err, nil, "unknown certificate authority")
	if err := echo(before); err != nil {
		t.Errorf("connection made before Reload: %v", err)
	}
}

func TestStaticStoreReload(t *testing.T) {
	s := NewStaticStore(newTestIdentity(t, newTestCA(t), "a"))
	id := s.Identity()
	wantErr(t, s.Reload(), ErrStatic)
	if s.Identity() != id {
		t.Error("Identity() changed")
	}
}

func TestNewStoreError(t *testing.T) {
	_, err := NewStore(Files{CA: "/nonexistent/ca.crt", Cert: "/nonexistent/a.crt", Key: "/nonexistent/a.key"})
	wantErr(t, err, nil, "/nonexistent/ca.crt")
}

func TestStoreConcurrentReload(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, key := issue(t, ca, "server", LeafOptions{})
	files := writeIdentity(t, dir, "server", ca.CertPEM(), cert, key)
	store, err := NewStore(files)
	if err != nil {
		t.Fatal(err)
	}
	client := NewStaticStore(newTestIdentity(t, ca, "client-a"))
	srv := startEcho(t, store.ServerTLS())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				if err := store.Reload(); err != nil {
					t.Errorf("Reload: %v", err)
				}
				_ = store.Identity().Name
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			conn, err := srv.dial(t, client.ClientTLS("server"))
			if err != nil {
				t.Errorf("dial during Reload: %v", err)
				return
			}
			conn.Close()
		})
	}
	wg.Wait()
}
