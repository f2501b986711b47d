package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/restpipe/restpipe/host"
)

// LeafOptions configures the certificates a CA issues. The zero value is
// usable.
type LeafOptions struct {
	// Validity is how long the certificate is valid from NotBefore; default
	// DefaultLeafValidity.
	Validity time.Duration

	// ServerRole marks the certificate as a server's with a URI SAN,
	// host.ServerRoleURI (`restpipe pki issue --role server`): in a
	// cluster only such a certificate may join it, forward events between
	// servers, or state on a link which node an event came from. A single
	// server needs no role. Never give it to a client node.
	ServerRole bool

	// NotBefore is when the certificate becomes valid; default one minute
	// before the CA's current time. Tests set it in the past, with a short
	// Validity, to make expired certificates.
	NotBefore time.Time
}

// Issue creates a new ECDSA P-256 key and a certificate for the node name,
// signed by ca and usable for both server and client authentication. name
// must pass host.CheckName; it is the subject CN and the first DNS SAN. Each
// of hosts is an IP address, which becomes an IP SAN, or a host name
// accepted by host.CheckName, which becomes a further DNS SAN; duplicates
// are dropped and IPv6 zones are refused (a certificate cannot carry one).
// Issue returns the certificate and the PKCS#8 key, both PEM-encoded.
func (ca *CA) Issue(name string, hosts []string, opts LeafOptions) (certPEM, keyPEM []byte, err error) {
	if err := host.CheckName(name); err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %q: %w: %w", name, ErrBadName, err)
	}
	dns, ips, err := subjectAltNames(name, hosts)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %q: %w", name, err)
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultLeafValidity
	}
	if opts.Validity < 0 {
		return nil, nil, fmt.Errorf("issue certificate for %q: validity %v is negative", name, opts.Validity)
	}
	if opts.NotBefore.IsZero() {
		opts.NotBefore = ca.now().Add(-clockSkew)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %q: generate key: %w", name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %q: %w", name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              dns,
		IPAddresses:           ips,
		NotBefore:             opts.NotBefore,
		NotAfter:              opts.NotBefore.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if opts.ServerRole {
		role, err := url.Parse(host.ServerRoleURI)
		if err != nil {
			return nil, nil, fmt.Errorf("issue certificate for %q: %w", name, err)
		}
		tmpl.URIs = []*url.URL{role}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %q: sign: %w", name, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %q: %w", name, err)
	}
	return encodeCert(der), keyPEM, nil
}

// IssueTLS issues a certificate for name and hosts with default options and
// returns it ready for a tls.Config, with Leaf set. It serves tests and
// `restpipe dev`, which keep their PKI in memory.
func (ca *CA) IssueTLS(name string, hosts ...string) (tls.Certificate, error) {
	return ca.IssueTLSWith(name, hosts, LeafOptions{})
}

// IssueTLSWith is IssueTLS with options (such as the server role).
func (ca *CA) IssueTLSWith(name string, hosts []string, opts LeafOptions) (tls.Certificate, error) {
	certPEM, keyPEM, err := ca.Issue(name, hosts, opts)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue certificate for %q: load key pair: %w", name, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("issue certificate for %q: parse: %w", name, err)
		}
	}
	return cert, nil
}

// IssueFiles loads the CA in dir (see LoadCA), issues a certificate for name
// and hosts (see CA.Issue) and writes it to dir/NAME.crt and its key to
// dir/NAME.key (modes 0644 and 0600). If either file exists it returns an error
// wrapping ErrExists that names the file, and writes nothing. It returns the
// paths written.
func IssueFiles(dir, name string, hosts []string, opts LeafOptions) (certFile, keyFile string, err error) {
	ca, err := LoadCA(dir)
	if err != nil {
		return "", "", err
	}
	if err := host.CheckName(name); err != nil {
		return "", "", fmt.Errorf("issue certificate for %q: %w: %w", name, ErrBadName, err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	for _, p := range []string{certFile, keyFile} {
		// Fail before generating a key; writeNew checks again.
		if err := checkAbsent(p); err != nil {
			return "", "", fmt.Errorf("issue certificate for %q: %w", name, err)
		}
	}
	certPEM, keyPEM, err := ca.Issue(name, hosts, opts)
	if err != nil {
		return "", "", err
	}
	err = writeNew(
		newFile{certFile, certPEM, 0o644},
		newFile{keyFile, keyPEM, 0o600},
	)
	if err != nil {
		return "", "", fmt.Errorf("issue certificate for %q: %w", name, err)
	}
	return certFile, keyFile, nil
}

// subjectAltNames returns the DNS and IP SANs for a certificate of the node
// name reachable at hosts: name first, then each host once.
func subjectAltNames(name string, hosts []string) ([]string, []net.IP, error) {
	dns := []string{name}
	var ips []net.IP
	seen := map[string]bool{name: true}
	for _, h := range hosts {
		if strings.Contains(h, "%") {
			return nil, nil, fmt.Errorf("host %q: %w: an IPv6 zone cannot be put in a certificate; give the address without %%zone",
				h, ErrBadName)
		}
		if ip := net.ParseIP(h); ip != nil {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			if key := ip.String(); !seen[key] {
				seen[key] = true
				ips = append(ips, ip)
			}
			continue
		}
		if err := host.CheckName(h); err != nil {
			return nil, nil, fmt.Errorf("host %q: %w: neither an IP address nor a valid host name: %w", h, ErrBadName, err)
		}
		if !seen[h] {
			seen[h] = true
			dns = append(dns, h)
		}
	}
	return dns, ips, nil
}
