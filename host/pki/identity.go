package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/restpipe/restpipe/host"
)

// Identity is a node's loaded credentials: its certificate and key, and the
// CA certificates it trusts for its peers. An Identity is immutable once
// made; share it freely.
type Identity struct {
	// Cert is the certificate chain and private key, as a tls.Config takes
	// them; Cert.Leaf is set.
	Cert tls.Certificate

	// Leaf is the node's own certificate, the same as Cert.Leaf.
	Leaf *x509.Certificate

	// Roots holds the trusted CA certificates.
	Roots *x509.CertPool

	// Name is the node name Leaf proves (see host.CertName).
	Name string

	// ServerRole reports whether Leaf carries the server role
	// (host.HasServerRole), which a cluster's servers need.
	ServerRole bool
}

// Files names the PEM files an Identity is loaded from.
type Files struct {
	CA   string // trusted CA certificates (one or more)
	Cert string // the node's certificate, optionally followed by intermediates
	Key  string // the node's private key
}

// NewIdentity builds an Identity from PEM data: the trusted CA certificates,
// the node's certificate (optionally followed by intermediates) and its
// private key (PKCS#8, SEC 1 or PKCS#1). It refuses a key that does not match
// the certificate, a certificate that is not valid at now, one that does not
// verify against the CA for both server and client authentication, and one
// that carries no valid node name; the error says which and why.
func NewIdentity(caPEM, certPEM, keyPEM []byte, now time.Time) (*Identity, error) {
	return newIdentity(caPEM, certPEM, keyPEM, now, Files{CA: "CA PEM", Cert: "certificate PEM", Key: "key PEM"})
}

// LoadIdentity reads the files f names and builds an Identity from them as
// NewIdentity does, at the current time. Errors name the file at fault.
func LoadIdentity(f Files) (*Identity, error) {
	var data [3][]byte
	for i, p := range []struct{ what, path string }{{"CA", f.CA}, {"certificate", f.Cert}, {"key", f.Key}} {
		if p.path == "" {
			return nil, fmt.Errorf("load identity: no %s file given", p.what)
		}
		b, err := os.ReadFile(p.path)
		if err != nil {
			return nil, fmt.Errorf("load identity: read %s: %w", p.what, err)
		}
		data[i] = b
	}
	id, err := newIdentity(data[0], data[1], data[2], time.Now(), f)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	return id, nil
}

// newIdentity implements NewIdentity; src names the three inputs in errors.
func newIdentity(caPEM, certPEM, keyPEM []byte, now time.Time, src Files) (*Identity, error) {
	cas, err := parseCerts(caPEM, src.CA)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	chain, err := parseCerts(certPEM, src.Cert)
	if err != nil {
		return nil, err
	}
	leaf := chain[0]
	key, err := parseKey(keyPEM, src.Key)
	if err != nil {
		return nil, err
	}
	if err := checkKeyPair(leaf, key, src.Cert, src.Key); err != nil {
		return nil, err
	}
	if err := checkValidity(leaf, now); err != nil {
		return nil, fmt.Errorf("check %s: %w", src.Cert, err)
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	for _, u := range []struct {
		usage x509.ExtKeyUsage
		what  string
	}{
		{x509.ExtKeyUsageServerAuth, "server"},
		{x509.ExtKeyUsageClientAuth, "client"},
	} {
		_, err := leaf.Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: intermediates,
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{u.usage},
		})
		if err != nil {
			return nil, fmt.Errorf("verify %s against %s for %s authentication: %w: %w", src.Cert, src.CA, u.what, ErrUntrusted, err)
		}
	}
	name, err := host.CertName(leaf)
	if err != nil {
		return nil, fmt.Errorf("check %s: %w: %w", src.Cert, ErrBadName, err)
	}
	ders := make([][]byte, len(chain))
	for i, c := range chain {
		ders[i] = c.Raw
	}
	return &Identity{
		Cert:       tls.Certificate{Certificate: ders, PrivateKey: key, Leaf: leaf},
		Leaf:       leaf,
		Roots:      roots,
		Name:       name,
		ServerRole: host.HasServerRole(leaf),
	}, nil
}

// checkValidity returns an error wrapping ErrExpired or ErrNotYetValid
// unless cert is valid at now.
func checkValidity(cert *x509.Certificate, now time.Time) error {
	const layout = time.RFC3339
	switch {
	case now.After(cert.NotAfter):
		return fmt.Errorf("%w at %s; now %s", ErrExpired, cert.NotAfter.UTC().Format(layout), now.UTC().Format(layout))
	case now.Before(cert.NotBefore):
		return fmt.Errorf("%w: valid from %s; now %s", ErrNotYetValid, cert.NotBefore.UTC().Format(layout), now.UTC().Format(layout))
	}
	return nil
}
