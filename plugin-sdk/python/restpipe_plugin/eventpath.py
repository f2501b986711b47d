"""The plugin's side of the event connections of the restpipe plugin
protocol (proto/plugin/v1/plugin.proto says the protocol whole).

This is the Python twin of plugin-sdk/eventpath/server.go and behaves as it
does: the node opens connections to the plugin's event socket and sends one
event at a time on each (HEADER EventHeader, then the body's DATA and END
frames unless body_size is 0); the plugin answers with HEADER ReplyHeader
and, unless the reply is a failure or has no body, DATA and END frames.

Each connection has a reader thread and a runner thread. The reader reads
the event's header and body (a body of known size up to WHOLE_BODY whole,
before the handler runs; a larger or unknown one streamed to the handler
through a small bounded queue) and then keeps reading while the handler runs
on the runner thread: the next event's header (the node sends it only once
the reply is complete), or the end of the connection, which means the node
abandoned the event (its caller went away or its deadline passed) and
cancels the handler's event. A reader waiting for a handler that does not
read its streamed body asks the kernel every HANG_UP_POLL seconds whether
the node hung up (POLLRDHUP), so that handler learns of it too.

Bodies of known size must be exactly that long, both ways; headers are at
most MAX_HEADER bytes, refused before they are allocated; a reply body that
cannot be finished (its iterator raises, or it does not match its size) is
ended by an END frame carrying a Trailer, never cut short.
"""

import os
import select
import socket
import struct
import threading
import time
import queue

from . import frame
from ._proto import plugin_pb2 as pb

#: The largest HEADER payload on an event connection, either way.
MAX_HEADER = 64 << 10
#: The largest request body of known size read whole before the handler runs.
WHOLE_BODY = 64 << 10
#: The environment variable naming the plugin's private directory (go-plugin
#: makes it, mode 0700), and the event socket's name in it.
SOCKET_DIR_ENV = "PLUGIN_UNIX_SOCKET_DIR"
SOCKET_NAME = "events.sock"
#: The largest relative deadline an EventHeader may carry; more is clamped.
MAX_TIMEOUT = 365 * 24 * 3600.0
#: How often a reader that waits for a handler checks for a hang-up.
HANG_UP_POLL = 0.1
#: The values of ReplyHeader.refused: the plugin ran no handler.
REFUSED_NO_ROUTE = "no_route"
REFUSED_UNAVAILABLE = "unavailable"

#: How many body chunks (of at most frame.CHUNK bytes) wait for a handler
#: that reads its streamed body: what bounds the plugin's memory per event.
STREAM_QUEUE = 8

NODE_LEFT = "the node abandoned the event"
DEADLINE = "the event's deadline passed"
HANDLER_DONE = "the handler has returned"

_POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)


def timeout_seconds(ms):
    """Returns the deadline an EventHeader's timeout_ms gives, in seconds
    from now: 0 for none, at most MAX_TIMEOUT."""
    if ms <= 0:
        return 0.0
    return min(ms / 1000.0, MAX_TIMEOUT)


class Cancelled(Exception):
    """The event was cancelled: the node abandoned it (its caller went away)
    or its deadline passed. Reading the body of a cancelled event raises it."""


def trailer_error(payload):
    """Turns an END frame's trailer into the body's exception, or None."""
    t = pb.Trailer()
    try:
        t.ParseFromString(payload)
    except Exception as e:
        return frame.Malformed("decode trailer: %s" % e)
    if not t.error:
        return None
    return frame.BodyError(t.error)


class Response:
    """A handler's answer on the wire: a ReplyHeader and its body.

    body is None (no body), a bytes-like object (its length is the size), or
    an iterable of bytes sent as it yields, header.body_size bytes of it
    (-1: unknown). A header with failure set is sent alone. An iterable with
    a close method is closed once sent, or when sending fails.
    """

    __slots__ = ("header", "body")

    def __init__(self, header, body=None):
        self.header = header
        self.body = body


