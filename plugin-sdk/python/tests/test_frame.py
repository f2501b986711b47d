import socket
import threading
import unittest

from restpipe_plugin import frame
from restpipe_plugin._proto import plugin_pb2 as pb
from restpipe_plugin.eventpath import trailer_error


def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return a, b


class UvarintTest(unittest.TestCase):
    def test_known(self):
        for n, want in [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
                        (1 << 63, b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01")]:
            self.assertEqual(frame.uvarint(n), want, n)


class ReaderTest(unittest.TestCase):
    def setUp(self):
        self.w, r = pair()
        self.r = r
        self.fr = frame.Reader(r, 64 << 10, trailer=trailer_error)
        self.addCleanup(self.w.close)
        self.addCleanup(self.r.close)

    def send(self, *parts):
        for p in parts:
            self.w.sendall(p)

    def body(self, size):
        self.fr.start_body(size)
        out = []
        while True:
            b = self.fr.read_body()
            if not b:
                return b"".join(out)
            out.append(b)

    def test_message_and_body(self):
        h = pb.EventHeader(id="x", verb="post", noun="a/b", body_size=5)
        self.send(frame.header_frame(h), frame.frame_header(frame.TYPE_DATA, 3), b"abc",
                  frame.frame_header(frame.TYPE_DATA, 2), b"de", frame.END)
        got = self.fr.read_msg(pb.EventHeader)
        self.assertEqual(got, h)
        self.assertEqual(self.body(5), b"abcde")
        self.assertTrue(self.fr.body_done())

    def test_clean_eof_between_messages(self):
        self.w.close()
        with self.assertRaises(EOFError):
            self.fr.read_msg(pb.EventHeader)

    def test_oversized_header_refused_from_its_length(self):
        self.send(frame.frame_header(frame.TYPE_HEADER, 1 << 30))
        with self.assertRaises(frame.TooLarge):
            self.fr.read_msg(pb.EventHeader)

    def test_varint_overflow(self):
        self.send(b"\x01" + b"\xff" * 9 + b"\x02")
        with self.assertRaises(frame.Malformed):
            self.fr.read_msg(pb.EventHeader)

    def test_wrong_frame_type(self):
        self.send(frame.frame_header(frame.TYPE_DATA, 1), b"x")
        with self.assertRaises(frame.Malformed):
            self.fr.read_msg(pb.EventHeader)

    def test_longer_body_fails_as_soon_as_it_passes_its_size(self):
        self.send(frame.frame_header(frame.TYPE_DATA, 6), b"abcdef", frame.END)
        with self.assertRaises(frame.Malformed):
            self.body(5)
        self.assertFalse(self.fr.body_done())

    def test_shorter_body_fails_at_its_end(self):
        self.send(frame.frame_header(frame.TYPE_DATA, 3), b"abc", frame.END)
        with self.assertRaises(frame.Malformed):
            self.body(5)

    def test_trailer_is_the_bodys_error(self):
        self.send(frame.frame_header(frame.TYPE_DATA, 3), b"abc", frame.end_frame(pb.Trailer(error="disk gone")))
        with self.assertRaises(frame.BodyError) as cm:
            self.body(-1)
        self.assertIn("disk gone", str(cm.exception))

    def test_truncated_body(self):
        self.send(frame.frame_header(frame.TYPE_DATA, 10), b"abc")
        self.w.close()
        with self.assertRaises(frame.Truncated):
            self.body(-1)

    def test_empty_data_frame_is_malformed(self):
        self.send(frame.frame_header(frame.TYPE_DATA, 0), frame.END)
        with self.assertRaises(frame.Malformed):
            self.body(-1)

    def test_data_frame_over_max(self):
        self.send(frame.frame_header(frame.TYPE_DATA, frame.MAX_DATA + 1))
        with self.assertRaises(frame.Malformed):
            self.body(-1)

    def test_large_body_streams(self):
        size = 5 << 20
        chunk = bytes(range(256)) * 256

        def send():
            left = size
            while left:
                n = min(left, len(chunk))
                self.w.sendall(frame.frame_header(frame.TYPE_DATA, n) + chunk[:n])
                left -= n
            self.w.sendall(frame.END)
        t = threading.Thread(target=send)
        t.start()
        self.fr.start_body(size)
        n = 0
        biggest = 0
        while True:
            b = self.fr.read_body()
            if not b:
                break
            n += len(b)
            biggest = max(biggest, len(b))
        t.join()
        self.assertEqual(n, size)
        self.assertLessEqual(biggest, frame.CHUNK)

    def test_end_taken_with_the_last_bytes(self):
        self.send(frame.frame_header(frame.TYPE_DATA, 3) + b"abc" + frame.END)
        self.fr.start_body(3)
        self.assertEqual(self.fr.read_body(), b"abc")
        self.assertTrue(self.fr.body_done())


if __name__ == "__main__":
    unittest.main()
