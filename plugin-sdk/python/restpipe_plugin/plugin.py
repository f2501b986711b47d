"""Plugins: routes, configuration, peer hooks, and the protocol server that
answers the node (the Python twin of plugin-sdk/plugin.go and server.go)."""

import collections
import logging
import os
import socket
import threading

from . import eventpath
from ._proto import plugin_pb2 as pb
from .event import Event, Node
from .reply import exception_msg, failure, reply_of, response_of

#: The version of this SDK, reported to the node ("python/<version>").
SDK_VERSION = "1.0.0"

#: The plugin protocol version this SDK speaks (proto/plugin/v1).
PROTOCOL_VERSION = 2

#: The verbs a route may have.
VERBS = ("get", "post", "put", "patch", "delete")

#: One change of the node's links, RestPipe's connection hooks. kind is
#: "connection_added" or "connection_removed" on the server node,
#: "connection_success", "connection_lost" or "connection_fail" on a client
#: node; peer the verified name of the other node ("" for connection_fail);
#: peers how many are connected after the change; error why, for
#: connection_fail and connection_lost; time when, in seconds since the epoch.
PeerEvent = collections.namedtuple("PeerEvent", ["kind", "peer", "peers", "error", "time"])


def route_name(verb, noun):
    """Returns the route name of a verb and a noun: ("get", "time/utc")
    gives "get_time_utc"."""
    return verb + "_" + noun.replace("/", "_")


def _check_route(verb, noun):
    if verb not in VERBS:
        raise ValueError("route %r %r: verb must be one of %s" % (verb, noun, ", ".join(VERBS)))
    if not isinstance(noun, str) or not noun:
        raise ValueError("route %r: empty noun" % verb)
    for seg in noun.split("/"):
        if not seg:
            raise ValueError("route %s %r: empty noun segment" % (verb, noun))
        for c in seg:
            if not (c.isascii() and (c.isalnum() or c in "-_")):
                raise ValueError("route %s %r: a noun segment may hold only letters, digits, '-' and '_'" % (verb, noun))


class Plugin:
    """A handler plugin: register its handlers, then call serve().

    ::

        p = Plugin("shout", "1.0.0")

        @p.route("get", "shout")
        def shout(ev):
            return {"shouted": ev.args[0].upper()}

        p.serve()

    A handler takes the Event and returns the reply: a dict, list or other
    JSON value (sent as application/json), a str (text/plain), bytes
    (application/octet-stream), None (an empty reply) or a Reply, which sets
    the content type, HTTP status and X-Event-Return-Code, or streams. An
    exception it raises becomes the handler_failed outcome, carrying
    RestPipe's exception object: its message (str(e)), class
    (type(e).__name__) and traceback.

    Handlers run on threads of their own, one per event in flight: a
    handler may block (sleep, read a file, call a service), and must return
    once ev.cancelled() turns true. Register everything before serve().
    """

    def __init__(self, name, version="0.0.0"):
        if not name or not isinstance(name, str):
            raise ValueError("plugin name must be a non-empty string")
        self.name = name
        self.version = version
        self._routes = {}  # route name -> (verb, noun, fn)
        self._configure = None
        self._on_peer = None

    def route(self, verb, noun):
        """Returns a decorator registering its function as the handler of
        verb (get, post, put, patch, delete) and noun (one or more
        "/"-separated segments of letters, digits, "-" and "_")."""
        def register(fn):
            self.handle(verb, noun, fn)
            return fn
        return register

    def handle(self, verb, noun, fn):
        """Registers fn as the handler of verb and noun. A bad verb or noun,
        or a route registered twice, raises ValueError."""
        _check_route(verb, noun)
        if not callable(fn):
            raise ValueError("route %s: handler %r is not callable" % (route_name(verb, noun), fn))
        name = route_name(verb, noun)
        if name in self._routes:
            old = self._routes[name]
            raise ValueError("route %s registered twice (%s %s and %s %s)" % (name, old[0], old[1], verb, noun))
        self._routes[name] = (verb, noun, fn)

    def configure(self, fn):
        """Registers fn (a decorator) to receive the plugin's configuration
        once, before any event: a dict of str to str, from the node's
        --plugin-config NAME.KEY=VALUE flags or its config file's plugin
        block. An exception from fn stops the plugin from serving; the node
        reports it as misconfigured, with the exception's message."""
        self._configure = fn
        return fn

    def on_peer(self, fn):
        """Asks the node for peer events and registers fn (a decorator) to
        receive them, one PeerEvent at a time, in order. Events that happen
        while the plugin is not running are not replayed."""
        self._on_peer = fn
        return fn

    def routes(self):
        """Returns the names of the registered routes, sorted."""
        return sorted(self._routes)

    @property
    def logger(self):
        """The plugin's logger: its lines reach the node's log under the
        plugin's name, at their level (so does any other logger's)."""
        return logging.getLogger(self.name)

    def check(self):
        """Raises ValueError if the plugin cannot serve: no route and no
        peer hook."""
        if not self._routes and self._on_peer is None:
            raise ValueError("plugin %s registers no route and no peer hook" % self.name)

    def serve(self):
        """Runs the plugin until the node stops it; does not return. Started
        by hand rather than by a node, it says so and exits with status 1."""
        from .goplugin import serve
        serve(self)


