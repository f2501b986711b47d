package link

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"
)

// rawCA is a CA made with crypto/x509 directly, to issue certificates
// restpipe's own pki refuses to make (expired ones, unroutable names).
type rawCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newRawCA(t testing.TB) *rawCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "raw test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &rawCA{cert: cert, key: key}
}

func (ca *rawCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// leaf issues a client and server certificate with the given DNS names and
// validity window.
func (ca *rawCA) leaf(t testing.TB, dns []string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dns[0]},
		DNSNames: dns, NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestCertificateRefusals checks certificates that are signed by the right
// CA yet must not get a link: expired, not yet valid, and carrying a name
// the gateway could never route.
func TestCertificateRefusals(t *testing.T) {
	ca := newRawCA(t)
	now := time.Now()
	srvTLS := &tls.Config{
		MinVersion: tls.VersionTLS13, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool(),
		Certificates: []tls.Certificate{ca.leaf(t, []string{"server", "localhost"}, now.Add(-time.Hour), now.Add(time.Hour))},
	}
	srv := startServerWithTLS(t, srvTLS)
	tests := []struct {
		name string
		cert tls.Certificate
		want string
	}{
		{"expired", ca.leaf(t, []string{"a"}, now.Add(-2*time.Hour), now.Add(-time.Hour)), "expired"},
		{"not yet valid", ca.leaf(t, []string{"a"}, now.Add(time.Hour), now.Add(2*time.Hour)), "expired or is not yet valid"},
		{"name with a slash", ca.leaf(t, []string{"a/b"}, now.Add(-time.Hour), now.Add(time.Hour)), "only lower-case letters"},
		{"name with an underscore", ca.leaf(t, []string{"web_1"}, now.Add(-time.Hour), now.Add(time.Hour)), "only lower-case letters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.pool(), ServerName: "server", Certificates: []tls.Certificate{tt.cert}}
			c := &Client{cfg: ClientConfig{Config: DefaultConfig(), Addr: srv.addr, TLS: func() *tls.Config { return cfg }}}
			c.cfg.Handler = newNodeHandler("a")
			c.cfg.Dial = dialer.DialContext
			sess, err := c.connect(context.Background())
			if err == nil {
				sess.mux.Close()
				t.Fatal("connect succeeded")
			}
			waitFor(t, 2*time.Second, "the server's refusal to be logged", func() bool {
				return strings.Contains(srv.logs.String(), tt.want)
			})
			if n := len(srv.Sessions()); n != 0 {
				t.Errorf("sessions = %d, want 0", n)
			}
		})
	}
}

// startServerWithTLS starts a link server with a given TLS configuration.
func startServerWithTLS(t testing.TB, cfg *tls.Config) *testServer {
	t.Helper()
	return startServer(t, newPKI(t), func(c *ServerConfig) { c.TLS = cfg })
}
