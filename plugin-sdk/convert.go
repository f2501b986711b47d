package pluginsdk

import pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"

// This file converts between the SDK's types and the protocol's messages.

// eventFromHeader builds the Event a header describes; the caller attaches
// the body.
func eventFromHeader(h *pluginv1.EventHeader, node Node) *Event {
	ev := &Event{
		ID:          h.Id,
		Verb:        h.Verb,
		Noun:        h.Noun,
		Args:        h.Args,
		ContentType: h.ContentType,
		Size:        h.BodySize,
		Peer:        h.Peer,
		Node:        node,
		Query:       map[string][]string{},
	}
	if ev.Args == nil {
		ev.Args = []string{}
	}
	for k, vs := range h.Query {
		ev.Query[k] = vs.GetValues()
	}
	return ev
}
