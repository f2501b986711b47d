"""Logging to the node: hclog's JSON lines on standard error.

go-plugin's host reads a plugin's standard error line by line and logs each
JSON line carrying "@level", "@message" and "@timestamp" at that level,
under the plugin's name, with the line's other keys as fields. setup()
installs a handler on Python's root logger that writes such lines, so
everything a plugin logs with the logging module (its own loggers, its
libraries') reaches the node's log at its level. The node tells its level
in RESTPIPE_PLUGIN_LOG_LEVEL; records below it are dropped in the plugin,
unformatted.
"""

import datetime
import json
import logging
import os
import sys
import threading
import traceback

#: The environment variable through which the node tells its log level.
LEVEL_ENV = "RESTPIPE_PLUGIN_LOG_LEVEL"

#: A level below DEBUG, hclog's trace.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_FROM_NAME = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "warning": logging.WARNING, "error": logging.ERROR, "off": logging.CRITICAL + 10}

# The longest line the host reads as one (go-plugin's default buffer is 64
# KiB); a longer message or traceback is cut.
_MAX_FIELD = 16 << 10

# The attributes every LogRecord has; any other came from extra= and is
# logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def level_from_env(environ=None):
    """Returns the logging level the node asked for (default INFO)."""
    name = (environ if environ is not None else os.environ).get(LEVEL_ENV, "").strip().lower()
    return _FROM_NAME.get(name, logging.INFO)


def hclog_level(levelno):
    """Returns hclog's name of a logging level."""
    if levelno < logging.DEBUG:
        return "trace"
    if levelno < logging.INFO:
        return "debug"
    if levelno < logging.WARNING:
        return "info"
    if levelno < logging.ERROR:
        return "warn"
    return "error"


def timestamp(created):
    """Returns a record's time as go-plugin parses it
    ("2006-01-02T15:04:05.000000Z07:00")."""
    t = datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _cut(s):
    return s if len(s) <= _MAX_FIELD else s[:_MAX_FIELD] + "...(cut)"


class HclogHandler(logging.Handler):
    """Writes records as hclog JSON lines to a file descriptor."""

    def __init__(self, module, fd):
        super().__init__()
        self.module = module
        self._fd = fd
        self._wlock = threading.Lock()

    def line(self, record):
        """Returns the JSON line of a record, without its newline."""
        entry = {
            "@level": hclog_level(record.levelno),
            "@message": _cut(record.getMessage()),
            "@module": self.module,
            "@timestamp": timestamp(record.created),
        }
        if record.name not in ("root", self.module):
            entry["logger"] = record.name
        for k, v in record.__dict__.items():
            if k not in _STANDARD and not k.startswith("_") and not k.startswith("@"):
                entry[k] = v
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            entry["error"] = _cut("%s: %s" % (type(exc).__name__, exc))
            entry["traceback"] = _cut("".join(traceback.format_exception(*record.exc_info)))
        return json.dumps(entry, default=str, ensure_ascii=False)

    def emit(self, record):
        try:
            data = (self.line(record) + "\n").encode("utf-8", "backslashreplace")
            with self._wlock:
                while data:
                    n = os.write(self._fd, data)
                    data = data[n:]
        except Exception:
            self.handleError(record)


_installed = None


def setup(module, fd=None):
    """Routes Python's logging to the node, as module (the plugin's name),
    at the node's level, and logs uncaught exceptions (in the main thread
    and in other threads) as errors with their traceback. Returns the
    logger named module. Idempotent: a later call renames the module."""
    global _installed
    root = logging.getLogger()
    if _installed is None:
        if fd is None:
            fd = os.dup(2)  # standard error, kept even if sys.stderr is replaced or closed
        _installed = HclogHandler(module, fd)
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(_installed)
        root.setLevel(level_from_env())
        logging.captureWarnings(True)
        sys.excepthook = _excepthook
        threading.excepthook = _thread_excepthook
    else:
        _installed.module = module
    return logging.getLogger(module)


def _excepthook(cls, exc, tb):
    if issubclass(cls, KeyboardInterrupt):
        return
    from . import stdio
    stdio.flush_to_stderr()
    logging.getLogger(_installed.module if _installed else "plugin").error(
        "plugin failed: %s: %s", cls.__name__, exc, exc_info=(cls, exc, tb))


def _thread_excepthook(args):
    if args.exc_type is SystemExit:
        return
    logging.getLogger(_installed.module if _installed else "plugin").error(
        "uncaught exception in thread %s: %s: %s", args.thread.name if args.thread else "?",
        args.exc_type.__name__, args.exc_value, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
