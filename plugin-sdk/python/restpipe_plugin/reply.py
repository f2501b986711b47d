"""Replies: what a handler returns, and how it goes on the wire."""

import json
import os
import traceback

from ._proto import plugin_pb2 as pb
from .eventpath import Response

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"


class Reply:
    """A handler's answer, when a plain return value does not say enough.

    ``Reply(body, content_type=None, status=200, code=0)``: body is bytes
    (sent as they are, application/octet-stream unless content_type says
    otherwise), a str (UTF-8, text/plain), None (no body), or anything else
    JSON can encode (application/json). status is the HTTP status the
    caller gets, 200 to 599; code is its X-Event-Return-Code.

    ``Reply.stream(iterable, content_type=..., size=-1)`` streams a reply of
    any size: the iterable yields bytes (or str, sent as UTF-8) and is read
    as the node takes them, so memory does not grow with the body. size, if
    known, must be exact; a stream that turns out longer or shorter, or
    that raises, fails the event (the caller never takes a partial body for
    a whole one). An iterable with a close method (a generator, a file) is
    closed once sent, or when the event ends first.
    """

    __slots__ = ("body", "content_type", "status", "code", "size", "streamed")

    def __init__(self, body=b"", content_type=None, status=200, code=0):
        self.status = status
        self.code = code
        self.streamed = False
        self.size = None
        if body is None:
            self.body, self.content_type = None, content_type or ""
        elif isinstance(body, (bytes, bytearray, memoryview)):
            self.body, self.content_type = bytes(body), content_type if content_type is not None else OCTETS
        elif isinstance(body, str):
            self.body, self.content_type = body.encode("utf-8"), content_type if content_type is not None else TEXT
        else:
            self.body = json.dumps(body, separators=(",", ":")).encode("utf-8") + b"\n"
            self.content_type = content_type if content_type is not None else JSON

    @classmethod
    def stream(cls, iterable, content_type=OCTETS, size=-1, status=200, code=0):
        """Returns a reply that streams iterable (see Reply)."""
        r = cls(None, content_type=content_type, status=status, code=code)
        r.body, r.streamed, r.size = iterable, True, size if size is not None and size >= 0 else -1
        return r

    def __repr__(self):
        kind = "stream" if self.streamed else "%d bytes" % len(self.body or b"")
        return "Reply(%s, content_type=%r, status=%d, code=%d)" % (kind, self.content_type, self.status, self.code)


def reply_of(value):
    """Turns what a handler returned into a Reply: a Reply as it is, None as
    an empty reply, bytes as application/octet-stream, a str as text, and
    anything else (a dict, a list, a number) as JSON."""
    if isinstance(value, Reply):
        return value
    if value is None:
        return Reply(None)
    return Reply(value)


_SDK_DIR = os.path.dirname(os.path.abspath(__file__))


def exception_msg(exc, tb=True):
    """Returns the protocol's Exception for a Python exception: RestPipe's
    exception object (message, class, traceback). The traceback starts at
    the handler: the SDK's own frames that called it are left out."""
    e = pb.Exception(message=str(exc))
    setattr(e, "class", type(exc).__name__)
    if tb:
        t = exc.__traceback__
        while t is not None and t.tb_next is not None and os.path.dirname(os.path.abspath(t.tb_frame.f_code.co_filename)) == _SDK_DIR:
            t = t.tb_next
        e.traceback = "".join(traceback.format_exception(type(exc), exc, t))
    return e


def failure(message, cls, refused=""):
    """Returns a failure Response: the handler failed (or, with refused,
    none ran)."""
    e = pb.Exception(message=message)
    setattr(e, "class", cls)
    return Response(pb.ReplyHeader(failure=e, refused=refused))


#: The largest streamed reply of known size read before the reply starts.
SMALL_BODY = 64 << 10


def _read_small(iterable, size):
    parts, n = [], 0
    try:
        for chunk in iterable:
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8")
            parts.append(bytes(chunk))
            n += len(parts[-1])
            if n > size:
                raise ValueError("reply body is longer than its announced %d bytes" % size)
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
    if n < size:
        raise ValueError("reply body of %d bytes is shorter than its announced %d" % (n, size))
    return b"".join(parts)


def response_of(reply):
    """Returns the wire Response of a Reply, or raises ValueError for one
    the node would refuse (a status outside 200 to 599)."""
    status = reply.status or 0
    if not isinstance(status, int) or isinstance(status, bool) or status != 0 and not 200 <= status <= 599:
        raise ValueError("reply status %r is not a final HTTP status (200 to 599)" % (reply.status,))
    code = reply.code or 0
    if not isinstance(code, int) or isinstance(code, bool) or not -(1 << 31) <= code < (1 << 31):
        raise ValueError("reply code %r is not a 32-bit integer" % (reply.code,))
    hdr = pb.ReplyHeader(status=status, return_code=code, content_type=reply.content_type or "")
    if reply.streamed and 0 <= reply.size <= SMALL_BODY:
        # A small stream is read before the reply starts, so that one that
        # raises or does not match its size fails the event as a whole
        # (handler_failed) rather than after its status is sent.
        return Response(hdr, _read_small(reply.body, reply.size))
    if reply.streamed:
        hdr.body_size = reply.size
        return Response(hdr, reply.body)
    if not reply.body:
        return Response(hdr, None)
    return Response(hdr, reply.body)
