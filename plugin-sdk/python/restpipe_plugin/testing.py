"""Test handlers without a node.

Harness runs a Plugin inside the test's process behind a real event socket
and speaks to it exactly as a node does (proto/plugin/v1, the node's side of
plugin-sdk/eventpath): events framed on Unix connections, bodies streamed
both ways, connections reused, deadlines sent and abandoned events' hang-ups.
Only go-plugin's gRPC is left out: Describe is called directly::

    from restpipe_plugin.testing import Harness

    def test_shout():
        with Harness(p, config={"greeting": "hi"}) as h:
            r = h.call("get", "shout", args=["abc"], peer="web1")
            assert r.status == 200 and r.json() == {"shouted": "ABC", ...}

A handler that raises gives a Result whose failure is RestPipe's exception
object ({"message", "class", "traceback"}); a route the plugin does not
serve gives refused == "no_route".
"""

import json
import logging
import shutil
import socket
import tempfile
import threading
import time

from . import eventpath, frame
from ._proto import plugin_pb2 as pb
from .plugin import PROTOCOL_VERSION, Dispatcher


class Result:
    """A plugin's answer to one call: status (200 when the plugin left it
    0), code, content_type and body, or failure (a dict with message, class
    and traceback) and refused ("no_route", "unavailable" or "")."""

    def __init__(self, hdr, body):
        self.failure = None
        self.refused = ""
        if hdr.HasField("failure"):
            f = hdr.failure
            self.failure = {"message": f.message, "class": getattr(f, "class"), "traceback": f.traceback}
            self.refused = hdr.refused
        self.status = hdr.status or 200
        self.code = hdr.return_code
        self.content_type = hdr.content_type
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        if self.failure:
            return "Result(failure=%r, refused=%r)" % (self.failure, self.refused)
        return "Result(status=%d, code=%d, content_type=%r, %d bytes)" % (self.status, self.code, self.content_type, len(self.body))


class Harness:
    """A Plugin served in this process; call its routes as a node would.
    Use it as a context manager, or call close."""

    def __init__(self, plugin, node=("server", "test"), config=None, log=None):
        self._dir = tempfile.mkdtemp(prefix="restpipe-harness-")
        self.dispatcher = Dispatcher(plugin, log or logging.getLogger(plugin.name))
        self.socket = self.dispatcher.listen(self._dir)
        req = pb.DescribeRequest(protocol_version=PROTOCOL_VERSION, node=pb.Node(role=node[0], name=node[1]),
                                 config=config or {})
        #: The plugin's DescribeResponse.
        self.description = self.dispatcher.describe(req)
        self._lock = threading.Lock()
        self._idle = []
        #: How many event connections the harness opened so far.
        self.dials = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for s in idle:
            s.close()
        self.dispatcher.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def stats(self):
        """Returns the plugin's (running, abandoned, served)."""
        s = self.dispatcher.stats()
        return s.running, s.abandoned, s.served

    def peer_event(self, kind, peer="", peers=0, error=""):
        """Delivers a peer event to the plugin's hook."""
        self.dispatcher.peer_event(pb.PeerEventRequest(kind=kind, peer=peer, peers=peers, error=error,
                                                       unix_nano=time.time_ns()))

    def call(self, verb, noun, args=(), query=None, body=None, content_type="", peer="", timeout=30.0, size=None,
             id="test"):
        """Sends one event and returns its Result. body is bytes, or an
        iterable of bytes streamed (size: its length, -1 or None unknown).
        Raises TimeoutError when the plugin has not answered in timeout
        seconds (the event is then abandoned, as a node abandons it), and
        ConnectionError when the plugin broke off."""
        return self.start(verb, noun, args, query, body, content_type, peer, timeout, size, id).result()

    def start(self, verb, noun, args=(), query=None, body=None, content_type="", peer="", timeout=30.0, size=None,
              id="test"):
        """Sends one event from a thread and returns its Pending call."""
        hdr = pb.EventHeader(id=id, verb=verb, noun=noun, args=list(args), content_type=content_type, peer=peer)
        for k, vs in (query or {}).items():
            hdr.query[k].values.extend([vs] if isinstance(vs, str) else list(vs))
        if body is None:
            hdr.body_size = 0
        elif isinstance(body, (bytes, bytearray, memoryview)):
            hdr.body_size = len(body) if size is None else size
        else:
            hdr.body_size = -1 if size is None else size
        if timeout:
            hdr.timeout_ms = max(1, int(timeout * 1000 + 0.999))
        return Pending(self, hdr, body, timeout)

    def _get(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self.dials += 1
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.socket)
        return s

    def _put(self, s, reusable):
        if reusable:
            with self._lock:
                self._idle.append(s)
        else:
            s.close()


