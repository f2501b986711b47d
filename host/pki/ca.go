package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Names of the CA's files inside its directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Defaults applied to zero option values.
const (
	DefaultCACommonName = "restpipe CA"
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultLeafValidity = 2 * 365 * 24 * time.Hour

	// clockSkew is how far before now a certificate becomes valid by
	// default, so peers with slightly slow clocks accept it at once.
	clockSkew = time.Minute
)

// CAOptions configures NewCA and InitCA. The zero value is usable.
type CAOptions struct {
	// CommonName is the CA certificate's subject CN; default
	// DefaultCACommonName.
	CommonName string

	// Validity is how long the CA certificate is valid; default
	// DefaultCAValidity.
	Validity time.Duration

	// Now returns the current time; default time.Now. The CA also uses it
	// to date the leaves it issues.
	Now func() time.Time
}

// CA is a certificate authority: a self-signed CA certificate and its
// private key. A CA is safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	now     func() time.Time
}

// NewCA creates a CA in memory with a new ECDSA P-256 key, as used by tests
// and `restpipe dev`. Use InitCA to create one on disk.
func NewCA(opts CAOptions) (*CA, error) {
	if opts.CommonName == "" {
		opts.CommonName = DefaultCACommonName
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultCAValidity
	}
	if opts.Validity < 0 {
		return nil, fmt.Errorf("create CA: validity %v is negative", opts.Validity)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create CA: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	notBefore := opts.Now().Add(-clockSkew)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CommonName},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // it signs leaves only
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA: sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA: parse certificate: %w", err)
	}
	return &CA{cert: cert, key: key, certPEM: encodeCert(der), now: opts.Now}, nil
}

// InitCA creates a new CA and writes it to dir/ca.crt (mode 0644) and
// dir/ca.key (mode 0600), creating dir with mode 0700 if it is missing. If
// either file already exists it returns an error wrapping ErrExists that
// names the file, and writes nothing.
func InitCA(dir string, opts CAOptions) (*CA, error) {
	certPath, keyPath := caPaths(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("init CA: %w", err)
	}
	for _, p := range []string{certPath, keyPath} {
		// Fail before generating a key; writeNew checks again.
		if err := checkAbsent(p); err != nil {
			return nil, fmt.Errorf("init CA: %w", err)
		}
	}
	ca, err := NewCA(opts)
	if err != nil {
		return nil, fmt.Errorf("init CA: %w", err)
	}
	keyPEM, err := encodeKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("init CA: %w", err)
	}
	err = writeNew(
		newFile{certPath, ca.certPEM, 0o644},
		newFile{keyPath, keyPEM, 0o600},
	)
	if err != nil {
		return nil, fmt.Errorf("init CA: %w", err)
	}
	return ca, nil
}

// LoadCA reads the CA in dir/ca.crt and dir/ca.key. If either is missing it
// returns an error wrapping ErrNoCA that says what to do. The certificate
// file's first certificate must be a CA certificate matching the key.
func LoadCA(dir string) (*CA, error) {
	certPath, keyPath := caPaths(dir)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	certMissing, keyMissing := errors.Is(certErr, fs.ErrNotExist), errors.Is(keyErr, fs.ErrNotExist)
	switch {
	case certMissing && keyMissing:
		return nil, fmt.Errorf("load CA: %w in %s: %s and %s do not exist; run `restpipe pki init --dir %s` first",
			ErrNoCA, dir, CACertFile, CAKeyFile, dir)
	case certMissing || keyMissing:
		missing, present := certPath, keyPath
		if keyMissing {
			missing, present = keyPath, certPath
		}
		return nil, fmt.Errorf("load CA: %w: %s does not exist but %s does; restore it, or move both away and run `restpipe pki init --dir %s`",
			ErrNoCA, missing, present, dir)
	case certErr != nil:
		return nil, fmt.Errorf("load CA: %w", certErr)
	case keyErr != nil:
		return nil, fmt.Errorf("load CA: %w", keyErr)
	}
	certs, err := parseCerts(certPEM, certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	cert := certs[0]
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("load CA: %s is not a CA certificate (it cannot sign certificates)", certPath)
	}
	key, err := parseKey(keyPEM, keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if err := checkKeyPair(cert, key, certPath, keyPath); err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	return &CA{cert: cert, key: key, certPEM: encodeCert(cert.Raw), now: time.Now}, nil
}

// Certificate returns the CA certificate. Callers must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate in PEM, as written to ca.crt.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Pool returns a new certificate pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// caPaths returns the paths of the CA's certificate and key in dir.
func caPaths(dir string) (cert, key string) {
	return filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
}

// newSerial returns a random positive serial number of up to 128 bits.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	n, err := rand.Int(rand.Reader, limit.Sub(limit, big.NewInt(1)))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
