// Command time is restpipe's first example plugin, RestPipe's own: it tells
// the caller the time on the node it runs on.
//
//	GET /server/time      → {"time_from_server": 1767225600.123456}
//	GET /server/time/utc  → {"utc_from_server": "2026-01-01T00:00:00.123456789Z"}
//
// The key names the role of the node answering, "server" or "client":
// GET /client/c1/time from the server node gives {"time_from_client": ...}.
// The epoch time is in seconds, as a float.
//
// Build it and drop the binary into the node's plugins directory (--plugins):
//
//	go build -o /path/to/plugins/time ./plugins/time
package main

import (
	"context"
	"time"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
)

func main() { newPlugin(time.Now).Serve() }

// newPlugin returns the plugin, reading the clock with now.
func newPlugin(now func() time.Time) *pluginsdk.Plugin {
	p := pluginsdk.New("time", "1.0.0")
	p.Handle("get", "time", func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		t := now()
		return pluginsdk.JSON(map[string]float64{"time_from_" + ev.Node.Role: float64(t.UnixNano()) / 1e9}), nil
	})
	p.Handle("get", "time/utc", func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		return pluginsdk.JSON(map[string]string{"utc_from_" + ev.Node.Role: now().UTC().Format(utcLayout)}), nil
	})
	return p
}

// utcLayout is RFC 3339 in UTC with all nine digits of nanoseconds, so that
// the strings sort like the times they show.
const utcLayout = "2006-01-02T15:04:05.000000000Z"
