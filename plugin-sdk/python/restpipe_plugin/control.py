"""The gRPC services a plugin serves on go-plugin's control connection.

  restpipe.plugin.v1.Plugin   Describe, PeerEvent, Stats (proto/plugin/v1)
  grpc.health.v1.Health       Check ("plugin" is SERVING), as go-plugin needs
  plugin.GRPCController       Shutdown: the node stops the plugin gracefully
  plugin.GRPCStdio            StreamStdio: what the plugin prints (stdio.py)

go-plugin's GRPCBroker is not served: restpipe does not use it, and the node
ignores its absence.

The service glue is written here, by hand, rather than generated as
grpcio-tools' _pb2_grpc.py would be: that file is only a table of method
handlers like the ones below, and generating it would take grpcio-tools,
which Debian's python3-grpcio does not have.
"""

import time

import grpc

from . import stdio
from ._proto import empty_pb2, goplugin_controller_pb2 as ctl_pb, goplugin_stdio_pb2 as stdio_pb
from ._proto import health_pb2 as health_pb, plugin_pb2 as pb

#: The service name go-plugin's health check asks for.
HEALTH_SERVICE = "plugin"


def _unary(fn, req, resp):
    return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=req.FromString,
                                               response_serializer=resp.SerializeToString)


def handlers(dispatcher, shutdown):
    """Returns the generic handlers of every service for a Dispatcher;
    shutdown() is called when the node asks the plugin to stop."""

    def describe(req, ctx):
        return dispatcher.describe(req)

    def peer_event(req, ctx):
        try:
            dispatcher.peer_event(req)
        except LookupError as e:
            ctx.abort(grpc.StatusCode.UNIMPLEMENTED, str(e))
        except Exception as e:
            dispatcher.log.warning("peer hook failed: %s: %s", type(e).__name__, e, exc_info=True)
            ctx.abort(grpc.StatusCode.UNKNOWN, "%s: %s" % (type(e).__name__, e))
        return pb.PeerEventResponse()

    def stats(req, ctx):
        return dispatcher.stats()

    def check(req, ctx):
        if req.service not in ("", HEALTH_SERVICE):
            ctx.abort(grpc.StatusCode.NOT_FOUND, "unknown service %r" % req.service)
        return health_pb.HealthCheckResponse(status=health_pb.HealthCheckResponse.SERVING)

    def watch(req, ctx):
        if req.service not in ("", HEALTH_SERVICE):
            yield health_pb.HealthCheckResponse(status=health_pb.HealthCheckResponse.SERVICE_UNKNOWN)
            return
        yield health_pb.HealthCheckResponse(status=health_pb.HealthCheckResponse.SERVING)
        while ctx.is_active():  # nothing changes until the plugin stops
            time.sleep(0.5)

    def shutdown_rpc(req, ctx):
        shutdown()
        return ctl_pb.Empty()

    def stream_stdio(req, ctx):
        for channel, data in stdio.stream(ctx.is_active):
            yield stdio_pb.StdioData(channel=channel, data=data)

    return [
        grpc.method_handlers_generic_handler("restpipe.plugin.v1.Plugin", {
            "Describe": _unary(describe, pb.DescribeRequest, pb.DescribeResponse),
            "PeerEvent": _unary(peer_event, pb.PeerEventRequest, pb.PeerEventResponse),
            "Stats": _unary(stats, pb.StatsRequest, pb.StatsResponse),
        }),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": _unary(check, health_pb.HealthCheckRequest, health_pb.HealthCheckResponse),
            "Watch": grpc.unary_stream_rpc_method_handler(
                watch, request_deserializer=health_pb.HealthCheckRequest.FromString,
                response_serializer=health_pb.HealthCheckResponse.SerializeToString),
        }),
        grpc.method_handlers_generic_handler("plugin.GRPCController", {
            "Shutdown": _unary(shutdown_rpc, ctl_pb.Empty, ctl_pb.Empty),
        }),
        grpc.method_handlers_generic_handler("plugin.GRPCStdio", {
            "StreamStdio": grpc.unary_stream_rpc_method_handler(
                stream_stdio, request_deserializer=empty_pb2.Empty.FromString,
                response_serializer=stdio_pb.StdioData.SerializeToString),
        }),
    ]
