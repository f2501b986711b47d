"""The framing of restpipe's streams, as proto/frame/frame.go defines it.

The link between two nodes and the event connections between a node and its
plugins carry the same frames::

    frame   = type:uint8  length:uvarint  payload:length bytes
    type 1  HEADER  payload: one protobuf message
    type 2  DATA    payload: 1 to 16 MiB of body bytes (writers here use 64 KiB)
    type 3  END     payload: empty, or a Trailer saying why the body failed

A body announced with a size (>= 0) must be exactly that long: a reader fails
a longer one as soon as it passes the size and a shorter one at its END. A
body whose END carries a trailer failed; a stream that ends inside a body is
a lost body. A HEADER or END payload over the reader's limit is refused from
its length alone, before anything is allocated for it.

This module is the Python twin of proto/frame: Reader reads one stream,
the functions below build frames to send.
"""

import socket

TYPE_HEADER = 1
TYPE_DATA = 2
TYPE_END = 3

#: The largest payload of one DATA frame.
MAX_DATA = 1 << 24
#: The payload size of the DATA frames this module writes.
CHUNK = 64 << 10
#: The largest body of known size sent in the same write as its header.
SMALL_BODY = CHUNK
#: The most a frame adds to its payload: a type byte and a 10-byte uvarint.
MAX_OVERHEAD = 11

#: An END frame without a trailer.
END = bytes((TYPE_END, 0))

_READ_BUFFER = 16 << 10


class FrameError(Exception):
    """The bytes on a stream do not follow the framing; the stream cannot be
    trusted further."""


class Malformed(FrameError):
    """A frame is malformed, or a body does not match its announced size."""


class TooLarge(FrameError):
    """A frame announced a payload over the limit (refused before anything
    was allocated for it)."""


class Truncated(FrameError, EOFError):
    """The stream ended inside a frame or a body."""


class BodyError(Exception):
    """The sender of a body could not finish it: its END frame carries a
    trailer saying why."""

    def __init__(self, message):
        super().__init__("body incomplete: " + message)
        self.reason = message


