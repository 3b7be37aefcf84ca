"""The status port with the board link's CurveZMQ keys: listed clients served, others refused."""

from __future__ import annotations

import pytest
import zmq

from hiertrain_edge.errors import TransportError
from hiertrain_edge.runtime.status import EdgeStatus, StatusServer, query_status
from hiertrain_edge.wire.security import Security


def _pair() -> tuple[bytes, bytes]:
    return zmq.curve_keypair()


def test_status_port_serves_listed_keys_and_refuses_others():
    server_pub, server_sec = _pair()
    client_pub, client_sec = _pair()
    other_pub, other_sec = _pair()
    edge = Security(public_key=server_pub, secret_key=server_sec, allowed=frozenset({client_pub}))
    status = EdgeStatus("tcp://127.0.0.1:47810")
    status.board_joined("board-a", "127.0.0.1")
    server = StatusServer(status, "tcp://127.0.0.1:*", configure=edge)
    try:
        listed = Security(public_key=client_pub, secret_key=client_sec, server_key=server_pub)
        got = query_status(server.address, 5.0, configure=listed)
        unlisted = Security(public_key=other_pub, secret_key=other_sec, server_key=server_pub)
        with pytest.raises(TransportError) as refused:
            query_status(server.address, 5.0, configure=unlisted)
    finally:
        server.close()
    assert [b["id"] for b in got["boards"]] == ["board-a"]
    assert str(refused.value).startswith(
        f"{server.address} refused this tier: the server does not list this tier's public key"
    )
