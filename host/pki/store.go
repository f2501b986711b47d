package pki

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/restpipe/restpipe/host"
)

// Store holds a node's current Identity and replaces it on Reload. The TLS
// configurations it builds always use the identity current at handshake
// (server) or call (client) time. A Store is safe for concurrent use.
type Store struct {
	files  Files
	static bool

	reload sync.Mutex // serializes Reload
	cur    atomic.Pointer[loaded]
}

// loaded is one identity and the server configuration built from it, built
// once per load rather than once per handshake.
type loaded struct {
	id     *Identity
	server *tls.Config
}

// NewStore loads the identity in f (see LoadIdentity) and returns a Store
// that reloads it from the same files.
func NewStore(f Files) (*Store, error) {
	id, err := LoadIdentity(f)
	if err != nil {
		return nil, err
	}
	s := &Store{files: f}
	s.cur.Store(newLoaded(id))
	return s, nil
}

// NewStaticStore returns a Store holding id for good, for tests and
// `restpipe dev`. Its Reload fails with ErrStatic.
func NewStaticStore(id *Identity) *Store {
	s := &Store{static: true}
	s.cur.Store(newLoaded(id))
	return s
}

// Reload reads the store's files again and, if they make a valid identity,
// makes it current: new handshakes use it, established connections are left
// alone. On any error the current identity stays in place and the error is
// returned for the caller to report. Reload blocks while reading the files.
func (s *Store) Reload() error {
	if s.static {
		return fmt.Errorf("reload identity: %w", ErrStatic)
	}
	s.reload.Lock()
	defer s.reload.Unlock()
	id, err := LoadIdentity(s.files)
	if err != nil {
		return fmt.Errorf("reload identity: %w", err)
	}
	s.cur.Store(newLoaded(id))
	return nil
}

// Identity returns the current identity.
func (s *Store) Identity() *Identity { return s.cur.Load().id }

// ServerTLS returns a configuration for accepting links: TLS 1.3 only, a
// client certificate required and verified against the current identity's
// CA, and carrying a valid node name. Each handshake uses the identity
// current when the client's hello arrives. Session tickets are off, so no
// connection resumes a session that was verified under an older identity.
func (s *Store) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		ClientAuth:             tls.RequireAndVerifyClientCert,
		SessionTicketsDisabled: true,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load().server, nil
		},
	}
}

// ClientTLS returns a configuration for dialling a link from the current
// identity: TLS 1.3 only, the node's certificate, and the server's chain
// verified against the CA and its certificate against serverName, a host
// name or IP address without port or zone. Callers build one per dial, so
// each dial uses the identity current at that time.
func (s *Store) ClientTLS(serverName string) *tls.Config {
	id := s.Identity()
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		RootCAs:      id.Roots,
		ServerName:   serverName,
		// Post-quantum hybrid key exchange on P-256 (SecP256r1MLKEM768,
		// which every Go 1.26 server prefers when offered) rather than
		// Go's default X25519MLKEM768: Go's P-256 is assembly, its X25519
		// is not, and it halves the ECDH cost of each handshake on both
		// sides, which counts when thousands of clients reconnect at once.
		// Go fixes the order and a config only filters, hence the short
		// list; a server without the hybrid gets classical P-256.
		CurvePreferences: linkCurves,
	}
}

var linkCurves = []tls.CurveID{tls.SecP256r1MLKEM768, tls.CurveP256}

// newLoaded builds the server configuration for id.
func newLoaded(id *Identity) *loaded {
	return &loaded{id: id, server: &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{id.Cert},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              id.Roots,
		SessionTicketsDisabled: true,
		VerifyConnection:       verifyClientName,
	}}
}

// verifyClientName refuses a client whose verified certificate carries no
// valid node name, which could never be addressed.
func verifyClientName(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("client presented no certificate")
	}
	if _, err := host.CertName(cs.PeerCertificates[0]); err != nil {
		return fmt.Errorf("verify client name: %w", err)
	}
	return nil
}
