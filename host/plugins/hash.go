package plugins

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
)

// hashFile returns the sha256 of the file at path. It gives the processor
// up between chunks: a node may run with GOMAXPROCS=1, and a plugin binary
// of 20 MB takes tens of milliseconds to hash.
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
		// Not runtime.Gosched: a goroutine that only yields keeps the
		// processor busy, so the scheduler does not poll the network
		// until sysmon does, 10 ms later (a link's hello measured 7-9 ms
		// on loopback while a node hashed its plugins, and the link was
		// shaped for a long path). A short sleep parks it, and an idle
		// processor polls the network at once.
		time.Sleep(hashPause)
	}
}

// hashPause is the pause between two chunks of hashFile (a 20 MB binary
// has 80).
const hashPause = 20 * time.Microsecond

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
