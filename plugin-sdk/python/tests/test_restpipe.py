"""RestPipe's handler semantics (rpipe/message_loop.py), case by case."""

import json
import time
import unittest

from restpipe_plugin import restpipe
from restpipe_plugin.testing import Harness


class ServerEventHandler(object):
    def start_hook(self):
        pass

    def stop_hook(self):
        pass


class Handler(ServerEventHandler):
    not_a_method = "x"
    get_attribute = "not callable"

    def __init__(self):
        self.calls = []

    def get_time(self, ctx, post_data):
        return {'time_from_server': time.time()}

    def get_time_utc(self, ctx, post_data):
        return {'utc': True}

    def get_cat(self, ctx, post_data, x, y):
        return {'result_from_server': str(x) + str(y)}

    def post_data(self, ctx, post_data):
        self.calls.append((ctx.participant_address, post_data))
        mimetype, data = post_data
        return {'mimetype': mimetype, 'type': type(data).__name__,
                'data': data if not isinstance(data, bytes) else data.decode()}

    def get_tuple(self, ctx, post_data):
        return ('text/csv', 7, 'a,b\n1,2\n')

    def get_tuple_none(self, ctx, post_data):
        return (None, 3, {'k': 'v'})

    def get_string(self, ctx, post_data):
        return "sent as it is"

    def get_none(self, ctx, post_data):
        return None

    def get_pair(self, ctx, post_data):
        return ('a', 'b')

    def get_badtype(self, ctx, post_data):
        return ('text/plain', 0, {'not': 'json-able here'})

    def get_stream(self, ctx, post_data):
        def gen():
            for i in range(3):
                yield ("part%d;" % i).encode()
        return gen()

    def get_fail(self, ctx, post_data):
        raise KeyError('missing')

    def _private(self, ctx, post_data):
        return 1

    def connection_added(self, ip, new_count):
        self.calls.append(("added", ip, new_count))


class CompatTest(unittest.TestCase):
    def setUp(self):
        self.handler = Handler()
        self.p = restpipe.plugin_of(self.handler, name="compat", version="1.0.0", hooks=self.handler)
        self.h = Harness(self.p)
        self.addCleanup(self.h.close)

    def test_routes_are_the_route_named_methods(self):
        self.assertEqual(self.p.routes(), ["get_badtype", "get_cat", "get_fail", "get_none", "get_pair", "get_stream", "get_string",
                                           "get_time", "get_time_utc", "get_tuple", "get_tuple_none", "post_data"])

    def test_cat_with_two_args(self):
        r = self.h.call("get", "cat", args=["hello ", "world"])
        self.assertEqual((r.content_type, r.code), ("application/json", 0))
        self.assertEqual(r.body, b'{"result_from_server": "hello world"}')

    def test_wrong_argument_count_is_a_type_error(self):
        r = self.h.call("get", "cat", args=["one"])
        self.assertEqual(r.failure["class"], "TypeError")
        self.assertIn("missing 1 required positional argument", r.failure["message"])

    def test_noun_with_segments(self):
        self.assertEqual(self.h.call("get", "time/utc").json(), {"utc": True})
        self.assertIn("time_from_server", self.h.call("get", "time").json())

    def test_json_body_is_decoded(self):
        r = self.h.call("post", "data", body=b'{"a": [1, 2]}', content_type="application/json", peer="web1")
        self.assertEqual(r.json(), {"mimetype": "application/json", "type": "dict", "data": {"a": [1, 2]}})
        self.assertEqual(self.handler.calls[-1][0], "web1")

    def test_other_bodies_are_bytes(self):
        r = self.h.call("post", "data", body=b"raw", content_type="text/plain")
        self.assertEqual(r.json(), {"mimetype": "text/plain", "type": "bytes", "data": "raw"})
        r = self.h.call("post", "data")
        self.assertEqual(r.json(), {"mimetype": "", "type": "bytes", "data": ""})
        r = self.h.call("post", "data", body=b"", content_type="application/json")
        self.assertEqual(r.json()["type"], "bytes", "an empty JSON body is not decoded, as in RestPipe")

    def test_three_tuple_is_mimetype_code_data(self):
        r = self.h.call("get", "tuple")
        self.assertEqual((r.content_type, r.code, r.body), ("text/csv", 7, b"a,b\n1,2\n"))
        r = self.h.call("get", "tuple/none")
        self.assertEqual((r.content_type, r.code, r.json()), ("application/json", 3, {"k": "v"}))

    def test_other_values_are_data(self):
        self.assertEqual(self.h.call("get", "string").body, b"sent as it is")
        r = self.h.call("get", "none")
        self.assertEqual((r.body, r.content_type), (b"", "application/json"))
        self.assertEqual(self.h.call("get", "pair").json(), ["a", "b"])
        self.assertEqual(self.h.call("get", "stream").body, b"part0;part1;part2;")

    def test_data_that_cannot_be_sent(self):
        r = self.h.call("get", "badtype")
        self.assertEqual(r.failure["class"], "ValueError")

    def test_exception_with_its_class(self):
        r = self.h.call("get", "fail")
        self.assertEqual((r.failure["class"], r.failure["message"]), ("KeyError", "'missing'"))
        self.assertIn("get_fail", r.failure["traceback"])

    def test_hooks(self):
        self.h.peer_event("connection_added", "web1", 2)
        self.h.peer_event("connection_removed", "web1", 1)  # no such method: ignored
        self.assertEqual(self.handler.calls[-1], ("added", "web1", 2))

    def test_reply_of(self):
        r = restpipe.reply_of(("application/xml", 5, "<a/>"))
        self.assertEqual((r.content_type, r.code, r.body), ("application/xml", 5, b"<a/>"))
        r = restpipe.reply_of({"x": 1})
        self.assertEqual(json.loads(r.body), {"x": 1})


if __name__ == "__main__":
    unittest.main()
