package plugins

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// ParseChecksums reads a checksum manifest for Config.Checksums, in the
// format sha256sum prints: one "<64 hex digits>  <file name>" per line
// (a '*' before the name, for binary mode, is allowed; directories in the
// name are ignored: only the base name identifies a plugin). Blank lines
// and lines starting with '#' are skipped.
//
//	sha256sum plugins/* > plugins.sha256
func ParseChecksums(r io.Reader) (map[string][]byte, error) {
	out := map[string][]byte{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sum, name, ok := strings.Cut(line, " ")
		name = strings.TrimPrefix(strings.TrimSpace(name), "*")
		if !ok || name == "" {
			return nil, fmt.Errorf("checksum manifest line %d: want \"<sha256>  <file name>\"", n)
		}
		b, err := hex.DecodeString(sum)
		if err != nil || len(b) != 32 {
			return nil, fmt.Errorf("checksum manifest line %d: %q is not a sha256 in hex", n, sum)
		}
		base := filepath.Base(name)
		if _, dup := out[base]; dup {
			return nil, fmt.Errorf("checksum manifest line %d: %s listed twice", n, base)
		}
		out[base] = b
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read checksum manifest: %w", err)
	}
	return out, nil
}
