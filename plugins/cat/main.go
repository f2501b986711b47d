// Command cat is restpipe's second example plugin, RestPipe's own: it
// concatenates its two arguments.
//
//	GET /client/c1/cat//hello%20/world → {"result_from_client": "hello world"}
//
// The key names the role of the node answering, "server" or "client". Any
// other number of arguments fails the event with RestPipe's exception,
// class TypeError: "cat takes exactly 2 arguments (3 given)".
//
// Build it and drop the binary into the node's plugins directory (--plugins):
//
//	go build -o /path/to/plugins/cat ./plugins/cat
package main

import (
	"context"
	"fmt"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
)

func main() { newPlugin().Serve() }

// newPlugin returns the plugin.
func newPlugin() *pluginsdk.Plugin {
	p := pluginsdk.New("cat", "1.0.0")
	p.Handle("get", "cat", func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		if len(ev.Args) != 2 {
			return nil, &pluginsdk.Exception{Class: "TypeError",
				Message: fmt.Sprintf("cat takes exactly 2 arguments (%d given)", len(ev.Args))}
		}
		return pluginsdk.JSON(map[string]string{"result_from_" + ev.Node.Role: ev.Args[0] + ev.Args[1]}), nil
	})
	return p
}
