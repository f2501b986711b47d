package plugins

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"runtime"

	"github.com/hashicorp/go-hclog"
)

// hashFile returns the sha256 of the file at path. It yields the
// processor between chunks: a node may run with GOMAXPROCS=1, and a
// plugin binary of 20 MB takes tens of milliseconds to hash.
func hashFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 256<<10)
	for {
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return h.Sum(nil), nil
		}
		if err != nil {
			return nil, err
		}
		runtime.Gosched()
	}
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
