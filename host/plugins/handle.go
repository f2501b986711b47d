package plugins

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/restpipe/restpipe/host"
)

// pluginHandle is the host.Handler the route table holds for one plugin
// file. It sends each event to the plugin's current process; swapping that
// process (a crash, a new version) never touches the table.
type pluginHandle struct {
	file string
	cur  atomic.Pointer[instance] // nil while the plugin is not running
	why  atomic.Pointer[string]   // why it is not running, when cur is nil
}

// setUnavailable stops routing to the plugin, with the reason callers get.
func (h *pluginHandle) setUnavailable(why string) {
	h.why.Store(&why)
	h.cur.Store(nil)
}

// Handle implements host.Handler.
func (h *pluginHandle) Handle(ctx context.Context, ev *host.Event) (*host.Reply, error) {
	for {
		in := h.cur.Load()
		if in == nil {
			why := "plugin " + h.file + " is not running"
			if w := h.why.Load(); w != nil {
				why = *w
			}
			return nil, host.Errorf(host.KindPluginUnavailable, "%s", why)
		}
		if in.acquire() {
			start := time.Now()
			rep, err := in.handle(ctx, ev)
			in.observer.ObservePluginCall(time.Since(start), host.KindOf(err))
			return rep, err
		}
		// in is draining: a newer process has replaced it, or the plugin
		// is going away. Look again.
		if h.cur.Load() == in {
			return nil, host.Errorf(host.KindPluginUnavailable, "plugin %s is stopping", h.file)
		}
	}
}
