package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
)

// initTestCA creates a CA in a new directory and returns the directory.
func initTestCA(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := InitCA(dir, CAOptions{}); err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	return dir
}

func TestIssueFiles(t *testing.T) {
	dir := initTestCA(t)
	hosts := []string{"node-a.example.com", "127.0.0.1", "::1", "node-a", "10.0.0.7", "127.0.0.1"}
	certFile, keyFile, err := IssueFiles(dir, "node-a", hosts, LeafOptions{})
	if err != nil {
		t.Fatalf("IssueFiles: %v", err)
	}
	if want := filepath.Join(dir, "node-a.crt"); certFile != want {
		t.Errorf("certFile = %q, want %q", certFile, want)
	}
	if want := filepath.Join(dir, "node-a.key"); keyFile != want {
		t.Errorf("keyFile = %q, want %q", keyFile, want)
	}
	for _, tc := range []struct {
		path string
		want os.FileMode
	}{{certFile, 0o644}, {keyFile, 0o600}} {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != tc.want {
			t.Errorf("mode of %s = %v, want %v", tc.path, got, tc.want)
		}
	}

	id, err := LoadIdentity(Files{CA: filepath.Join(dir, "ca.crt"), Cert: certFile, Key: keyFile})
	if err != nil {
		t.Fatalf("LoadIdentity: %v", err)
	}
	c := id.Leaf
	if got, want := c.DNSNames, []string{"node-a", "node-a.example.com"}; !slices.Equal(got, want) {
		t.Errorf("DNSNames = %q, want %q", got, want)
	}
	wantIPs := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.0.0.7")}
	if !slices.EqualFunc(c.IPAddresses, wantIPs, net.IP.Equal) {
		t.Errorf("IPAddresses = %v, want %v", c.IPAddresses, wantIPs)
	}
	if got := c.Subject.CommonName; got != "node-a" {
		t.Errorf("CN = %q, want %q", got, "node-a")
	}
	if id.Name != "node-a" {
		t.Errorf("Name = %q, want %q", id.Name, "node-a")
	}
	wantEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if !slices.Equal(c.ExtKeyUsage, wantEKU) {
		t.Errorf("ExtKeyUsage = %v, want %v", c.ExtKeyUsage, wantEKU)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature || c.IsCA {
		t.Errorf("KeyUsage = %b, IsCA = %v; want DigitalSignature only, not a CA", c.KeyUsage, c.IsCA)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	if got := c.NotAfter.Sub(c.NotBefore); got != DefaultLeafValidity {
		t.Errorf("validity = %v, want %v", got, DefaultLeafValidity)
	}
	if !strings.HasPrefix(string(readFile(t, keyFile)), "-----BEGIN PRIVATE KEY-----") {
		t.Error("key file is not a PKCS#8 PRIVATE KEY block")
	}

	certBefore, keyBefore := readFile(t, certFile), readFile(t, keyFile)
	_, _, err = IssueFiles(dir, "node-a", nil, LeafOptions{})
	wantErr(t, err, ErrExists, certFile)
	if !bytes.Equal(readFile(t, certFile), certBefore) || !bytes.Equal(readFile(t, keyFile), keyBefore) {
		t.Error("second IssueFiles changed the files")
	}
}

func TestIssueFilesRefusesExistingKey(t *testing.T) {
	dir := initTestCA(t)
	keyFile := filepath.Join(dir, "b.key")
	writeFile(t, keyFile, []byte("precious"))
	_, _, err := IssueFiles(dir, "b", nil, LeafOptions{})
	wantErr(t, err, ErrExists, keyFile)
	if _, err := os.Stat(filepath.Join(dir, "b.crt")); !os.IsNotExist(err) {
		t.Errorf("b.crt was written: stat error %v", err)
	}
	if got := string(readFile(t, keyFile)); got != "precious" {
		t.Errorf("b.key = %q, want it untouched", got)
	}
}

func TestIssueFilesNoCA(t *testing.T) {
	dir := t.TempDir()
	_, _, err := IssueFiles(dir, "a", nil, LeafOptions{})
	wantErr(t, err, ErrNoCA, "restpipe pki init --dir "+dir)
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("IssueFiles without a CA wrote %d files", len(entries))
	}
}

func TestIssueBadNames(t *testing.T) {
	dir := initTestCA(t)
	long := strings.Repeat(strings.Repeat("a", 63)+".", 4)[:254]
	for _, name := range []string{"", "UPPER", "a/b", "-x", "x-", "a..b", "../ca", "a b", long} {
		t.Run(name, func(t *testing.T) {
			_, _, err := IssueFiles(dir, name, nil, LeafOptions{})
			quoted := `"` + name + `"`
			wantErr(t, err, ErrBadName, quoted)
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("bad names left %d files in the CA dir, want only ca.crt and ca.key", len(entries))
	}
}

func TestIssueBadHosts(t *testing.T) {
	ca := newTestCA(t)
	for _, h := range []string{"fe80::1%eth0", "Host.example", "*.example.com", "[::1]", "a_b", "", "1.2.3.4:80"} {
		t.Run(h, func(t *testing.T) {
			_, _, err := ca.Issue("a", []string{h}, LeafOptions{})
			wantErr(t, err, ErrBadName, `host "`+h+`"`)
		})
	}
}

func TestIssueValidity(t *testing.T) {
	ca := newTestCA(t)
	nb := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	certPEM, _ := issue(t, ca, "old", LeafOptions{NotBefore: nb, Validity: time.Hour})
	certs, err := parseCerts(certPEM, "cert")
	if err != nil {
		t.Fatal(err)
	}
	if got := certs[0].NotBefore; !got.Equal(nb) {
		t.Errorf("NotBefore = %v, want %v", got, nb)
	}
	if got, want := certs[0].NotAfter, nb.Add(time.Hour); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}
	if _, _, err := ca.Issue("a", nil, LeafOptions{Validity: -time.Second}); err == nil {
		t.Error("Issue with negative validity: got no error")
	}
}

func TestIssueUniqueSerials(t *testing.T) {
	ca := newTestCA(t)
	a, err := ca.IssueTLS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.IssueTLS("a")
	if err != nil {
		t.Fatal(err)
	}
	if a.Leaf.SerialNumber.Cmp(b.Leaf.SerialNumber) == 0 {
		t.Error("two certificates got the same serial number")
	}
	if a.Leaf.SerialNumber.Sign() <= 0 || a.Leaf.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v is not a positive 128-bit number", a.Leaf.SerialNumber)
	}
}

func TestIssueServerRole(t *testing.T) {
	dir := initTestCA(t)
	for _, tc := range []struct {
		name string
		role bool
	}{{"plain", false}, {"srv-1", true}} {
		certFile, keyFile, err := IssueFiles(dir, tc.name, nil, LeafOptions{ServerRole: tc.role})
		if err != nil {
			t.Fatalf("IssueFiles(%s): %v", tc.name, err)
		}
		id, err := LoadIdentity(Files{CA: filepath.Join(dir, "ca.crt"), Cert: certFile, Key: keyFile})
		if err != nil {
			t.Fatalf("LoadIdentity(%s): %v", tc.name, err)
		}
		if id.ServerRole != tc.role || host.HasServerRole(id.Leaf) != tc.role {
			t.Errorf("%s: ServerRole = %v, HasServerRole = %v, want %v", tc.name, id.ServerRole, host.HasServerRole(id.Leaf), tc.role)
		}
		if got, want := len(id.Leaf.URIs), map[bool]int{false: 0, true: 1}[tc.role]; got != want {
			t.Errorf("%s: %d URI SANs, want %d", tc.name, got, want)
		}
		// The role changes nothing else: the name and both usages stay.
		if id.Name != tc.name {
			t.Errorf("%s: name %q", tc.name, id.Name)
		}
	}
	if host.HasServerRole(nil) {
		t.Error("HasServerRole(nil) = true")
	}
}
