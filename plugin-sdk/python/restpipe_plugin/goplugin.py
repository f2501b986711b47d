"""go-plugin's side of a plugin process: the handshake and the serve loop.

What hashicorp/go-plugin (v1.8, server.go and client.go) asks of a plugin
in gRPC mode, and what this module does about it:

- The node sets RESTPIPE_PLUGIN=d5b3e1c2-restpipe-handler-plugin (the
  magic cookie, proto/plugin/v1/handshake.go); without it the process was
  started by hand, and says so instead of waiting forever.
- The plugin serves gRPC on a Unix socket it makes in
  PLUGIN_UNIX_SOCKET_DIR (a private 0700 directory the node made), made
  group-writable for PLUGIN_UNIX_SOCKET_GROUP when that is set, and prints
  one line on standard output: ``1|2|unix|<socket>|grpc|<cert>`` (go-plugin's
  core protocol 1, restpipe's plugin protocol 2, and for AutoMTLS the
  plugin's certificate). Nothing else may reach standard output (stdio.py
  makes sure of it).
- PLUGIN_PROTOCOL_VERSIONS lists the plugin protocols the node speaks; this
  SDK speaks 2 only, and answers 2 whatever the list says (the node then
  refuses a mismatch with go-plugin's own clear error), as go-plugin does.
- With PLUGIN_CLIENT_CERT set (the node runs with --plugin-mtls) the
  plugin makes a one-time certificate (automtls.py), serves TLS requiring
  the node's certificate, and sends its own in the handshake.
- The node calls GRPCController.Shutdown to stop the plugin, then waits a
  moment before killing it; the plugin ends its event connections and
  exits 0. SIGTERM does the same; SIGINT is ignored, as go-plugin does (a
  terminal's Ctrl-C is for the node, which stops its plugins itself).
"""

import os
import signal
import sys
import tempfile
import threading
from concurrent import futures

from . import log as rlog
from . import stdio
from .eventpath import SOCKET_DIR_ENV
from .plugin import PROTOCOL_VERSION, Dispatcher

MAGIC_COOKIE_KEY = "RESTPIPE_PLUGIN"
MAGIC_COOKIE_VALUE = "d5b3e1c2-restpipe-handler-plugin"
CORE_PROTOCOL_VERSION = 1

#: gRPC worker threads for control calls (the stdio stream holds one).
CONTROL_WORKERS = 8


def under_node(environ=None):
    """Reports whether a restpipe node started this process."""
    return (environ if environ is not None else os.environ).get(MAGIC_COOKIE_KEY) == MAGIC_COOKIE_VALUE


def handshake_line(socket_path, cert_field=""):
    """Returns go-plugin's handshake line (with its newline)."""
    return "%d|%d|unix|%s|grpc|%s\n" % (CORE_PROTOCOL_VERSION, PROTOCOL_VERSION, socket_path, cert_field)


def _by_hand(plugin):
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "this script"
    sys.stderr.write(
        "%s is a restpipe handler plugin (%s %s): it is not meant to be run by hand.\n"
        "Put it in the --plugins directory of a restpipe node, which starts it, or try its handlers\n"
        "without a node with restpipe_plugin.testing.Harness.\n" % (script, plugin.name, plugin.version))
    sys.stderr.flush()
    sys.exit(1)


def serve(plugin):
    """Serves plugin to the node that started this process, until the node
    stops it; exits the process (status 0 when stopped, 1 when the plugin
    cannot start)."""
    if not under_node():
        _by_hand(plugin)
    logger = rlog.setup(plugin.name)
    try:
        plugin.check()
    except ValueError as e:
        logger.error("plugin cannot start: %s", e)
        _exit(1)
    try:
        import grpc
    except ImportError as e:
        logger.error("plugin cannot start: %s: the SDK needs grpcio (Debian: apt-get install python3-grpcio)", e)
        _exit(1)
    from . import control

    hs = stdio.guard()
    directory = os.environ.get(SOCKET_DIR_ENV) or tempfile.mkdtemp(prefix="restpipe-plugin-")
    disp = Dispatcher(plugin, logger)
    try:
        disp.listen(directory)
    except OSError as e:
        logger.error("plugin cannot start: listen for events in %s: %s", directory, e)
        _exit(1)

    stop = threading.Event()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=CONTROL_WORKERS, thread_name_prefix="restpipe-control"),
                         handlers=control.handlers(disp, stop.set))
    path = tempfile.mktemp(prefix="plugin", dir=directory)  # a name, as go-plugin's own; grpc makes the socket
    cert_field = ""
    client_cert = os.environ.get("PLUGIN_CLIENT_CERT", "")
    try:
        if client_cert:
            from . import automtls
            cert_pem, key_pem, cert_field = automtls.server_identity()
            creds = grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=client_cert.encode(),
                                                require_client_auth=True)
            port = server.add_secure_port("unix:" + path, creds)
        else:
            port = server.add_insecure_port("unix:" + path)
    except Exception as e:  # grpcio raises RuntimeError in newer versions
        port, why = 0, e
    else:
        why = "grpc could not bind it"
    if port == 0:
        logger.error("plugin cannot start: serve gRPC on %s: %s", path, why)
        _exit(1)
    group = os.environ.get("PLUGIN_UNIX_SOCKET_GROUP", "")
    if group:
        _group_writable(path, group, logger)
    server.start()

    versions = os.environ.get("PLUGIN_PROTOCOL_VERSIONS", "")
    if versions and str(PROTOCOL_VERSION) not in [v.strip() for v in versions.split(",")]:
        logger.warning("the node speaks plugin protocols %s; this SDK speaks %d", versions, PROTOCOL_VERSION)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    line = handshake_line(path, cert_field).encode()
    while line:
        line = line[os.write(hs, line):]
    os.close(hs)
    logger.debug("plugin address", extra={"network": "unix", "address": path})

    while not stop.wait(1.0):
        pass
    logger.debug("plugin stopping")
    disp.close()
    server.stop(0.5).wait(1.0)
    for p in (path,):
        try:
            os.unlink(p)
        except OSError:
            pass
    _exit(0)


def _group_writable(path, group, logger):
    try:
        import grp
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        os.chown(path, -1, gid)
        os.chmod(path, 0o660)
    except (OSError, KeyError, ImportError) as e:
        logger.warning("cannot give group %s the plugin's socket: %s", group, e)


def _exit(code):
    """Exits at once, without waiting for handler threads that ignore their
    cancellation (the node has stopped routing to this process)."""
    stdio.flush_to_stderr()
    try:
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(code)