class Pending:
    """One call in flight; result() waits for it, abandon() hangs up on it
    as a node whose caller went away does."""

    def __init__(self, harness, hdr, body, timeout):
        self._h = harness
        self._hdr = hdr
        self._body = body
        self._timeout = timeout
        self._done = threading.Event()
        self._result = None
        self._error = None
        self._abandoned = False
        self._expired = False
        self._sock = harness._get()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def abandon(self):
        """Hangs up: the plugin sees the connection end and cancels the
        handler's event."""
        self._abandoned = True
        _shutdown(self._sock)

    def result(self, timeout=None):
        """Waits for the call and returns its Result, or raises."""
        if not self._done.wait(timeout):
            raise TimeoutError("the call has not ended")
        if self._error is not None:
            raise self._error
        return self._result

    def _expire(self):
        self._expired = True
        _shutdown(self._sock)

    def _run(self):
        s = self._sock
        deadline = time.monotonic() + self._timeout if self._timeout else None
        timer = threading.Timer(self._timeout, self._expire) if self._timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        sender = None
        sent = [False]
        try:
            hdr, body = self._hdr, self._body
            if body is None or hdr.body_size == 0:
                s.sendall(frame.header_frame(hdr))
                sent[0] = True
            elif isinstance(body, (bytes, bytearray, memoryview)) and len(body) <= frame.SMALL_BODY:
                s.sendall(frame.header_frame(hdr))
                _send_body(s, [bytes(body)], hdr.body_size)
                sent[0] = True
            else:
                # A larger body is sent while the reply is read, as a node
                # does: a handler may answer (an echo) before it has all.
                if isinstance(body, (bytes, bytearray, memoryview)):
                    body = [bytes(body)]
                s.sendall(frame.header_frame(hdr))

                def send():
                    try:
                        _send_body(s, body, hdr.body_size)
                        sent[0] = True
                    except (OSError, ValueError):
                        pass
                sender = threading.Thread(target=send, daemon=True)
                sender.start()
            fr = frame.Reader(s, eventpath.MAX_HEADER, trailer=eventpath.trailer_error)
            try:
                rh = fr.read_msg(pb.ReplyHeader)
            except EOFError:
                raise ConnectionError("the plugin closed the connection before replying") from None
            data = b""
            if not rh.HasField("failure") and rh.body_size != 0:
                fr.start_body(rh.body_size)
                parts = []
                while True:
                    chunk = fr.read_body(frame.CHUNK)
                    if not chunk:
                        break
                    parts.append(chunk)
                data = b"".join(parts)
            else:
                fr.start_body(0)
            if deadline is not None and time.monotonic() >= deadline:
                # The timer is late (a loaded machine); a node would have
                # given up at the deadline all the same.
                self._expire()
                raise TimeoutError()
            self._result = Result(rh, data)
            if sender is not None:
                sender.join(1.0)
                if sender.is_alive():
                    _shutdown(s)  # the rest of the body is not wanted
            self._h._put(s, sent[0] and fr.body_done() and not self._abandoned and not self._expired)
            s = None
        except Exception as e:
            if self._expired:
                self._error = TimeoutError("no reply within %gs" % self._timeout)
            elif self._abandoned:
                self._error = ConnectionAbortedError("abandoned")
            elif isinstance(e, (frame.FrameError, frame.BodyError, OSError)):
                self._error = ConnectionError("the plugin broke off: %s" % e)
            else:
                self._error = e
        finally:
            if timer:
                timer.cancel()
            if s is not None:
                s.close()
            self._done.set()


def _send_body(s, parts, size):
    sent = 0
    for chunk in parts:
        view = memoryview(chunk).cast("B")
        for i in range(0, len(view), frame.CHUNK):
            piece = view[i:i + frame.CHUNK]
            sent += len(piece)
            s.sendall(frame.frame_header(frame.TYPE_DATA, len(piece)) + piece.tobytes())
    if size >= 0 and sent != size:
        s.sendall(frame.end_frame(pb.Trailer(error="body of %d bytes, announced %d" % (sent, size))))
        return
    s.sendall(frame.END)


def _shutdown(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


__all__ = ["Harness", "Pending", "Result"]
