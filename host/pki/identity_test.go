package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNewIdentity(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	certPEM, keyPEM := issue(t, ca, "node-b", LeafOptions{}, "10.1.2.3")
	id, err := NewIdentity(ca.CertPEM(), certPEM, keyPEM, now)
	if err != nil {
		t.Fatalf("NewIdentity: %v", err)
	}
	if id.Name != "node-b" {
		t.Errorf("Name = %q, want %q", id.Name, "node-b")
	}
	if id.Cert.Leaf != id.Leaf || id.Leaf == nil {
		t.Error("Cert.Leaf and Leaf differ or are nil")
	}
	if _, err := id.Leaf.Verify(x509.VerifyOptions{Roots: id.Roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("Leaf does not verify against Roots: %v", err)
	}

	// A CA bundle (old and new CA during a rotation) is accepted.
	bundle := append(newTestCA(t).CertPEM(), ca.CertPEM()...)
	if _, err := NewIdentity(bundle, certPEM, keyPEM, now); err != nil {
		t.Errorf("NewIdentity with a CA bundle: %v", err)
	}
}

func TestNewIdentityRefusals(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	now := time.Now()
	certPEM, keyPEM := issue(t, ca, "node", LeafOptions{})
	_, otherKey := issue(t, ca, "node", LeafOptions{})
	strangerCert, strangerKey := issue(t, other, "node", LeafOptions{})
	expiredCert, expiredKey := issue(t, ca, "node", LeafOptions{NotBefore: now.Add(-2 * time.Hour), Validity: time.Hour})
	futureCert, futureKey := issue(t, ca, "node", LeafOptions{NotBefore: now.Add(time.Hour)})
	badNameCert, badNameKey := rawLeaf(t, ca, "Not_A_Name", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
	serverOnlyCert, serverOnlyKey := rawLeaf(t, ca, "node", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})

	tests := []struct {
		name             string
		caPEM, cert, key []byte
		target           error
		parts            []string
	}{
		{"cert from another CA", ca.CertPEM(), strangerCert, strangerKey, ErrUntrusted, []string{"unknown authority"}},
		{"key of another cert", ca.CertPEM(), certPEM, otherKey, ErrKeyMismatch, []string{"key PEM", "certificate PEM"}},
		{"expired", ca.CertPEM(), expiredCert, expiredKey, ErrExpired,
			[]string{"expired at " + now.Add(-time.Hour).UTC().Format(time.RFC3339), "now " + now.UTC().Format(time.RFC3339)}},
		{"not yet valid", ca.CertPEM(), futureCert, futureKey, ErrNotYetValid,
			[]string{"valid from " + now.Add(time.Hour).UTC().Format(time.RFC3339)}},
		{"invalid node name", ca.CertPEM(), badNameCert, badNameKey, ErrBadName, []string{"Not_A_Name"}},
		{"server auth only", ca.CertPEM(), serverOnlyCert, serverOnlyKey, ErrUntrusted, []string{"client authentication"}},
		{"garbage CA", []byte("junk"), certPEM, keyPEM, ErrBadPEM, []string{"CA PEM"}},
		{"garbage cert", ca.CertPEM(), []byte("junk"), keyPEM, ErrBadPEM, []string{"certificate PEM"}},
		{"garbage key", ca.CertPEM(), certPEM, []byte("junk"), ErrBadPEM, []string{"key PEM"}},
		{"key for cert", ca.CertPEM(), keyPEM, keyPEM, ErrBadPEM, []string{`"PRIVATE KEY" block`}},
		{"cert for key", ca.CertPEM(), certPEM, certPEM, ErrBadPEM, []string{`"CERTIFICATE" block`}},
		{"truncated cert", ca.CertPEM(), certPEM[:len(certPEM)/2], keyPEM, ErrBadPEM, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewIdentity(tc.caPEM, tc.cert, tc.key, now)
			wantErr(t, err, tc.target, tc.parts...)
		})
	}
}

func TestLoadIdentityErrorsNameTheFile(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certPEM, keyPEM := issue(t, ca, "node", LeafOptions{})
	good := writeIdentity(t, dir, "node", ca.CertPEM(), certPEM, keyPEM)
	if _, err := LoadIdentity(good); err != nil {
		t.Fatalf("LoadIdentity(good): %v", err)
	}
	junk := filepath.Join(dir, "junk.pem")
	writeFile(t, junk, []byte("not PEM at all"))
	missing := filepath.Join(dir, "missing.pem")
	strangerCert, strangerKey := issue(t, newTestCA(t), "node", LeafOptions{})
	stranger := writeIdentity(t, dir, "stranger", nil, strangerCert, strangerKey)

	tests := []struct {
		name   string
		edit   func(f *Files)
		target error
		file   string
	}{
		{"missing CA", func(f *Files) { f.CA = missing }, os.ErrNotExist, missing},
		{"missing cert", func(f *Files) { f.Cert = missing }, os.ErrNotExist, missing},
		{"missing key", func(f *Files) { f.Key = missing }, os.ErrNotExist, missing},
		{"garbage CA", func(f *Files) { f.CA = junk }, ErrBadPEM, junk},
		{"garbage cert", func(f *Files) { f.Cert = junk }, ErrBadPEM, junk},
		{"garbage key", func(f *Files) { f.Key = junk }, ErrBadPEM, junk},
		{"other CA's cert", func(f *Files) { f.Cert, f.Key = stranger.Cert, stranger.Key }, ErrUntrusted, stranger.Cert},
		{"other cert's key", func(f *Files) { f.Key = stranger.Key }, ErrKeyMismatch, stranger.Key},
		{"no key file given", func(f *Files) { f.Key = "" }, nil, "no key file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := good
			tc.edit(&f)
			_, err := LoadIdentity(f)
			wantErr(t, err, tc.target, tc.file)
		})
	}
}

// rawLeaf returns a certificate signed by ca with the given CN, no SANs and
// extended key usages, which Issue would never make, and its key.
func rawLeaf(t testing.TB, ca *CA, cn string, eku []x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	_, keyPEM = issue(t, ca, "throwaway", LeafOptions{})
	key, err := parseKey(keyPEM, "key")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  eku,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return encodeCert(der), keyPEM
}