class Event:
    """One event as the event server hands it to its handler: the header,
    the body, the deadline and the cancellation. Its methods are safe for
    concurrent use."""

    def __init__(self, server, sock, header):
        self.header = header
        self._server = server
        self._sock = sock
        t = timeout_seconds(header.timeout_ms)
        #: The deadline as a time.monotonic() value, or None.
        self.deadline = time.monotonic() + t if t > 0 else None
        self._cancel = threading.Event()
        self._cause = None
        self._finished = False
        self.body = None  # set by the reader before the handler runs
        self.body_done = False  # the request body was read to its END
        self.reusable = False  # the reply went out whole
        self.done = threading.Event()

    def cancel(self, cause):
        """Cancels the event with a cause, once."""
        with self._server._lock:
            if self._cause is None:
                self._cause = cause
        self._cancel.set()

    def cancelled(self):
        """Reports whether the event was cancelled or its deadline passed."""
        if self._cancel.is_set():
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.cancel(DEADLINE)
            return True
        return False

    def cause(self):
        """Returns why the event was cancelled, or None."""
        self.cancelled()
        return self._cause

    def wait(self, timeout=None):
        """Blocks until the event is cancelled or its deadline passes, or for
        timeout seconds; returns cancelled()."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            limits = [x - now for x in (end, self.deadline) if x is not None]
            wait = max(0.0, min(limits)) if limits else None
            if self._cancel.wait(wait) or self.cancelled():
                return True
            if end is not None and time.monotonic() >= end:
                return False

    def read_body(self, limit=frame.CHUNK):
        """Returns the next request body bytes, b"" at its end. Raises
        Cancelled, frame.BodyError or frame.FrameError when it fails."""
        return self.body.read(limit)

    # -- run on the connection's runner thread ---------------------------

    def run(self):
        server = self._server
        ok = False
        try:
            try:
                resp = server._handler(self)
            except BaseException as e:  # the SDK's layer catches handler errors; this is a last guard
                server._report("event handler layer failed: %r" % (e,))
                resp = Response(pb.ReplyHeader(failure=pb.Exception(message=str(e), **{"class": type(e).__name__})))
            ok = write_response(self._sock, resp, self, server._report)
        except BaseException as e:
            server._report("event %s: the reply could not be sent: %r" % (self.header.id, e))
            _shutdown(self._sock)
        finally:
            # The reply body may have read the request body (an echo
            # does): only once it is sent does the reader drop what the
            # handler left.
            self.body.handler_returned()
            with server._lock:
                server._running -= 1
                server._served += 1
                server._orphans.discard(self)
                self._finished = True
            self.reusable = ok
            self.cancel(HANDLER_DONE)
            self.done.set()

    def abandoned(self):
        """Reports whether the event's handler still runs after its event
        ended (cancelled, or past its deadline)."""
        return not self._finished and self.cancelled()


class _WholeBody:
    """A request body read whole before the handler ran."""

    def __init__(self, data):
        self._data = data
        self._pos = 0

    def read(self, limit):
        out = self._data[self._pos:self._pos + limit]
        self._pos += len(out)
        return out

    def handler_returned(self):
        pass


class _FailedBody:
    """A request body that failed before the handler ran."""

    def __init__(self, err):
        self._err = err

    def read(self, limit):
        raise self._err

    def handler_returned(self):
        pass


_END = object()


class _StreamBody:
    """A request body streamed to the handler through a bounded queue fed by
    the connection's reader."""

    def __init__(self, ev):
        self._ev = ev
        self._q = queue.Queue(STREAM_QUEUE)
        self._returned = False
        self._pending = b""  # the rest of a chunk larger than a read asked for
        self._end = None  # _END or the exception, once the reader gave it

    def read(self, limit):
        if self._pending:
            out, self._pending = self._pending[:limit], self._pending[limit:]
            return out
        if self._end is None:
            item = self._q.get()
            if item is not _END and not isinstance(item, BaseException):
                if len(item) > limit:
                    item, self._pending = item[:limit], item[limit:]
                return item
            self._end = item
        if self._end is _END:
            return b""
        if self._ev.cancelled() and not isinstance(self._end, frame.BodyError):
            raise Cancelled(self._ev.cause() or NODE_LEFT)
        raise self._end

    def offer(self, data, server):
        """Gives the handler a chunk, waiting while it reads slower than the
        node sends. Returns False once the handler returned (the rest is
        dropped) or the server closes."""
        since = time.monotonic()
        while True:
            if self._returned or server._closed:
                return False
            try:
                self._q.put(data, timeout=HANG_UP_POLL)
                return True
            except queue.Full:
                pass
            ev = self._ev
            if not ev.cancelled() and time.monotonic() - since >= HANG_UP_POLL and hung_up(ev._sock):
                ev.cancel(NODE_LEFT)

    def finish(self, item, server):
        """Ends the body: _END or an exception, waiting for room unless the
        handler returned."""
        while not (self._returned or server._closed):
            try:
                self._q.put(item, timeout=HANG_UP_POLL)
                return
            except queue.Full:
                pass

    def handler_returned(self):
        self._returned = True
        # Make room, so that a reader blocked on the queue sees it at once.
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass


