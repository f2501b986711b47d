"""RestPipe compatibility: serve a RestPipe event handler as it is.

RestPipe (github.com/dsoprea/RestPipe) found an event's handler by name on
an event-handler object and called it as ``method(ctx, (mimetype, data),
*args)``. A handler class written for it runs unchanged under restpipe::

    #!/usr/bin/env python3
    from restpipe_plugin import restpipe

    class TestServerEventHandler(object):
        def get_time(self, ctx, post_data):
            return {'time_from_server': time.time()}

        def get_cat(self, ctx, post_data, x, y):
            return {'result_from_server': str(x) + str(y)}

    restpipe.serve(TestServerEventHandler(), name="restpipe-compat", version="1.0.0")

serve() registers every public method whose name is a route name,
``<verb>_<rest>`` with verb get, post, put, patch or delete (get_time_utc
answers GET /server/time/utc, as in RestPipe); any other method, such as
RestPipe's start_hook and stop_hook, is not a route. Each is called as
RestPipe called it:

- ctx.participant_address is the verified name of the calling peer (from its
  certificate; "" for a caller on the same node), not an address.
- post_data is (mimetype, data): the request's content type without
  parameters ("" when none), and its body, decoded from JSON when the
  mimetype is application/json and the body is not empty, else the raw
  bytes (b"" when none).
- args are the arguments after the path's "//", as strings.

Its return value is read as RestPipe read it: a 3-tuple is (mimetype, code,
data), anything else is data, with code 0 and mimetype application/json
(also when the tuple's mimetype is None). data None is an empty body; str
and bytes are sent as they are; a generator streams; anything else is
encoded as JSON when the mimetype is application/json, and is an error
otherwise. code becomes X-Event-Return-Code. The HTTP status is 200.

An exception is the handler_failed outcome (HTTP 500, return code 251),
whose body carries RestPipe's exception object: its message, class and
(when the node logs at debug level) traceback.

Bodies are read whole before the method is called, as RestPipe did; use the
native API (restpipe_plugin.Plugin) for bodies that must stream.
"""

import inspect
import json
import types

from .plugin import VERBS, Plugin
from .reply import Reply

_CT_JSON = "application/json"

#: The peer event kinds a hooks object may have methods for, each called
#: as method(peer, count): RestPipe's ServerStateChangeEvent.connection_added
#: and connection_removed, and the client's equivalents.
HOOKS = ("connection_added", "connection_removed", "connection_success", "connection_lost", "connection_fail")


class ConnectionContext:
    """The ctx a RestPipe handler receives. participant_address is the
    verified name of the calling peer; event is the native Event, node the
    Node this plugin runs on."""

    __slots__ = ("participant_address", "event", "node")

    def __init__(self, event):
        self.participant_address = event.peer
        self.event = event
        self.node = event.node

    def __repr__(self):
        return "ConnectionContext(participant_address=%r)" % (self.participant_address,)


def routes_of(handler):
    """Returns {route name: (verb, noun, method)} for the public methods of
    handler whose names are route names."""
    out = {}
    for attr in sorted(dir(handler)):
        if attr.startswith("_"):
            continue
        verb, sep, rest = attr.partition("_")
        if not sep or verb not in VERBS or not rest:
            continue
        if not all(c.isascii() and (c.isalnum() or c == "_") for c in rest):
            continue
        try:
            fn = getattr(handler, attr)
        except Exception:
            continue
        if callable(fn):
            out[attr] = (verb, rest, fn)
    return out


def _call(fn):
    def handle(ev):
        mimetype = ev.content_type or ""
        data = ev.body()
        if mimetype == _CT_JSON and data:
            data = json.loads(data)
        result = fn(ConnectionContext(ev), (mimetype, data), *ev.args)
        return reply_of(result)
    handle.__name__ = getattr(fn, "__name__", "handler")
    return handle


def reply_of(result):
    """Returns the Reply of a RestPipe handler's return value."""
    code = 0
    mimetype = None
    if isinstance(result, tuple) and len(result) == 3:
        mimetype, code, data = result
    else:
        data = result
    if mimetype is None:
        mimetype = _CT_JSON
    if data is None:
        data = b""
    if isinstance(data, (str, bytes, bytearray, memoryview)):
        return Reply(data if not isinstance(data, str) else data.encode("utf-8"), content_type=mimetype, code=code)
    if isinstance(data, types.GeneratorType) or inspect.isgenerator(data):
        return Reply.stream(data, content_type=mimetype, code=code)
    if mimetype == _CT_JSON:
        return Reply(json.dumps(data).encode("utf-8"), content_type=mimetype, code=code)
    raise ValueError("Response was invalid type and we're not allowed to encode it to JSON: [%s] (mimetype %s)"
                     % (type(data).__name__, mimetype))


def plugin_of(handler, name=None, version="0.0.0", hooks=None):
    """Returns the Plugin that serves handler's methods (see the module's
    doc), and hands peer events to the methods of hooks named after them
    (HOOKS), if given."""
    p = Plugin(name or type(handler).__name__, version)
    for route, (verb, noun, fn) in routes_of(handler).items():
        p.handle(verb, noun, _call(fn))
    if hooks is not None:
        methods = {k: getattr(hooks, k) for k in HOOKS if callable(getattr(hooks, k, None))}
        if methods:
            @p.on_peer
            def on_peer(ev):
                m = methods.get(ev.kind)
                if m is not None:
                    m(ev.peer, ev.peers)
    return p


def serve(handler, name=None, version="0.0.0", hooks=None):
    """Serves handler, a RestPipe-style event handler object, as a restpipe
    plugin named name (default: its class's name); does not return."""
    plugin_of(handler, name, version, hooks).serve()
