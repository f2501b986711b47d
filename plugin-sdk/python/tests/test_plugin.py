import json
import unittest

from restpipe_plugin import Plugin, Reply, route_name
from restpipe_plugin._proto import plugin_pb2 as pb
from restpipe_plugin.plugin import Dispatcher
from restpipe_plugin.testing import Harness


class RouteTest(unittest.TestCase):
    def test_route_name(self):
        self.assertEqual(route_name("get", "time/utc"), "get_time_utc")

    def test_bad_routes_are_refused(self):
        p = Plugin("t")
        for verb, noun in [("head", "x"), ("GET", "x"), ("get", ""), ("get", "a//b"), ("get", "a b"), ("get", "zeit/ü")]:
            with self.assertRaises(ValueError, msg=(verb, noun)):
                p.handle(verb, noun, lambda ev: None)
        p.handle("get", "a/b", lambda ev: None)
        with self.assertRaises(ValueError) as cm:
            p.handle("get", "a_b", lambda ev: None)
        self.assertIn("registered twice", str(cm.exception))
        with self.assertRaises(ValueError):
            p.handle("get", "c", "not callable")

    def test_nothing_to_serve(self):
        with self.assertRaises(ValueError):
            Plugin("t").check()
        p = Plugin("t")
        p.on_peer(lambda ev: None)
        p.check()


class DescribeTest(unittest.TestCase):
    def test_describe_configures_once(self):
        p = Plugin("conf", "2.1")
        got = []

        @p.configure
        def configure(cfg):
            got.append(cfg)

        @p.route("get", "time/utc")
        def t(ev):
            return None
        d = Dispatcher(p)
        req = pb.DescribeRequest(protocol_version=2, node=pb.Node(role="client", name="web1"), config={"root": "/srv"})
        r = d.describe(req)
        d.describe(req)
        self.assertEqual(got, [{"root": "/srv"}])
        self.assertEqual((r.name, r.version, r.protocol_version, r.sdk[:7], r.error), ("conf", "2.1", 2, "python/", ""))
        self.assertEqual([(x.verb, x.noun, x.name) for x in r.routes], [("get", "time/utc", "get_time_utc")])
        self.assertFalse(r.peer_events)

    def test_configure_failure_refuses_events(self):
        p = Plugin("conf")

        @p.configure
        def configure(cfg):
            raise KeyError("root")

        @p.route("get", "x")
        def x(ev):
            return "never"
        with Harness(p) as h:
            self.assertEqual(h.description.error, "configure: KeyError: 'root'")
            r = h.call("get", "x")
            self.assertEqual((r.refused, r.failure["class"]), ("unavailable", "NotConfigured"))

    def test_events_before_describe_are_refused(self):
        p = Plugin("early")
        p.handle("get", "x", lambda ev: "x")
        d = Dispatcher(p)

        class Wire:
            header = pb.EventHeader(verb="get", noun="x")
        resp = d.serve_event(Wire())
        self.assertEqual((resp.header.refused, getattr(resp.header.failure, "class")), ("unavailable", "NotReady"))

    def test_peer_events(self):
        p = Plugin("peers")
        seen = []
        p.on_peer(seen.append)
        with Harness(p) as h:
            self.assertTrue(h.description.peer_events)
            h.peer_event("connection_added", "web1", 3)
        self.assertEqual((seen[0].kind, seen[0].peer, seen[0].peers), ("connection_added", "web1", 3))


class ReplyTest(unittest.TestCase):
    def setUp(self):
        p = Plugin("r")
        self.values = {}

        @p.route("get", "v")
        def v(ev):
            x = self.values["v"]
            if isinstance(x, BaseException):
                raise x
            return x
        self.h = Harness(p)
        self.addCleanup(self.h.close)

    def call(self, value):
        self.values["v"] = value
        return self.h.call("get", "v")

    def test_conversions(self):
        for value, ctype, body in [
            ({"a": [1, 2]}, "application/json", b'{"a":[1,2]}\n'),
            ([1, "x"], "application/json", b'[1,"x"]\n'),
            (3.5, "application/json", b"3.5\n"),
            ("héllo", "text/plain; charset=utf-8", "héllo".encode()),
            (b"\x00\x01", "application/octet-stream", b"\x00\x01"),
            (None, "", b""),
            (Reply("csv,1", content_type="text/csv", status=202, code=9), "text/csv", b"csv,1"),
            (Reply({"k": 1}, status=201), "application/json", b'{"k":1}\n'),
        ]:
            r = self.call(value)
            self.assertIsNone(r.failure, value)
            self.assertEqual((r.content_type, r.body), (ctype, body), value)
        r = self.call(Reply("x", status=202, code=9))
        self.assertEqual((r.status, r.code), (202, 9))

    def test_bad_replies_fail(self):
        for value, cls in [(Reply("x", status=99), "ValueError"), (Reply("x", status=600), "ValueError"),
                           (object(), "TypeError"), (Reply("x", code=1 << 40), "ValueError")]:
            r = self.call(value)
            self.assertEqual(r.failure["class"], cls, value)

    def test_exception_has_class_message_and_traceback(self):
        r = self.call(ZeroDivisionError("division by zero"))
        self.assertEqual(r.failure["class"], "ZeroDivisionError")
        self.assertEqual(r.failure["message"], "division by zero")
        tb = r.failure["traceback"]
        self.assertIn("ZeroDivisionError: division by zero", tb)
        self.assertIn("test_plugin.py", tb)
        self.assertNotIn("plugin.py\", line", tb.split("test_plugin.py")[0], "the SDK's own frames are left out")

    def test_system_exit_in_a_handler_is_a_failure(self):
        r = self.call(SystemExit(3))
        self.assertEqual(r.failure["class"], "SystemExit")
        self.assertEqual(json.loads(json.dumps(r.failure))["message"], "3")


if __name__ == "__main__":
    unittest.main()
