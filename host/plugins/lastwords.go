package plugins

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
)

// tailSize bounds what a tailWriter keeps of a plugin's standard error.
const tailSize = 8 << 10

// maxLastWords bounds the line lastWords quotes.
const maxLastWords = 400

// tailWriter keeps the end of what a plugin writes to its standard error
// (go-plugin copies every line to ClientConfig.Stderr), so that a plugin
// that dies, at start above all, can say why in /status: a Python plugin
// whose import fails, a Go plugin that panics before its handshake. It is
// safe for concurrent use.
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > tailSize {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-tailSize:]...)
	}
	return len(p), nil
}

// lastWords returns the line of the plugin's standard error that best says
// why it died, or "": the message
// of its last error-level hclog line, else its last "panic: " or "fatal
// error: " line, else its last line.
func (w *tailWriter) lastWords() string {
	w.mu.Lock()
	lines := strings.Split(string(bytes.TrimSpace(w.buf)), "\n")
	w.mu.Unlock()
	var last, panicked string
	for i := len(lines) - 1; i >= 0; i-- {
		line := strings.TrimSpace(lines[i])
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "{") {
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) == nil {
				if lvl, _ := entry["@level"].(string); lvl == "error" {
					msg, _ := entry["@message"].(string)
					if e, ok := entry["error"].(string); ok && e != "" && !strings.Contains(msg, e) {
						msg += ": " + e
					}
					return quote(msg)
				}
				continue
			}
		}
		if last == "" {
			last = line
		}
		if panicked == "" && (strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ")) {
			panicked = line
		}
	}
	if panicked != "" {
		return quote(panicked)
	}
	if last != "" {
		return quote(last)
	}
	return ""
}

func quote(s string) string {
	if len(s) > maxLastWords {
		s = s[:maxLastWords] + "..."
	}
	return s
}

// withLastWords adds to err (what failed) the plugin's last words, if it
// said any, on one line.
func (w *tailWriter) withLastWords(what string, err error) error {
	words := w.lastWords()
	if words == "" {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %s (its last words on stderr: %s)", what, strings.Join(strings.Fields(err.Error()), " "), words)
}
