package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNewCADefaults(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	ca, err := NewCA(CAOptions{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Certificate()
	if got, want := c.Subject.CommonName, DefaultCACommonName; got != want {
		t.Errorf("CN = %q, want %q", got, want)
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("IsCA = %v, BasicConstraintsValid = %v, KeyUsage = %b; want a CA that signs certificates",
			c.IsCA, c.BasicConstraintsValid, c.KeyUsage)
	}
	if got, want := c.NotAfter.Sub(now), DefaultCAValidity-clockSkew; got != want {
		t.Errorf("NotAfter - now = %v, want %v", got, want)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	leaf, err := ca.IssueTLS("node")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now}); err != nil {
		t.Errorf("leaf does not verify against Pool(): %v", err)
	}

	ca2, err := NewCA(CAOptions{CommonName: "other", Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := ca2.Certificate().Subject.CommonName; got != "other" {
		t.Errorf("CN = %q, want %q", got, "other")
	}
	if _, err := NewCA(CAOptions{Validity: -time.Hour}); err == nil {
		t.Error("NewCA with negative validity: got no error")
	}
}

func TestInitCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki", "ca")
	ca, err := InitCA(dir, CAOptions{})
	if err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	for _, tc := range []struct {
		path string
		want os.FileMode
	}{
		{dir, os.ModeDir | 0o700},
		{filepath.Join(dir, "ca.crt"), 0o644},
		{filepath.Join(dir, "ca.key"), 0o600},
	} {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode(); got != tc.want {
			t.Errorf("mode of %s = %v, want %v", tc.path, got, tc.want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("%s holds %d entries, want 2 (no temporary files left)", dir, len(entries))
	}
	certBefore := readFile(t, filepath.Join(dir, "ca.crt"))
	keyBefore := readFile(t, filepath.Join(dir, "ca.key"))
	if !bytes.Equal(certBefore, ca.CertPEM()) {
		t.Error("ca.crt differs from CertPEM()")
	}

	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !loaded.Certificate().Equal(ca.Certificate()) {
		t.Error("LoadCA returned another certificate than InitCA wrote")
	}

	_, err = InitCA(dir, CAOptions{})
	wantErr(t, err, ErrExists, filepath.Join(dir, "ca.crt"))
	if !bytes.Equal(readFile(t, filepath.Join(dir, "ca.crt")), certBefore) ||
		!bytes.Equal(readFile(t, filepath.Join(dir, "ca.key")), keyBefore) {
		t.Error("second InitCA changed the CA files")
	}
}

func TestInitCARefusesAnyExistingFile(t *testing.T) {
	for _, existing := range []string{"ca.crt", "ca.key"} {
		t.Run(existing, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, existing)
			writeFile(t, path, []byte("precious"))
			_, err := InitCA(dir, CAOptions{})
			wantErr(t, err, ErrExists, path)
			if got := string(readFile(t, path)); got != "precious" {
				t.Errorf("%s = %q after InitCA, want it untouched", existing, got)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("%s holds %d entries, want only %s", dir, len(entries), existing)
			}
		})
	}
}

func TestLoadCAErrors(t *testing.T) {
	other := newTestCA(t)
	otherKey, err := encodeKey(other.key)
	if err != nil {
		t.Fatal(err)
	}
	leafCert, leafKey := issue(t, other, "leaf", LeafOptions{})
	tests := []struct {
		name   string
		files  map[string][]byte // written into the CA dir; nil means no file
		target error
		parts  []string
	}{
		{"empty dir", nil, ErrNoCA, []string{"run `restpipe pki init --dir"}},
		{"no key", map[string][]byte{"ca.crt": other.CertPEM()}, ErrNoCA, []string{"ca.key does not exist"}},
		{"no cert", map[string][]byte{"ca.key": otherKey}, ErrNoCA, []string{"ca.crt does not exist"}},
		{"garbage cert", map[string][]byte{"ca.crt": []byte("junk"), "ca.key": otherKey}, ErrBadPEM, []string{"ca.crt"}},
		{"garbage key", map[string][]byte{"ca.crt": other.CertPEM(), "ca.key": []byte("junk")}, ErrBadPEM, []string{"ca.key"}},
		{"key of another CA", map[string][]byte{"ca.crt": newTestCA(t).CertPEM(), "ca.key": otherKey}, ErrKeyMismatch, []string{"ca.key", "ca.crt"}},
		{"leaf as CA", map[string][]byte{"ca.crt": leafCert, "ca.key": leafKey}, nil, []string{"not a CA certificate"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range tc.files {
				writeFile(t, filepath.Join(dir, name), data)
			}
			_, err := LoadCA(dir)
			wantErr(t, err, tc.target, tc.parts...)
		})
	}
}