class Dispatcher:
    """Answers the node for one Plugin: Describe, PeerEvent and Stats (the
    control service, see control.py) and events on its event socket."""

    def __init__(self, plugin, log=None):
        self.plugin = plugin
        self.log = log or logging.getLogger(plugin.name)
        self._lock = threading.Lock()
        self.node = Node("", "")
        self.described = False
        self.config_err = None
        self.socket = ""
        self.events = eventpath.EventServer(self.serve_event, on_error=self._conn_error)
        self._listener = None

    def _conn_error(self, msg):
        self.log.warning("%s", msg)

    def listen(self, directory):
        """Opens the event socket in directory and serves events on it from
        a thread; returns its path."""
        path = os.path.join(directory, eventpath.SOCKET_NAME)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        ln = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ln.bind(path)
        ln.listen(256)
        self.socket = path
        self._listener = threading.Thread(target=self.events.serve, args=(ln,), name="restpipe-event-accept", daemon=True)
        self._listener.start()
        return path

    def close(self):
        """Ends every event connection and removes the socket."""
        self.events.close()
        if self.socket:
            try:
                os.unlink(self.socket)
            except OSError:
                pass

    def describe(self, req):
        """Answers Describe: the node says where the plugin runs and gives
        its configuration (used once, the first time)."""
        p = self.plugin
        with self._lock:
            self.node = Node(req.node.role, req.node.name)
            if not self.described:
                self.described = True
                if p._configure is not None:
                    try:
                        p._configure(dict(req.config))
                    except Exception as e:
                        self.config_err = e
                        self.log.error("configure failed: %s: %s", type(e).__name__, e, exc_info=True)
            err = self.config_err
        resp = pb.DescribeResponse(name=p.name, version=p.version, protocol_version=PROTOCOL_VERSION,
                                   peer_events=p._on_peer is not None, event_socket=self.socket,
                                   sdk="python/" + SDK_VERSION)
        if req.protocol_version and req.protocol_version != PROTOCOL_VERSION:
            self.log.warning("the node speaks plugin protocol %d, this SDK %d", req.protocol_version, PROTOCOL_VERSION)
        if err is not None:
            resp.error = "configure: %s: %s" % (type(err).__name__, err)
        for name in p.routes():
            verb, noun, _ = p._routes[name]
            resp.routes.add(verb=verb, noun=noun, name=name)
        return resp

    def peer_event(self, req):
        """Hands a peer event to the plugin's hook; raises what it raises."""
        hook = self.plugin._on_peer
        if hook is None:
            raise LookupError("this plugin registered no peer hook")
        hook(PeerEvent(req.kind, req.peer, req.peers, req.error, req.unix_nano / 1e9))

    def stats(self):
        running, abandoned, served = self.events.stats()
        return pb.StatsResponse(running=running, abandoned=abandoned, served=served)

    def serve_event(self, wire):
        """Answers one event from the event socket."""
        hdr = wire.header
        p = self.plugin
        with self._lock:
            node, described, err = self.node, self.described, self.config_err
        name = route_name(hdr.verb, hdr.noun)
        if not described:
            return failure("plugin %s got an event before Describe" % p.name, "NotReady", eventpath.REFUSED_UNAVAILABLE)
        if err is not None:
            return failure("plugin %s is not configured: %s" % (p.name, err), "NotConfigured", eventpath.REFUSED_UNAVAILABLE)
        r = p._routes.get(name)
        if r is None:
            return failure("plugin %s has no handler for %s" % (p.name, name), "NoRoute", eventpath.REFUSED_NO_ROUTE)
        ev = Event(wire, node)
        try:
            return response_of(reply_of(r[2](ev)))
        except BaseException as e:
            if isinstance(e, eventpath.Cancelled) or wire.cancelled():
                self.log.debug("handler of %s ended with its cancelled event: %s: %s", name, type(e).__name__, e)
            else:
                self.log.debug("handler of %s raised %s: %s", name, type(e).__name__, e, exc_info=True)
            exc = exception_msg(e)
            return eventpath.Response(pb.ReplyHeader(failure=exc))
