package plugins

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
)

// maxLine bounds one logged line of plugin output; longer lines are cut.
const maxLine = 16 << 10

// lineLogger is an io.Writer that logs each line written to it, for what a
// plugin prints to its os.Stdout and os.Stderr (go-plugin forwards them).
type lineLogger struct {
	log    hclog.Logger
	stream string

	mu  sync.Mutex
	buf []byte
}

func newLineLogger(log hclog.Logger, stream string) *lineLogger {
	return &lineLogger{log: log, stream: stream}
}

func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLine - len(w.buf)
			if len(p) > room {
				w.buf = append(w.buf, p[:room]...)
				w.flush()
				p = p[room:]
				continue
			}
			w.buf = append(w.buf, p...)
			break
		}
		w.buf = append(w.buf, p[:i]...)
		if len(w.buf) > maxLine {
			w.buf = w.buf[:maxLine]
		}
		w.flush()
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineLogger) flush() {
	w.log.Info(string(bytes.TrimRight(w.buf, "\r")), "stream", w.stream)
	w.buf = w.buf[:0]
}

// safeLogger is the logger a plugin's output reaches the node's log
// through (go-plugin logs the plugin's stderr lines with it; lineLogger
// the rest): a plugin's bytes are its own, so control characters and
// terminal escapes in messages and string values are quoted, and lines are
// cut at maxLine, before they reach a terminal or a log file.
type safeLogger struct{ hclog.Logger }

func (l safeLogger) Log(level hclog.Level, msg string, args ...any) {
	l.Logger.Log(level, safeText(msg), safeArgs(args)...)
}
func (l safeLogger) Trace(msg string, args ...any) { l.Log(hclog.Trace, msg, args...) }
func (l safeLogger) Debug(msg string, args ...any) { l.Log(hclog.Debug, msg, args...) }
func (l safeLogger) Info(msg string, args ...any)  { l.Log(hclog.Info, msg, args...) }
func (l safeLogger) Warn(msg string, args ...any)  { l.Log(hclog.Warn, msg, args...) }
func (l safeLogger) Error(msg string, args ...any) { l.Log(hclog.Error, msg, args...) }

func (l safeLogger) With(args ...any) hclog.Logger {
	return safeLogger{l.Logger.With(safeArgs(args)...)}
}
func (l safeLogger) Named(name string) hclog.Logger {
	return safeLogger{l.Logger.Named(safeText(name))}
}
func (l safeLogger) ResetNamed(name string) hclog.Logger {
	return safeLogger{l.Logger.ResetNamed(safeText(name))}
}

// safeArgs quotes the string values among key/value log arguments.
func safeArgs(args []any) []any {
	out := args
	for i, a := range args {
		if s, ok := a.(string); ok && !isSafe(s) {
			if &out[0] == &args[0] {
				out = append([]any(nil), args...)
			}
			out[i] = safeText(s)
		}
	}
	return out
}

// safeText returns s cut at maxLine, with control characters (but tab)
// and invalid UTF-8 quoted as Go escapes.
func safeText(s string) string {
	if len(s) > maxLine {
		s = strings.ToValidUTF8(s[:maxLine], "") + "…"
	}
	if isSafe(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\t' || unicode.IsPrint(r) || r == ' ':
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// isSafe reports whether s holds only printable text and tabs.
func isSafe(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || r != '\t' && !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
