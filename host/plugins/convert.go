package plugins

import (
	"github.com/restpipe/restpipe/host"
	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

// This file converts between host's vocabulary and the plugin protocol.

// headerFromEvent builds the event connection's header of ev; the event
// path adds the body's size and the deadline.
func headerFromEvent(ev *host.Event) *pluginv1.EventHeader {
	h := &pluginv1.EventHeader{
		Id:          ev.ID,
		Verb:        ev.Verb,
		Noun:        ev.Noun,
		Args:        ev.Args,
		ContentType: ev.ContentType,
		Peer:        ev.Peer,
	}
	if len(ev.Query) > 0 {
		h.Query = make(map[string]*pluginv1.Values, len(ev.Query))
		for k, vs := range ev.Query {
			h.Query[k] = &pluginv1.Values{Values: vs}
		}
	}
	return h
}

// failureError turns a handler's exception into handler_failed. The
// traceback is kept only when keepTraceback (debug logging) is set.
func failureError(x *pluginv1.Exception, keepTraceback bool) *host.Error {
	e := &host.Exception{Message: x.Message, Class: x.Class}
	if keepTraceback {
		e.Traceback = x.Traceback
	}
	return &host.Error{Kind: host.KindHandlerFailed, Message: x.Message, Exception: e}
}
