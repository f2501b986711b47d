package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPKICommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")

	out, errOut, code := runCmd(t, nil, "pki", "init", "--dir", dir)
	if code != 0 || !strings.Contains(out, "created CA") {
		t.Fatalf("pki init: code %d, out %q, err %q", code, out, errOut)
	}
	caKey := mustRead(t, filepath.Join(dir, "ca.key"))
	if st, _ := os.Stat(filepath.Join(dir, "ca.key")); st.Mode().Perm() != 0o600 {
		t.Errorf("ca.key mode = %v, want 0600", st.Mode().Perm())
	}

	// A second init refuses and leaves the key alone.
	_, errOut, code = runCmd(t, nil, "pki", "init", "--dir", dir)
	if code != 1 || !strings.Contains(errOut, "refusing to overwrite") {
		t.Errorf("second pki init: code %d, stderr %q; want a refusal", code, errOut)
	}
	if got := mustRead(t, filepath.Join(dir, "ca.key")); string(got) != string(caKey) {
		t.Error("second pki init changed ca.key")
	}

	_, errOut, code = runCmd(t, nil, "pki", "issue", "--dir", dir, "--name", "web1", "--host", "10.0.0.5", "--host", "web1.example.com")
	if code != 0 {
		t.Fatalf("pki issue: code %d, stderr %q", code, errOut)
	}
	block, _ := pem.Decode(mustRead(t, filepath.Join(dir, "web1.crt")))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.DNSNames) != 2 || cert.DNSNames[0] != "web1" || cert.DNSNames[1] != "web1.example.com" ||
		len(cert.IPAddresses) != 1 || cert.IPAddresses[0].String() != "10.0.0.5" {
		t.Errorf("SANs = %v %v, want web1 first, then the hosts", cert.DNSNames, cert.IPAddresses)
	}
	if st, _ := os.Stat(filepath.Join(dir, "web1.key")); st.Mode().Perm() != 0o600 {
		t.Errorf("web1.key mode = %v, want 0600", st.Mode().Perm())
	}

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"issue twice", []string{"pki", "issue", "--dir", dir, "--name", "web1"}, 1, "refusing to overwrite"},
		{"bad name", []string{"pki", "issue", "--dir", dir, "--name", "Web_1"}, 1, `"Web_1"`},
		{"missing CA", []string{"pki", "issue", "--dir", t.TempDir(), "--name", "x"}, 1, "restpipe pki init"},
		{"no name", []string{"pki", "issue", "--dir", dir}, 1, "--name"},
		{"unknown subcommand", []string{"pki", "revoke"}, 2, "unknown subcommand"},
		{"stray argument", []string{"pki", "init", "--dir", dir, "extra"}, 2, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := runCmd(t, nil, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("restpipe %s: code %d, stderr %q; want code %d mentioning %q", strings.Join(tt.args, " "), code, errOut, tt.code, tt.want)
			}
		})
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testPKI makes a CA and certificates for a server and clients in a temp
// directory with the real pki commands.
func testPKI(t testing.TB, clients ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if _, errOut, code := runCmd(t, nil, "pki", "init", "--dir", dir); code != 0 {
		t.Fatalf("pki init: %s", errOut)
	}
	for _, name := range append([]string{"server"}, clients...) {
		args := []string{"pki", "issue", "--dir", dir, "--name", name}
		if name == "server" {
			args = append(args, "--host", "127.0.0.1", "--host", "::1", "--host", "localhost")
		}
		if _, errOut, code := runCmd(t, nil, args...); code != 0 {
			t.Fatalf("pki issue %s: %s", name, errOut)
		}
	}
	return dir
}

// identityFlags are the flags that give a node its identity from dir.
func identityFlags(dir, name string) []string {
	return []string{"--ca", filepath.Join(dir, "ca.crt"), "--cert", filepath.Join(dir, name+".crt"), "--key", filepath.Join(dir, name+".key")}
}
