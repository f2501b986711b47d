package host

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// MaxNameLen is the longest node name, that of a DNS name.
const MaxNameLen = 253

// CheckName returns nil if name can identify a node: a lower-case DNS name of
// dot-separated labels of 1 to 63 letters, digits and inner hyphens, at most
// MaxNameLen bytes. Only such names can be addressed by the gateway's
// /client/<name>/ paths and carried in a certificate's DNS SAN.
func CheckName(name string) error {
	if name == "" {
		return errors.New("empty node name")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("node name is %d bytes long, the limit is %d", len(name), MaxNameLen)
	}
	for _, label := range strings.Split(name, ".") {
		if len(label) == 0 || len(label) > 63 {
			return fmt.Errorf("node name %q: each dot-separated label must be 1 to 63 characters", name)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("node name %q: a label may not start or end with '-'", name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("node name %q: only lower-case letters, digits, '-' and '.' are allowed", name)
			}
		}
	}
	return nil
}

// CertName returns the node name a certificate proves: its first DNS SAN, or
// its subject CN when it has none, lower-cased and checked with CheckName.
// It is the only source of a peer's identity.
func CertName(cert *x509.Certificate) (string, error) {
	name := cert.Subject.CommonName
	if len(cert.DNSNames) > 0 {
		name = cert.DNSNames[0]
	}
	name = strings.ToLower(name)
	if err := CheckName(name); err != nil {
		return "", fmt.Errorf("certificate %q: %w", cert.Subject, err)
	}
	return name, nil
}

// ServerRoleURI is the URI SAN that marks a certificate as a server's
// (`restpipe pki issue --role server`). In a cluster (SPEC §8) only a
// certificate carrying it may join the NATS cluster, open or answer a
// server-to-server link, or state on a link the name of the node an event
// came from; a single server needs no role.
const ServerRoleURI = "urn:restpipe:role:server"

// HasServerRole reports whether cert carries the server role: ServerRoleURI
// among its URI SANs. Like CertName, it is only meaningful for a
// certificate whose chain was verified.
func HasServerRole(cert *x509.Certificate) bool {
	if cert == nil {
		return false
	}
	for _, u := range cert.URIs {
		if u.String() == ServerRoleURI {
			return true
		}
	}
	return false
}
