package plugins

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"

	"github.com/hashicorp/go-hclog"
)

// hashFile returns the sha256 of the file at path.
func hashFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// shortHash is the first 12 hex digits of a hash, for logs.
func shortHash(h []byte) string {
	s := hex.EncodeToString(h)
	if len(s) > 12 {
		s = s[:12]
	}
	return s
}

// levelName is the name of a logger's level, for the plugin's environment.
func levelName(l hclog.Logger) string {
	return l.GetLevel().String()
}
