package pluginsdk

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"strings"
)

// Reply is a handler's answer.
type Reply struct {
	// Status is the HTTP status the caller gets; 0 means 200. Any other
	// value must be a final status, 200 to 599, or the event fails.
	Status int
	// Code is the X-Event-Return-Code the caller gets; 0 by default.
	Code int
	// ContentType is the body's media type.
	ContentType string
	// Body is the reply body, streamed to the caller; nil for none. If it
	// implements io.Closer it is closed once sent, or when sending fails.
	Body io.Reader
	// Size is the body's length, or -1 when unknown. A body that turns out
	// shorter or longer than the Size it announced fails the event, except
	// for a Size left at 0, which may be a forgotten one: a Body that is not
	// empty is then sent as of unknown length.
	Size int64

	exc *Exception // set by JSON when the reply could not be built
}

// JSON returns a 200 reply whose body is v encoded as JSON and a newline
// (as the gateway's own error bodies end), the usual way to answer. If v
// cannot be encoded, the event fails as if the handler had
// returned the encoding error.
func JSON(v any) *Reply {
	b, err := json.Marshal(v)
	if err != nil {
		return &Reply{exc: &Exception{Message: "encode reply: " + err.Error(), Class: className(err)}}
	}
	return Bytes("application/json", append(b, '\n'))
}

// Bytes returns a 200 reply with body b of the given content type.
func Bytes(contentType string, b []byte) *Reply {
	return &Reply{ContentType: contentType, Body: bytes.NewReader(b), Size: int64(len(b))}
}

// Text returns a 200 text/plain reply.
func Text(s string) *Reply {
	return &Reply{ContentType: "text/plain; charset=utf-8", Body: strings.NewReader(s), Size: int64(len(s))}
}

// Stream returns a 200 reply that streams r, of size bytes (-1: unknown).
// If r implements io.Closer it is closed once sent, or when sending fails.
func Stream(contentType string, r io.Reader, size int64) *Reply {
	return &Reply{ContentType: contentType, Body: r, Size: size}
}

// WithStatus sets the reply's HTTP status and returns the reply.
func (r *Reply) WithStatus(status int) *Reply { r.Status = status; return r }

// WithCode sets the reply's X-Event-Return-Code and returns the reply.
func (r *Reply) WithCode(code int) *Reply { r.Code = code; return r }

// Exception is RestPipe's exception object. A handler may return one to
// choose the class the caller sees; any other error becomes one whose class
// is the error's Go type.
type Exception struct {
	Message   string
	Class     string
	Traceback string
}

func (e *Exception) Error() string { return e.Class + ": " + e.Message }

// exceptionOf describes err as an Exception.
func exceptionOf(err error) *Exception {
	if e, ok := err.(*Exception); ok {
		return e
	}
	return &Exception{Message: err.Error(), Class: className(err)}
}

// className is a Go error's type name without its pointer star, such as
// "fs.PathError" or "errors.errorString".
func className(err error) string {
	t := reflect.TypeOf(err)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.PkgPath() == "" {
		return t.String()
	}
	pkg := t.PkgPath()
	if i := strings.LastIndexByte(pkg, '/'); i >= 0 {
		pkg = pkg[i+1:]
	}
	return pkg + "." + t.Name()
}
