#!/usr/bin/env python3
"""digest: a native restpipe plugin in Python whose bodies stream both ways.

    POST /server/digest             the digest of the request body:
                                    {"algorithm": "sha256", "digest": "<hex>", "bytes": N}
    GET  /server/bytes//N           N bytes (a repeating 0x00..0xff pattern),
                                    streamed as application/octet-stream

Neither holds a body in memory: the upload is hashed chunk by chunk as it
arrives, the download generated chunk by chunk as the node takes it, so a
10 GiB body costs what a 10 KiB one does. Both stop once the event is
cancelled (the caller went away, or its deadline passed).

Configuration (--plugin-config digest.algorithm=sha512): the hashlib
algorithm, sha256 by default.
"""

import hashlib

from restpipe_plugin import Plugin, Reply

p = Plugin("digest", "1.0.0")
settings = {"algorithm": "sha256"}

#: The block GET /bytes repeats.
PATTERN = bytes(range(256)) * 256


@p.configure
def configure(cfg):
    algorithm = cfg.get("algorithm", "sha256")
    hashlib.new(algorithm)  # an unknown algorithm refuses the configuration
    settings["algorithm"] = algorithm


@p.route("post", "digest")
def digest(ev):
    h = hashlib.new(settings["algorithm"])
    n = 0
    for chunk in ev.chunks():
        h.update(chunk)
        n += len(chunk)
    p.logger.debug("digested a body", extra={"bytes": n, "peer": ev.peer})
    return {"algorithm": settings["algorithm"], "digest": h.hexdigest(), "bytes": n}


@p.route("get", "bytes")
def stream_bytes(ev):
    try:
        n = int(ev.arg(0))
    except ValueError:
        raise ValueError("GET /bytes//N wants a byte count, got %r" % ev.arg(0)) from None
    if not 0 <= n <= 1 << 40:
        raise ValueError("byte count %d out of range (0 to 1 TiB)" % n)

    def generate():
        left = n
        while left > 0 and not ev.cancelled():
            block = PATTERN if left >= len(PATTERN) else PATTERN[:left]
            yield block
            left -= len(block)

    return Reply.stream(generate(), content_type="application/octet-stream", size=n)


if __name__ == "__main__":
    p.serve()
