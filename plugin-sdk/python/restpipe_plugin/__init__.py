"""restpipe_plugin: write restpipe handler plugins in Python.

A plugin is an executable script in a restpipe node's plugins directory::

    #!/usr/bin/env python3
    from restpipe_plugin import Plugin, Reply

    p = Plugin("shout", "1.0.0")

    @p.route("get", "shout")          # GET /server/shout//hello
    def shout(ev):
        return {"shouted": ev.args[0].upper(), "peer": ev.peer, "role": ev.node.role}

    @p.route("post", "count")
    def count(ev):
        return {"bytes": sum(len(c) for c in ev.chunks())}

    p.serve()

The node starts it, supervises it (restarts, quarantine, hot reload,
checksum pinning) exactly like a Go plugin, and sends it the events of its
routes. RestPipe handler classes run unchanged through
restpipe_plugin.restpipe.serve. restpipe_plugin.testing runs handlers
without a node.

Needs Python 3.11+, grpcio and protobuf (Debian: python3-grpcio,
python3-protobuf), nothing else. See docs/python-plugins.md.

Imported by a process a node started, this package takes standard output
for go-plugin's handshake at once, so that what the plugin prints (from here
on) goes to the node's log instead of breaking the protocol (see stdio).
"""

from . import goplugin as _goplugin
from . import stdio as _stdio

if _goplugin.under_node():
    _stdio.guard()
    from . import log as _log
    _log.setup("plugin")

from .event import BodyTooLarge, Event, Node  # noqa: E402
from .eventpath import Cancelled  # noqa: E402
from .frame import BodyError  # noqa: E402
from .plugin import SDK_VERSION, VERBS, PeerEvent, Plugin, route_name  # noqa: E402
from .reply import Reply  # noqa: E402

__version__ = SDK_VERSION

__all__ = ["Plugin", "Reply", "Event", "Node", "PeerEvent", "Cancelled", "BodyError", "BodyTooLarge",
           "VERBS", "route_name", "SDK_VERSION"]
