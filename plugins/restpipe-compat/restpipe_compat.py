#!/usr/bin/env python3
"""restpipe-compat: RestPipe's own example event handler, served by restpipe.

The class below is RestPipe's TestServerEventHandler
(rpipe/server/connection.py in github.com/dsoprea/RestPipe), method for
method. The only changes are the three lines that serve it: the import of
restpipe_plugin.restpipe, the stand-in for RestPipe's ServerEventHandler
base class (restpipe has no rpipe package to import it from), and the
serve() call at the end.

    GET /server/time                {"time_from_server": 1402897823.882672}
    GET /server/cat//hello%20/world {"result_from_server": "hello world"}

It serves get_time and get_cat, like the Go time and cat plugins, so it
replaces them: a plugins directory holds one or the other.
"""

import logging
import time

from restpipe_plugin import restpipe

_logger = logging.getLogger(__name__)


class ServerEventHandler(object):
    """Stands in for rpipe.server.connection.ServerEventHandler: its hooks
    are not routes."""

    def start_hook(self):
        pass

    def stop_hook(self):
        pass


class TestServerEventHandler(ServerEventHandler):
    """Example server event-handler."""

    def get_time(self, ctx, post_data):
        _logger.info("TEST: get_time()")
        return { 'time_from_server': time.time() }

    def get_cat(self, ctx, post_data, x, y):
        _logger.info("TEST: get_cat()")
        return { 'result_from_server': str(x) + str(y) }


if __name__ == "__main__":
    restpipe.serve(TestServerEventHandler(), name="restpipe-compat", version="1.0.0")
