"""The wire: msgpack tensor codec, ZeroMQ links, message schema and link security."""

from hiertrain_edge.wire.codec import PROTOCOL_VERSION, decode, encode
from hiertrain_edge.wire.transport import CLOUD_PORT, EDGE_PORT, Link, Listener, endpoint

__all__ = [
    "CLOUD_PORT",
    "EDGE_PORT",
    "PROTOCOL_VERSION",
    "Link",
    "Listener",
    "decode",
    "encode",
    "endpoint",
]
