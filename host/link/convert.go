package link

import (
	"time"

	"github.com/restpipe/restpipe/host"
	linkv1 "github.com/restpipe/restpipe/proto/link/v1"
)

// This file converts between host's vocabulary and the link's wire messages.
// Nothing else in the package touches both.

// requestFromEvent builds the wire header of ev; timeout is the time left
// before its deadline, 0 for none.
func requestFromEvent(ev *host.Event, timeout time.Duration) *linkv1.Request {
	r := &linkv1.Request{
		Id:          ev.ID,
		Verb:        ev.Verb,
		Noun:        ev.Noun,
		Args:        ev.Args,
		ContentType: ev.ContentType,
		BodySize:    ev.Size,
		Target:      ev.Target,
		Caller:      ev.Peer,
		Hops:        uint32(max(ev.Hops, 0)),
	}
	if ev.Body == nil {
		r.BodySize = 0
	}
	if timeout > 0 {
		// Rounded up: the receiver's deadline is never before ours, so
		// this side times out first and reports it.
		r.TimeoutMs = max(int64((timeout+time.Millisecond-1)/time.Millisecond), 1)
	}
	if len(ev.Query) > 0 {
		r.Query = make(map[string]*linkv1.Values, len(ev.Query))
		for k, vs := range ev.Query {
			r.Query[k] = &linkv1.Values{Values: vs}
		}
	}
	return r
}

// eventFromRequest builds the event a wire header describes; the caller
// attaches the body and the peer.
func eventFromRequest(r *linkv1.Request) *host.Event {
	ev := &host.Event{
		ID:          r.Id,
		Verb:        r.Verb,
		Noun:        r.Noun,
		Args:        r.Args,
		ContentType: r.ContentType,
		Size:        r.BodySize,
	}
	if len(r.Query) > 0 {
		ev.Query = make(map[string][]string, len(r.Query))
		for k, vs := range r.Query {
			ev.Query[k] = vs.GetValues()
		}
	}
	return ev
}

// replyHeader builds the wire header of a handler's reply.
func replyHeader(rep *host.Reply) *linkv1.Reply {
	size := rep.Size
	if rep.Body == nil {
		size = 0
	}
	return &linkv1.Reply{
		Status:      int32(rep.Status),
		ReturnCode:  int32(rep.Code),
		ContentType: rep.ContentType,
		BodySize:    size,
	}
}

// errorToWire converts any error to its wire form, through host.AsError.
func errorToWire(err error) *linkv1.Error {
	e := host.AsError(err)
	w := &linkv1.Error{Kind: string(e.Kind), Message: e.Message}
	if e.Exception != nil {
		w.Exception = &linkv1.Exception{
			Message:   e.Exception.Message,
			Class:     e.Exception.Class,
			Traceback: e.Exception.Traceback,
		}
	}
	if e.RetryAfter > 0 {
		w.RetryAfterMs = max(e.RetryAfter.Milliseconds(), 1)
	}
	return w
}

// errorFromWire converts a wire error back. An unknown kind (from a newer
// peer) keeps its name; host.Kind's methods treat it as handler_failed.
func errorFromWire(w *linkv1.Error) *host.Error {
	e := &host.Error{Kind: host.Kind(w.Kind), Message: w.Message}
	if x := w.Exception; x != nil {
		e.Exception = &host.Exception{Message: x.Message, Class: x.Class, Traceback: x.Traceback}
	}
	if w.RetryAfterMs > 0 {
		e.RetryAfter = time.Duration(w.RetryAfterMs) * time.Millisecond
	}
	return e
}
