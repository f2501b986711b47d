// Package pluginv1 holds the restpipe plugin protocol (plugin.proto says
// it whole): the gRPC control service a handler plugin serves, the
// messages of its event connections, and the go-plugin handshake both sides
// must agree on. The Go code that speaks the event connections is
// plugin-sdk/eventpath.
package pluginv1

// The go-plugin handshake. The host sets MagicCookieKey=MagicCookieValue in
// the plugin's environment; a plugin started any other way (by hand) prints
// a message saying it is a plugin and exits, instead of waiting forever.
const (
	MagicCookieKey   = "RESTPIPE_PLUGIN"
	MagicCookieValue = "d5b3e1c2-restpipe-handler-plugin"

	// ProtocolVersion is the go-plugin application protocol version of
	// this package. A plugin built against another version is refused at
	// start with go-plugin's version error. Version 2 moved events from
	// gRPC calls to the event connections.
	ProtocolVersion = 2

	// PluginName is the name of the one plugin a plugin process serves in
	// go-plugin's plugin set.
	PluginName = "handler"
)
