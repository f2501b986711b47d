// Package pluginsdk is what a restpipe handler plugin imports, and all it
// needs: a plugin is a small program that registers a handler per route and
// calls Serve.
//
//	func main() {
//		p := pluginsdk.New("time", "1.0.0")
//		p.Handle("get", "time", func(ctx context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
//			return pluginsdk.JSON(map[string]float64{"time_from_" + ev.Node.Role: now()}), nil
//		})
//		p.Serve()
//	}
//
// Build it and drop the binary into the node's plugins directory: the node
// starts it, asks it which routes it serves, and sends it the events for
// them. A route is a verb and a noun; its name is RestPipe's, the verb and
// the noun joined by "_" with "/" turned into "_": "get" and "time/utc"
// make "get_time_utc", the handler of GET /server/time/utc.
//
// An Event carries the verb, noun, arguments, query, content type and body
// (a stream) of the request, the verified name of the node that sent it,
// and the node the plugin runs on. The handler's context carries the event's
// deadline and is canceled when the caller goes away. A handler answers with
// a Reply (JSON by default, bytes, or a stream) or an error: a returned
// error or a panic becomes the handler_failed outcome, carrying RestPipe's
// exception object (message, class and, for a panic, the traceback).
//
// Serve speaks the hashicorp/go-plugin gRPC protocol with the node. It keeps
// the process's standard output for that protocol alone: anything a handler
// prints, to os.Stdout or straight to file descriptor 1, goes to standard
// error and from there into the node's log under the plugin's name. Use
// Logger for structured logs.
//
// Configuration: a plugin may register a Configure function. The node calls
// it once, before any event, with the plugin's settings (from the node's
// --plugin-config NAME.KEY=VALUE flags or the plugin's block in its config
// file). An error from it stops the plugin from serving, and the node
// reports why.
//
// Package pluginsdktest runs a plugin over real gRPC inside a test, without
// a node.
package pluginsdk
