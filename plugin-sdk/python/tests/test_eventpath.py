"""The event path, end to end over a real Unix socket: the checklist of
plugin-sdk/eventpath/eventpath_test.go, against the Python server."""

import hashlib
import socket
import threading
import time
import unittest

from restpipe_plugin import Cancelled, Plugin, Reply, eventpath, frame
from restpipe_plugin._proto import plugin_pb2 as pb
from restpipe_plugin.testing import Harness


def wait_for(what, cond, within=10.0):
    end = time.monotonic() + within
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.005)


class EventPathTest(unittest.TestCase):
    def setUp(self):
        self.p = Plugin("t", "1")
        self.seen = {}
        self.causes = []
        self.release = threading.Event()
        p = self.p

        @p.route("post", "echo")
        def echo(ev):
            return Reply.stream(ev.chunks(), content_type=ev.content_type, size=ev.size)

        @p.route("get", "fields")
        def fields(ev):
            self.seen["ev"] = ev
            self.seen["left"] = ev.time_left()
            return Reply(b"", status=201, code=7)

        @p.route("get", "wait")
        def wait(ev):
            ev.wait()
            self.causes.append(ev._wire.cause())
            return None

        @p.route("post", "wait")
        def wait_post(ev):
            return wait(ev)

        @p.route("get", "ok")
        def ok(ev):
            return "ok"

        @p.route("post", "ok")
        def ok_post(ev):
            return "ok"

        @p.route("get", "stubborn")
        def stubborn(ev):
            self.release.wait(20)
            return None

        @p.route("post", "read")
        def read(ev):
            try:
                return ev.body()
            except Exception as e:
                return Reply("%s: %s" % (type(e).__name__, e), content_type="error")

        @p.route("get", "long")
        def long(ev):
            return Reply.stream(iter([b"123456"]), size=5)

        @p.route("get", "short")
        def short(ev):
            return Reply.stream(iter([b"short"]), size=100000)

        @p.route("get", "raises")
        def raises(ev):
            def gen():
                yield b"partial"
                raise OSError("disk gone")
            return Reply.stream(gen())

        @p.route("get", "smallraises")
        def smallraises(ev):
            def gen():
                yield b"partial"
                raise OSError("disk gone")
            return Reply.stream(gen(), size=10)

        self.h = Harness(p)
        self.addCleanup(self.h.close)

    def test_round_trip_and_reuse(self):
        sizes = [0, 1, 100, frame.SMALL_BODY, frame.SMALL_BODY + 1, eventpath.WHOLE_BODY + 1, 3 * frame.CHUNK + 7, 1 << 20]
        for size in sizes:
            for known in (True, False):
                body = b"q" * size
                r = self.h.call("post", "echo", body=body if known else iter([body]), content_type="x/y",
                                size=size if known else -1)
                self.assertIsNone(r.failure, (size, known, r))
                self.assertEqual(len(r.body), size, (size, known))
                self.assertEqual(r.body, body)
                self.assertEqual(r.content_type, "x/y")
        self.assertEqual(self.h.dials, 1, "every event completed, so one connection carried them all")

    def test_header_fields(self):
        r = self.h.call("get", "fields", args=["x", ""], query={"k": ["1", "2"]}, peer="web1", timeout=5, id="r1")
        self.assertEqual((r.status, r.code), (201, 7))
        ev = self.seen["ev"]
        self.assertEqual((ev.id, ev.noun, ev.args, ev.peer, ev.query), ("r1", "fields", ["x", ""], "web1", {"k": ["1", "2"]}))
        self.assertEqual(ev.node.role, "server")
        self.assertTrue(4 < self.seen["left"] <= 5, self.seen["left"])

    def test_cancel_reaches_the_handler(self):
        def blocking(prefix):
            stop = threading.Event()

            def gen():
                yield prefix
                stop.wait(30)
            return gen(), stop
        for name, verb, body in [("no body", "get", None), ("small body", "post", b"abc"),
                                 ("streamed body", "post", "abc"), ("large streamed body not read", "post", "z" * (4 << 20))]:
            stop = None
            if isinstance(body, str):
                body, stop = blocking(body.encode())
            call = self.h.start(verb, "wait", body=body, timeout=30)
            wait_for("the handler to run", lambda: self.h.stats()[0] == 1)
            t0 = time.monotonic()
            call.abandon()
            with self.assertRaises(ConnectionAbortedError):
                call.result(10)
            wait_for("the handler to see it", lambda: len(self.causes) == 1)
            self.assertEqual(self.causes.pop(), eventpath.NODE_LEFT, name)
            self.assertLess(time.monotonic() - t0, 2.0, name)
            wait_for("nothing running", lambda: self.h.stats()[:2] == (0, 0))
            if stop:
                stop.set()
        before = self.h.dials
        self.assertEqual(self.h.call("get", "ok").body, b"ok")
        self.assertEqual(self.h.dials, before + 1, "a cancelled event's connection is never reused")

    def test_deadline_reaches_the_handler(self):
        t0 = time.monotonic()
        with self.assertRaises(TimeoutError):
            self.h.call("get", "wait", timeout=0.3)
        wait_for("the handler to see it", lambda: len(self.causes) == 1)
        self.assertIn(self.causes[0], (eventpath.DEADLINE, eventpath.NODE_LEFT))
        self.assertLess(time.monotonic() - t0, 2.0)

    def test_abandoned_handlers_are_counted(self):
        with self.assertRaises(TimeoutError):
            self.h.call("get", "stubborn", timeout=0.1)
        wait_for("the handler to count as abandoned", lambda: self.h.stats()[:2] == (1, 1))
        self.release.set()
        wait_for("the handler to return", lambda: self.h.stats()[:2] == (0, 0))

    def test_failure_reply_keeps_the_connection(self):
        for _ in range(3):
            r = self.h.call("get", "nothing")
            self.assertEqual(r.refused, "no_route")
        self.assertEqual(self.h.dials, 1)

    def test_request_body_size_is_enforced(self):
        # Sent by hand: a body longer or shorter than announced. The handler
        # reads a failed body, never one that looks complete.
        for name, data, size in [("longer small", b"abcdef", 5), ("shorter small", b"abc", 5),
                                 ("longer streamed", b"x" * 200000, 100000), ("shorter streamed", b"abc", 100000)]:
            s = socket.socket(socket.AF_UNIX)
            s.connect(self.h.socket)
            try:
                s.sendall(frame.header_frame(pb.EventHeader(verb="post", noun="read", body_size=size)))
                s.sendall(frame.frame_header(frame.TYPE_DATA, len(data)) + data + frame.END)
                fr = frame.Reader(s, 1 << 16)
                rh = fr.read_msg(pb.ReplyHeader)
                self.assertEqual(rh.content_type, "error", name)
            finally:
                s.close()

    def test_reply_body_size_is_enforced(self):
        # A large or unknown-size stream that fails ends with a trailer
        # after its status: the caller never takes it for complete.
        for noun in ("short", "raises"):
            with self.assertRaises(ConnectionError, msg=noun) as cm:
                self.h.call("get", noun)
            self.assertIn("body", str(cm.exception))
        # A small one is read before the reply starts: the event fails whole.
        for noun, cls in (("long", "ValueError"), ("smallraises", "OSError")):
            r = self.h.call("get", noun)
            self.assertEqual(r.failure and r.failure["class"], cls, noun)
        self.assertEqual(self.h.call("get", "ok").body, b"ok")

    def test_handler_ignoring_a_large_body(self):
        for size in (1 << 20, -1, 64 << 20):
            n = 64 << 20 if size < 0 else size
            chunk = bytes(1 << 16)
            body = (chunk for _ in range(n // len(chunk)))
            r = self.h.call("post", "ok", body=body, size=size)
            self.assertEqual(r.body, b"ok", size)
        self.assertEqual(self.h.call("get", "ok").body, b"ok")

    def test_large_body_streams_both_ways(self):
        size = 64 << 20
        want = hashlib.sha256()
        chunk = bytes(range(256)) * 256

        def gen():
            for _ in range(size // len(chunk)):
                want.update(chunk)
                yield chunk
        r = self.h.call("post", "echo", body=gen(), size=size, timeout=120)
        self.assertEqual(len(r.body), size)
        self.assertEqual(hashlib.sha256(r.body).digest(), want.digest())

    def test_oversized_header_refused(self):
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.h.socket)
        s.sendall(frame.frame_header(frame.TYPE_HEADER, 1 << 30))
        s.settimeout(10)
        self.assertEqual(s.recv(1), b"", "the plugin answered a 1 GiB header")
        s.close()
        self.assertEqual(self.h.call("get", "ok").body, b"ok")

    def test_cancelled_body_read_raises_cancelled(self):
        got = []
        started = threading.Event()

        @self.p.route("post", "reader")
        def reader(ev):
            started.set()
            try:
                for _ in ev.chunks():
                    pass
            except BaseException as e:
                got.append(e)
        self.h.close()
        self.h = Harness(self.p)
        stop = threading.Event()

        def gen():
            yield b"x" * 100000
            stop.wait(30)
        call = self.h.start("post", "reader", body=gen())
        started.wait(10)
        time.sleep(0.1)
        call.abandon()
        wait_for("the handler to fail", lambda: got)
        stop.set()
        self.assertIsInstance(got[0], Cancelled)


class TimeoutTest(unittest.TestCase):
    def test_clamp(self):
        self.assertEqual(eventpath.timeout_seconds(1 << 62), eventpath.MAX_TIMEOUT)
        self.assertEqual(eventpath.timeout_seconds(1500), 1.5)
        self.assertEqual(eventpath.timeout_seconds(-3), 0)


if __name__ == "__main__":
    unittest.main()
