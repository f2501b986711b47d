// Package host is the vocabulary of the restpipe daemon: the types every
// component under host/ speaks, and nothing else.
//
// An event enters a node through the gateway (a local HTTP request), becomes
// an [Event], crosses the link to the peer node and is answered there by a
// [Handler] (the dispatch table in front of the plugins), which produces a
// [Reply] or an [*Error] of a stable [Kind]. The packages below host/ (link,
// gateway, dispatch, plugins, pki) exchange only these types and small
// interfaces they declare themselves; cmd/restpipe wires the concrete types
// together.
//
// Bodies are streams everywhere: an Event's Body and a Reply's Body are read
// as they arrive and are never required to sit whole in memory.
package host
