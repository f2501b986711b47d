package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/proto/rest"
)

// writeReply writes a handler's reply: its status, return code, content
// type and body, streamed. It returns the body bytes written.
func (g *Gateway) writeReply(w http.ResponseWriter, r *http.Request, rep *host.Reply) int64 {
	h := w.Header()
	h.Set(rest.HeaderReturnCode, strconv.Itoa(rep.Code))
	if rep.ContentType != "" {
		h.Set("Content-Type", rep.ContentType)
	}
	if rep.Size >= 0 && rep.Body != nil {
		h.Set("Content-Length", strconv.FormatInt(rep.Size, 10))
	} else if rep.Body == nil {
		h.Set("Content-Length", "0")
	}
	w.WriteHeader(rep.StatusOrOK())
	if rep.Body == nil || r.Method == http.MethodHead {
		return 0
	}
	n, err := copyReply(w, rep.Body, rep.Size)
	if err != nil {
		// The status is out: abort the connection so the caller sees a
		// broken transfer, not a short body.
		g.log.Warn("reply body failed mid-way; aborting the response", "request_id", w.Header().Get(rest.HeaderRequestID), "error", err)
		panic(http.ErrAbortHandler)
	}
	return n
}

// copyBufs holds the buffers replies are copied through.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// copyReply copies a reply body of size bytes (-1: unknown) to w,
// flushing whenever the body has no more ready at once, so slow streams
// reach the caller promptly and fast ones in large writes. A body read
// whole is not flushed: net/http sends it with the headers when the
// handler returns, in one write.
func copyReply(w http.ResponseWriter, body io.Reader, size int64) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	fl, _ := w.(http.Flusher)
	var total int64
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return total, nil // the caller left; nothing more to tell it
			}
			total += int64(n)
			if n < len(buf) && fl != nil && total != size {
				fl.Flush()
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// writeError writes err as the JSON error body of its kind.
func (g *Gateway) writeError(w http.ResponseWriter, err error) {
	e := host.AsError(err)
	b := host.NewErrorBody(e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(rest.HeaderReturnCode, strconv.Itoa(e.Kind.ReturnCode()))
	h.Set(rest.HeaderErrorKind, string(e.Kind))
	if e.Kind == host.KindOverloaded {
		secs := int64((e.RetryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	}
	w.WriteHeader(e.Kind.Status())
	_ = json.NewEncoder(w).Encode(b)
}