def uvarint(n):
    """Returns n encoded as a protobuf varint."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def frame_header(frame_type, n):
    """Returns the type and length that start a frame of n payload bytes."""
    return bytes((frame_type,)) + uvarint(n)


def header_frame(msg):
    """Returns a HEADER frame holding the protobuf message msg."""
    payload = msg.SerializeToString()
    return frame_header(TYPE_HEADER, len(payload)) + payload


def end_frame(trailer=None):
    """Returns an END frame, carrying trailer (a protobuf message) if given."""
    if trailer is None:
        return END
    payload = trailer.SerializeToString()
    if not payload:
        return END
    return frame_header(TYPE_END, len(payload)) + payload


def shorter(got, size):
    return Malformed("body of %d bytes is shorter than its announced %d" % (got, size))


def longer(size):
    return Malformed("body is longer than its announced %d bytes" % size)


class Reader:
    """Reads the frames of one stream socket: messages with read_msg, and a
    body (DATA frames up to END) with read_body, after start_body.

    Not safe for concurrent use: one thread reads a stream.
    """

    def __init__(self, sock, max_header, trailer=None):
        self._sock = sock
        self._max_header = max_header
        # trailer turns the payload of an END frame that carries one into
        # the body's exception (or None: the body ended cleanly).
        self._trailer = trailer
        self._buf = bytearray(_READ_BUFFER)
        self._start = 0
        self._end = 0
        self._eof = False
        self._left = 0  # payload bytes left in the current DATA frame
        self._size = -1  # announced body size
        self._got = 0  # body bytes read so far
        self._err = None  # sticky: EOFError after END, or the failure

    # -- buffered input -------------------------------------------------

    def _fill(self):
        """Reads more bytes into the buffer; returns False at the end of the
        stream."""
        if self._eof:
            return False
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buf):
            n = self._end - self._start
            self._buf[:n] = self._buf[self._start:self._end]
            self._start, self._end = 0, n
        try:
            n = self._sock.recv_into(memoryview(self._buf)[self._end:])
        except (ConnectionResetError, BrokenPipeError):
            n = 0
        except OSError as e:
            if isinstance(e, socket.timeout):
                raise
            n = 0
        if n == 0:
            self._eof = True
            return False
        self._end += n
        return True

    def buffered(self):
        """Returns how many bytes are read from the stream and not consumed."""
        return self._end - self._start

    def peek(self):
        """Waits until the stream has a byte to read; returns False if it
        ended instead. Consumes nothing."""
        while self._start == self._end:
            if not self._fill():
                return False
        return True

    def _byte(self):
        if self._start == self._end and not self._fill():
            return None
        b = self._buf[self._start]
        self._start += 1
        return b

    def _exact(self, n):
        """Returns the next n bytes (n at most the limit checked by the
        caller), or raises Truncated."""
        out = bytearray(n)
        view = memoryview(out)
        have = min(n, self._end - self._start)
        view[:have] = self._buf[self._start:self._start + have]
        self._start += have
        while have < n:
            if self._eof:
                raise Truncated("the stream ended inside a frame")
            try:
                got = self._sock.recv_into(view[have:])
            except OSError:
                got = 0
            if got == 0:
                self._eof = True
                raise Truncated("the stream ended inside a frame")
            have += got
        return bytes(out)

    def _next(self, at_boundary):
        """Reads a frame's type and payload length. At a message boundary a
        clean end of the stream raises EOFError; elsewhere Truncated."""
        t = self._byte()
        if t is None:
            if at_boundary:
                raise EOFError("the stream ended")
            raise Truncated("the stream ended inside a body")
        x = 0
        shift = 0
        for i in range(10):
            b = self._byte()
            if b is None:
                raise Truncated("the stream ended inside a frame header")
            if b < 0x80:
                if i == 9 and b > 1:
                    break
                return t, x | (b << shift)
            x |= (b & 0x7F) << shift
            shift += 7
        raise Malformed("frame length overflows 64 bits")

    def _payload(self, n):
        if n > self._max_header:
            raise TooLarge("%d bytes, the limit is %d" % (n, self._max_header))
        return self._exact(n)

    # -- messages -------------------------------------------------------

    def read_msg(self, cls):
        """Reads one HEADER frame and returns it decoded as cls. Raises
        EOFError if the stream ended cleanly before it, or a FrameError."""
        t, n = self._next(True)
        if t != TYPE_HEADER:
            raise Malformed("want a header frame, got type %d" % t)
        payload = self._payload(n)
        msg = cls()
        try:
            msg.ParseFromString(payload)
        except Exception as e:  # protobuf's DecodeError, or worse
            raise Malformed("decode %s: %s" % (cls.__name__, e)) from None
        return msg

    # -- bodies ---------------------------------------------------------

    def start_body(self, size):
        """Prepares read_body for a body of the announced size (-1: unknown;
        0: none, read_body returns b"" at once)."""
        self._size, self._got, self._left = size, 0, 0
        self._err = EOFError() if size == 0 else None

    def body_done(self):
        """Reports whether the body started last was read to its END (or
        was empty)."""
        return isinstance(self._err, EOFError) and not isinstance(self._err, Truncated)

    def read_body(self, limit=CHUNK):
        """Returns the next body bytes (at most limit), b"" after a clean
        END. Raises BodyError for an END with a trailer, Malformed for a body
        that does not match its size, Truncated if the stream ends inside."""
        if self._err is not None:
            if self.body_done():
                return b""
            raise self._err
        try:
            while self._left == 0:
                if self._next_body_frame():
                    self._err = EOFError()
                    return b""
            want = min(limit, self._left)
            if self._start < self._end:
                n = min(want, self._end - self._start)
                data = bytes(self._buf[self._start:self._start + n])
                self._start += n
            else:
                try:
                    data = self._sock.recv(want)
                except OSError:
                    data = b""
                if not data:
                    self._eof = True
                    raise Truncated("the stream ended inside a body")
            self._left -= len(data)
            self._got += len(data)
            if 0 <= self._size < self._got:
                raise longer(self._size)
            if self._left == 0 and self._got == self._size and self._end - self._start >= 2:
                # The whole body is in: take its END now if it is buffered,
                # so a reader of exactly size bytes sees the body complete.
                if self._buf[self._start] == TYPE_END and self._buf[self._start + 1] == 0:
                    self._start += 2
                    self._err = EOFError()
            return data
        except (FrameError, BodyError) as e:
            self._err = e
            raise

    def _next_body_frame(self):
        """Reads the next DATA or END frame header; returns True at a clean
        END."""
        t, n = self._next(False)
        if t == TYPE_DATA:
            if n == 0 or n > MAX_DATA:
                raise Malformed("data frame of %d bytes" % n)
            self._left = n
            return False
        if t == TYPE_END:
            if n > 0:
                payload = self._payload(n)
                err = self._trailer(payload) if self._trailer else BodyError("aborted by its sender")
                if err is not None:
                    raise err
            if self._size >= 0 and self._got != self._size:
                raise shorter(self._got, self._size)
            return True
        raise Malformed("unexpected frame type %d in a body" % t)

    def drain(self, limit):
        """Reads and drops what is left of the current body, up to limit
        bytes; reports whether it ended cleanly within them."""
        while limit > 0:
            try:
                data = self.read_body(min(limit, CHUNK))
            except (FrameError, BodyError):
                return False
            if not data:
                return True
            limit -= len(data)
        return self.body_done()
