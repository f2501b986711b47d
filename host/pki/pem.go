package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// PEM block types this package writes and reads.
const (
	pemCertificate = "CERTIFICATE"
	pemPKCS8       = "PRIVATE KEY"
	pemEC          = "EC PRIVATE KEY"
	pemPKCS1       = "RSA PRIVATE KEY"
	pemECParams    = "EC PARAMETERS"
)

// encodeCert returns der as a PEM CERTIFICATE block.
func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der})
}

// encodeKey returns key as a PKCS#8 PEM PRIVATE KEY block.
func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPKCS8, Bytes: der}), nil
}

// parseCerts returns every CERTIFICATE block in data, in order. src names
// the input in errors. Text between blocks is ignored; a block of any other
// type is an error, as it usually means a key was passed for a certificate.
func parseCerts(data []byte, src string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != pemCertificate {
			return nil, fmt.Errorf("parse %s: %w: found a %q block where a CERTIFICATE was expected", src, ErrBadPEM, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w: %w", src, ErrBadPEM, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("parse %s: %w: no CERTIFICATE block", src, ErrBadPEM)
	}
	return certs, nil
}

// parseKey returns the first private key in data: PKCS#8, SEC 1 (EC) or
// PKCS#1 (RSA). EC PARAMETERS blocks, which OpenSSL writes before an EC key,
// are skipped. src names the input in errors.
func parseKey(data []byte, src string) (crypto.Signer, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("parse %s: %w: no PRIVATE KEY block", src, ErrBadPEM)
		}
		var (
			key any
			err error
		)
		switch b.Type {
		case pemECParams:
			continue
		case pemPKCS8:
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case pemEC:
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case pemPKCS1:
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			return nil, fmt.Errorf("parse %s: %w: found a %q block where an unencrypted PRIVATE KEY was expected", src, ErrBadPEM, b.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w: %w", src, ErrBadPEM, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("parse %s: %w: unsupported key type %T", src, ErrBadPEM, key)
		}
		return signer, nil
	}
}

// checkKeyPair returns an error wrapping ErrKeyMismatch unless key is the
// private half of cert's public key. keySrc and certSrc name them in errors.
func checkKeyPair(cert *x509.Certificate, key crypto.Signer, certSrc, keySrc string) error {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return fmt.Errorf("check %s: %w %s", keySrc, ErrKeyMismatch, certSrc)
	}
	return nil
}
