"""Standard output belongs to go-plugin's handshake; what a plugin prints goes
to the node's log.

go-plugin's host reads the plugin's standard output for exactly one line,
the handshake; anything printed before it breaks the start, and the host
does not log what comes after. guard() therefore takes file descriptor 1
for the handshake alone (a private duplicate, never inherited) and makes
descriptor 1 a pipe instead, with sys.stdout on it; sys.stderr becomes a
second pipe (descriptor 2 stays the real standard error, where the logging
handler writes). What arrives on either pipe is relayed to the node over
go-plugin's GRPCStdio stream, which the node logs under the plugin's name at
info level with "stream" set to stdout or stderr: the same as a Go plugin's
prints. So print(), sys.stdout.write, os.write(1, ...), C extensions and
child processes writing to their standard output all land in the node's log
and none of them can corrupt the protocol.

Before the node opens the stream (it does right after the handshake) up to
BACKLOG chunks wait; beyond that, and whenever no stream is open, output goes
to standard error as it is, which the node logs at debug level.

restpipe_plugin calls guard() when it is imported by a process the node
started (the handshake cookie is set), so that a plugin script's own
module-level prints, after its imports, are already safe.
"""

import io
import os
import queue
import sys
import threading

#: How many chunks of output wait for the node's stream.
BACKLOG = 256

STDOUT = 1  # StdioData.Channel values
STDERR = 2

_lock = threading.Lock()
_guarded = None  # the handshake's descriptor, once guard() ran
_queue = queue.Queue(BACKLOG)
_subscribed = False


def guard():
    """Takes standard output for the handshake and redirects what the
    plugin prints (see the module's doc). Returns the descriptor to write
    the handshake to. Idempotent."""
    global _guarded
    with _lock:
        if _guarded is not None:
            return _guarded
        try:
            sys.stdout.flush()
        except Exception:
            pass
        hs = os.dup(1)  # not inherited by children (Python's default)
        r1, w1 = os.pipe()
        os.dup2(w1, 1)
        os.close(w1)
        r2, w2 = os.pipe()
        os.set_inheritable(w2, False)
        sys.stdout = _text(1, closefd=False)
        sys.stderr = _text(w2, closefd=True)
        for fd, ch in ((r1, STDOUT), (r2, STDERR)):
            t = threading.Thread(target=_relay, args=(fd, ch), name="restpipe-stdio", daemon=True)
            t.start()
        _guarded = hs
        return hs


def _text(fd, closefd):
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=closefd), encoding="utf-8", errors="backslashreplace",
                            line_buffering=True, write_through=True)


def _relay(fd, channel):
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            return
        if not data:
            return
        put(channel, data)


def put(channel, data):
    """Hands output to the node's stream, or to standard error when the
    stream is not there to take it."""
    try:
        _queue.put_nowait((channel, data))
    except queue.Full:
        _to_stderr(data)


def _to_stderr(data):
    try:
        while data:
            n = os.write(2, data)
            data = data[n:]
    except OSError:
        pass


def flush_to_stderr():
    """Writes what waits for the stream to standard error: the plugin is
    about to end without the stream."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    while True:
        try:
            _, data = _queue.get_nowait()
        except queue.Empty:
            return
        _to_stderr(data)


def stream(active):
    """Yields (channel, data) for go-plugin's StreamStdio until active()
    turns false. One stream at a time takes the output."""
    global _subscribed
    with _lock:
        if _subscribed:
            return
        _subscribed = True
    try:
        while active():
            try:
                yield _queue.get(timeout=0.5)
            except queue.Empty:
                continue
    finally:
        with _lock:
            _subscribed = False
