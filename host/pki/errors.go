package pki

import "errors"

// Errors returned by this package. They are wrapped with the file, name or
// certificate they concern; match them with errors.Is.
var (
	// ErrExists means a file to be written already exists. Nothing is ever
	// overwritten, least of all a private key.
	ErrExists = errors.New("file already exists; refusing to overwrite it")

	// ErrNoCA means a CA directory lacks ca.crt or ca.key.
	ErrNoCA = errors.New("no CA")

	// ErrBadName means a node name or a host is not acceptable in a
	// certificate, or a certificate does not carry a valid node name.
	ErrBadName = errors.New("invalid name")

	// ErrBadPEM means PEM input lacks the expected block or holds one that
	// does not parse.
	ErrBadPEM = errors.New("bad PEM data")

	// ErrKeyMismatch means a private key does not belong to the certificate
	// it is paired with.
	ErrKeyMismatch = errors.New("private key does not match certificate")

	// ErrExpired means a certificate's validity period has ended.
	ErrExpired = errors.New("certificate expired")

	// ErrNotYetValid means a certificate's validity period has not begun.
	ErrNotYetValid = errors.New("certificate not yet valid")

	// ErrUntrusted means a certificate does not verify against the CA, or is
	// not valid for both client and server authentication.
	ErrUntrusted = errors.New("certificate not trusted")

	// ErrStatic means Reload was called on a Store made by NewStaticStore,
	// which has no files to read again.
	ErrStatic = errors.New("identity has no files to reload")
)
