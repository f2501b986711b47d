// Package pki owns the identities of restpipe nodes: an ECDSA P-256
// certificate authority, the leaf certificates it issues, loading both from
// PEM files, and the TLS 1.3 configurations a link is built on.
//
// A CA directory holds ca.crt (mode 0644) and ca.key (mode 0600), written by
// [InitCA]; [IssueFiles] adds NAME.crt (0644) and NAME.key (0600) for each
// node.
// Keys are PKCS#8 PEM ("PRIVATE KEY"). No function of this package ever
// overwrites an existing file: it fails with an error wrapping [ErrExists]
// instead, and a pair of files is published certificate first, so a key is
// never left behind without its certificate.
//
// Every leaf is usable both as a client and as a server certificate. Its
// first DNS SAN (and its CN) is the node's name, the only identity a peer has
// (see host.CertName); further SANs are the host names and IP addresses it may
// be dialled at.
//
// A running node holds its credentials in a [Store]. [Store.Reload] re-reads
// the files (the daemon calls it on SIGHUP) and swaps them in atomically only
// if they are valid; [Store.ServerTLS] and [Store.ClientTLS] build
// configurations that use whatever identity is current at handshake or dial
// time, so a reload applies to new connections and leaves established ones
// alone. There is no insecure mode: the server always requires and verifies a
// client certificate, and the client always verifies the server's chain and
// name.
package pki