class _ConnState:
    __slots__ = ("sock", "cur")

    def __init__(self, sock):
        self.sock = sock
        self.cur = None  # the event whose handler runs, if any


class EventServer:
    """Serves event connections to a handler. Create it, call serve (from a
    thread of its own) with a listening Unix socket, and close it when done.
    Its methods are safe for concurrent use.

    handler(event) answers one Event with a Response. It runs on the
    connection's runner thread and must return once the event is cancelled.
    on_error, when set, hears (from a connection's thread) about
    connections refused or broken off for breaking the protocol.
    """

    def __init__(self, handler, on_error=None):
        self._handler = handler
        self._on_error = on_error
        self._lock = threading.Lock()
        self._closed = False
        self._listeners = set()
        self._conns = {}
        self._orphans = set()
        self._running = 0
        self._served = 0
        self._readers = []

    def stats(self):
        """Returns (running, abandoned, served): handlers running now, those
        of them whose event already ended, and events answered so far."""
        with self._lock:
            orphans = set(self._orphans)
            curs = [cs.cur for cs in self._conns.values() if cs.cur is not None]
            running, served = self._running, self._served
        abandoned = len(orphans) + sum(1 for ev in curs if ev not in orphans and ev.abandoned())
        return running, abandoned, served

    def _report(self, msg):
        if self._on_error is not None:
            try:
                self._on_error(msg)
            except Exception:
                pass

    def serve(self, ln):
        """Accepts connections on ln until close; closes ln when it returns.
        Connections from another user than this process's (root excepted)
        are refused where the kernel tells who connects (Linux)."""
        with self._lock:
            if self._closed:
                ln.close()
                return
            self._listeners.add(ln)
        try:
            while True:
                try:
                    sock, _ = ln.accept()
                except OSError:
                    if self._closed:
                        return
                    time.sleep(0.01)
                    continue
                why = check_peer(sock)
                if why:
                    self._report(why)
                    sock.close()
                    continue
                cs = _ConnState(sock)
                with self._lock:
                    if self._closed:
                        sock.close()
                        return
                    self._conns[sock] = cs
                    t = threading.Thread(target=self._serve_conn, args=(cs,), name="restpipe-event-reader", daemon=True)
                    self._readers.append(t)
                    self._readers = [r for r in self._readers if r.is_alive() or r is t]
                t.start()
        finally:
            ln.close()

    def close(self, timeout=2.0):
        """Stops accepting, ends every connection (cancelling the events of
        their handlers) and waits up to timeout seconds for the readers.
        Handlers that ignore their cancellation may still run."""
        with self._lock:
            self._closed = True
            lns = list(self._listeners)
            conns = list(self._conns)
            readers = list(self._readers)
        for ln in lns:
            _shutdown(ln)
        for sock in conns:
            _shutdown(sock)
        end = time.monotonic() + timeout
        for t in readers:
            t.join(max(0.0, end - time.monotonic()))

    # -- one connection ---------------------------------------------------

    def _serve_conn(self, cs):
        sock = cs.sock
        runner = None
        fr = frame.Reader(sock, MAX_HEADER, trailer=trailer_error)
        try:
            while True:
                try:
                    hdr = fr.read_msg(pb.EventHeader)
                except EOFError:
                    return
                except frame.FrameError as e:
                    self._report("event connection: %s" % e)
                    return
                ev = Event(self, sock, hdr)
                with self._lock:
                    self._running += 1
                cs.cur = ev
                if runner is None:
                    runner = _Runner(sock)
                size = hdr.body_size
                if size != 0 and (size < 0 or size > WHOLE_BODY):
                    fr.start_body(size)
                    body = _StreamBody(ev)
                    ev.body = body
                    runner.submit(ev)
                    self._pump(ev, fr, body)
                else:
                    ev.body = _read_whole(fr, size, ev)
                    runner.submit(ev)
                # While the handler runs, wait for the node: more bytes are
                # the next event's header; the end of the connection
                # abandons the event.
                if not fr.peek():
                    ev.cancel(NODE_LEFT)
                    with self._lock:
                        if not ev.done.is_set():
                            self._orphans.add(ev)
                    return
                ev.done.wait()
                cs.cur = None
                if not ev.reusable or not ev.body_done:
                    return
        finally:
            _shutdown(sock)
            with self._lock:
                self._conns.pop(sock, None)
            if runner is not None:
                runner.stop()  # closes the socket once its event is done
            else:
                sock.close()

    def _pump(self, ev, fr, body):
        """Copies the streamed request body into the handler's queue, until
        its END or a failure; once the handler returned, drops the rest."""
        keep = True
        while True:
            try:
                data = fr.read_body(frame.CHUNK)
            except frame.Truncated as e:
                ev.cancel(NODE_LEFT)
                body.finish(e, self)
                return
            except (frame.FrameError, frame.BodyError) as e:
                body.finish(e, self)
                return
            if not data:
                ev.body_done = True
                body.finish(_END, self)
                return
            if keep:
                keep = body.offer(data, self)


