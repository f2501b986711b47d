package plugins

import (
	"bytes"
	"sync"

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
