// Package pluginv1 holds the restpipe plugin protocol, version 1: the gRPC
// service a handler plugin serves (generated from plugin.proto) and the
// go-plugin handshake both sides must agree on.
package pluginv1

// The go-plugin handshake. The host sets MagicCookieKey=MagicCookieValue in
// the plugin's environment; a plugin started any other way (by hand) prints
// a message saying it is a plugin and exits, instead of waiting forever.
const (
	MagicCookieKey   = "RESTPIPE_PLUGIN"
	MagicCookieValue = "d5b3e1c2-restpipe-handler-plugin"

	// ProtocolVersion is the go-plugin application protocol version of
	// this package. A plugin built against another version is refused at
	// start with go-plugin's version error.
	ProtocolVersion = 1

	// PluginName is the name of the one plugin a plugin process serves in
	// go-plugin's plugin set.
	PluginName = "handler"
)