class _Runner:
    """Runs the handlers of one connection's events, one at a time, on a
    thread that lives as long as the connection; it closes the socket when
    it stops."""

    def __init__(self, sock):
        self._sock = sock
        self._q = queue.SimpleQueue()
        self._t = threading.Thread(target=self._loop, name="restpipe-event-runner", daemon=True)
        self._t.start()

    def submit(self, ev):
        self._q.put(ev)

    def stop(self):
        self._q.put(None)

    def _loop(self):
        try:
            while True:
                ev = self._q.get()
                if ev is None:
                    return
                ev.run()
        finally:
            self._sock.close()


def _read_whole(fr, size, ev):
    """Reads a body of size bytes (at most WHOLE_BODY) and its END."""
    if size == 0:
        ev.body_done = True
        return _WholeBody(b"")
    fr.start_body(size)
    parts = []
    try:
        while True:
            data = fr.read_body(frame.CHUNK)
            if not data:
                break
            parts.append(data)
    except frame.Truncated as e:
        ev.cancel(NODE_LEFT)
        return _FailedBody(e)
    except (frame.FrameError, frame.BodyError) as e:
        return _FailedBody(e)
    ev.body_done = True
    return _WholeBody(b"".join(parts))


class _SendFailed(Exception):
    """Writing to the connection failed: the node went away."""


def _send(sock, data):
    try:
        sock.sendall(data)
    except OSError as e:
        raise _SendFailed(e) from None


def _send_parts(sock, parts):
    """Sends the buffers in parts in as few system calls as it can."""
    try:
        total = sum(len(p) for p in parts)
        sent = sock.sendmsg(parts)
        if sent == total:
            return
        rest = b"".join(bytes(p) for p in parts)[sent:]
        sock.sendall(rest)
    except OSError as e:
        raise _SendFailed(e) from None


def _bytes_like(b):
    return isinstance(b, (bytes, bytearray, memoryview))


