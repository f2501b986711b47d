"""Events: what a handler receives."""

import collections
import json
import time

from . import frame

#: The node a plugin runs on: role is "server" or "client", name the node's
#: name from its certificate.
Node = collections.namedtuple("Node", ["role", "name"])


class BodyTooLarge(ValueError):
    """The request body is longer than the limit given to Event.body."""


class Event:
    """One request for a handler.

    Attributes: id (the request id, in both nodes' logs), verb (get, post,
    put, patch or delete; HEAD arrives as get), noun ("time/utc"), args (the
    percent-decoded arguments after the path's "//"), query (a dict of lists
    of strings), content_type (without parameters), size (the body's length,
    -1 when unknown), peer (the verified name of the node that sent the
    event, "" for a caller on this node), node (the Node this plugin runs
    on), route ("get_time_utc") and deadline (a time.monotonic() value, or
    None).

    The body streams: chunks() yields it as it arrives, body() reads it all.
    Reading it raises Cancelled once the event is cancelled, and BodyError
    when the sending side could not finish it.
    """

    __slots__ = ("id", "verb", "noun", "args", "query", "content_type", "size", "peer", "node", "_wire")

    def __init__(self, wire, node):
        h = wire.header
        self.id = h.id
        self.verb = h.verb
        self.noun = h.noun
        self.args = list(h.args)
        self.query = {k: list(v.values) for k, v in h.query.items()}
        self.content_type = h.content_type
        self.size = h.body_size
        self.peer = h.peer
        self.node = node
        self._wire = wire

    @property
    def route(self):
        """The event's route name, such as "get_time_utc"."""
        return self.verb + "_" + self.noun.replace("/", "_")

    @property
    def deadline(self):
        """When the event's deadline passes, as a time.monotonic() value, or
        None when it has none."""
        return self._wire.deadline

    def time_left(self):
        """Returns the seconds left before the deadline (0 once it passed),
        or None when the event has none."""
        d = self._wire.deadline
        return None if d is None else max(0.0, d - time.monotonic())

    def cancelled(self):
        """Reports whether the event is over for its caller: the node
        abandoned it (the caller went away) or its deadline passed. A
        handler should stop working and return once it is."""
        return self._wire.cancelled()

    def wait(self, timeout=None):
        """Blocks until the event is cancelled or for timeout seconds
        (None: no limit but the deadline); returns cancelled(). A handler
        that sleeps should sleep in this, so that it wakes when its caller
        is gone."""
        return self._wire.wait(timeout)

    def arg(self, i, default=""):
        """Returns argument i, or default when there are fewer arguments."""
        return self.args[i] if 0 <= i < len(self.args) else default

    def query_value(self, key, default=""):
        """Returns the first value of query key, or default."""
        vs = self.query.get(key)
        return vs[0] if vs else default

    def chunks(self, size=frame.CHUNK):
        """Yields the request body as it arrives, in pieces of at most size
        bytes. Memory does not grow with the body: the node sends no faster
        than the handler reads."""
        while True:
            data = self._wire.read_body(size)
            if not data:
                return
            yield data

    def body(self, limit=None):
        """Returns the (rest of the) request body, all of it. With limit,
        a body longer than limit bytes raises BodyTooLarge instead."""
        if limit is not None and self.size > limit:
            raise BodyTooLarge("request body of %d bytes, the limit is %d" % (self.size, limit))
        parts = []
        n = 0
        for c in self.chunks():
            n += len(c)
            if limit is not None and n > limit:
                raise BodyTooLarge("request body over %d bytes" % limit)
            parts.append(c)
        return b"".join(parts)

    def json(self, limit=8 << 20):
        """Returns the body decoded as JSON (at most limit bytes of it)."""
        return json.loads(self.body(limit))

    def __repr__(self):
        return "Event(%s %s%s from %r)" % (self.verb, self.noun, "//" + "/".join(self.args) if self.args else "", self.peer)