def _close_body(body):
    close = getattr(body, "close", None)
    if close is not None and not _bytes_like(body):
        try:
            close()
        except Exception:
            pass


def write_response(sock, resp, ev, report):
    """Writes a handler's answer, its header then its body; returns whether
    it went out whole (the connection may carry another event)."""
    if resp is None or resp.header is None:
        resp = Response(pb.ReplyHeader())
    hdr = resp.header
    body = resp.body
    try:
        if hdr.HasField("failure"):
            _close_body(body)
            _send(sock, frame.header_frame(pb.ReplyHeader(failure=hdr.failure, refused=hdr.refused)))
            return True
        if body is None:
            hdr.body_size = 0
            _send(sock, frame.header_frame(hdr))
            return True
        if isinstance(body, str):
            body = body.encode("utf-8")
        if _bytes_like(body):
            view = memoryview(body).cast("B")
            hdr.body_size = len(view)
            head = frame.header_frame(hdr)
            if len(view) == 0:
                _send(sock, head)
                return True
            if len(view) <= frame.SMALL_BODY:
                _send(sock, head + frame.frame_header(frame.TYPE_DATA, len(view)) + view.tobytes() + frame.END)
                return True
            _send(sock, head)
            for i in range(0, len(view), frame.CHUNK):
                piece = view[i:i + frame.CHUNK]
                _send_parts(sock, [frame.frame_header(frame.TYPE_DATA, len(piece)), piece])
            _send(sock, frame.END)
            return True
        return _write_stream(sock, hdr, body, ev, report)
    except _SendFailed:
        ev.cancel(NODE_LEFT)
        _close_body(body)
        return False


def _write_stream(sock, hdr, body, ev, report):
    size = hdr.body_size if hdr.body_size >= 0 else -1
    hdr.body_size = size
    _send(sock, frame.header_frame(hdr))
    if size == 0:
        _close_body(body)
        return True
    sent = 0
    try:
        try:
            for chunk in body:
                if isinstance(chunk, str):
                    chunk = chunk.encode("utf-8")
                if not _bytes_like(chunk):
                    raise TypeError("a reply stream must yield bytes, not %s" % type(chunk).__name__)
                view = memoryview(chunk).cast("B")
                for i in range(0, len(view), frame.CHUNK):
                    piece = view[i:i + frame.CHUNK]
                    sent += len(piece)
                    if 0 <= size < sent:
                        raise frame.longer(size)
                    _send_parts(sock, [frame.frame_header(frame.TYPE_DATA, len(piece)), piece])
            if size >= 0 and sent != size:
                raise frame.shorter(sent, size)
        except _SendFailed:
            raise
        except Exception as e:
            # The body cannot be finished: say so in its END, so the node
            # never takes it as complete.
            msg = "%s: %s" % (type(e).__name__, e) if not isinstance(e, frame.FrameError) else str(e)
            report("reply body of %s failed after %d bytes: %s" % (ev.header.id or "an event", sent, msg))
            _send(sock, frame.end_frame(pb.Trailer(error=msg)))
            return False
        _send(sock, frame.END)
        return True
    finally:
        _close_body(body)


def check_peer(sock):
    """Returns why a Unix connection from another user than this process's
    (root excepted) is refused, as the kernel reports it (SO_PEERCRED), or
    None. The socket's 0700 directory already keeps other users out; this
    holds even when that directory's mode is loosened."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    try:
        pid, uid, _ = struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("iII")))
    except OSError as e:
        return "event connection: read peer credentials: %s" % e
    me = os.getuid()
    if uid != me and uid != 0:
        return "event connection refused: from user %d (pid %d), this plugin runs as user %d" % (uid, pid, me)
    return None


def hung_up(sock):
    """Reports whether the other end of a connection has closed it, even
    while unread data is still queued (POLLRDHUP), without reading."""
    try:
        p = select.poll()
        p.register(sock.fileno(), _POLLRDHUP)
        for _, revents in p.poll(0):
            if revents & (_POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return True
    except (OSError, ValueError):
        return True
    return False


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
