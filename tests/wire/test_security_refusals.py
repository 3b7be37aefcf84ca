"""Refused peers: an unlisted key, a wrong server key and a plaintext client each get a
clear error on both sides within the timeout, against real secured tier processes."""

from __future__ import annotations

import pytest
import zmq

from hiertrain_edge.runtime.device import Board
from hiertrain_edge.wire.security import PeerRefusedError, Security, load_public_key
from hiertrain_edge.wire.transport import Link


def _board(secured, mnist, security) -> Board:
    data = mnist.subset(0, 48)
    return Board(secured["edge"], data, data.subset(0, 0), board_id="b", security=security)


def test_refused_unlisted_board_key(wait_for_line, secured, mnist, short_join):
    keys = secured["keys"]
    stranger = Security.from_files(keys_dir=keys["stranger"])
    with pytest.raises(PeerRefusedError) as err:
        _board(secured, mnist, stranger).run()
    key = load_public_key(keys["stranger"] / "stranger.key").decode()
    assert str(err.value) == (
        f"{secured['edge']} refused this tier: the server does not list this tier's public "
        f"key {key} (ZAP status 400); copy this tier's NAME.key into the server's allow-list "
        "(--allow)"
    )
    line = wait_for_line(secured["edge_log"], f"its public key {key} is not on the allow-list")
    assert f"refused a client from 127.0.0.1 on {secured['edge']}" in line
    assert " WARNING " in line


def test_refused_wrong_server_key(wait_for_line, secured, mnist, short_join):
    keys = secured["keys"]
    wrong = Security.from_files(
        secret_key=keys["board"] / "board.key_secret",
        server_key=keys["stranger"] / "stranger.key",
    )
    with pytest.raises(PeerRefusedError) as err:
        _board(secured, mnist, wrong).run()
    assert str(err.value) == (
        f"{secured['edge']} refused this tier: the server hung up during the encrypted "
        "handshake; most likely --server-key is not that server's public key (or the server "
        "speaks plaintext)"
    )
    line = wait_for_line(
        secured["edge_log"],
        f"refused a client on {secured['edge']}: its encrypted handshake could not be opened; "
        "the client holds a wrong public key for this server",
    )
    assert " WARNING " in line


def test_refused_plaintext_board(wait_for_line, secured, mnist, short_join):
    with pytest.raises(PeerRefusedError) as err:
        _board(secured, mnist, None).run()
    # Depending on who hangs up first the client sees the mechanism mismatch itself or
    # only the closed connection; both name the remedy.
    assert str(err.value).startswith(f"{secured['edge']} refused this tier: the server ")
    assert str(err.value).endswith(
        "requires CurveZMQ encryption; give this tier its key pair and the server's public "
        "key (--keys DIR or --secret-key/--server-key)"
    )
    # The edge logs the mismatch only if it reads the board's greeting before the board
    # hangs up; a plaintext client that stays connected is always read.
    ctx = zmq.Context()
    plain = ctx.socket(zmq.DEALER)
    try:
        plain.connect(secured["edge"])
        line = wait_for_line(
            secured["edge_log"],
            f"refused a client on {secured['edge']}: a plaintext client tried a CurveZMQ listener",
        )
    finally:
        plain.close(linger=0)
        ctx.term()
    assert " WARNING " in line


def test_refused_unlisted_edge_at_the_cloud(wait_for_line, secured):
    keys = secured["keys"]
    stranger = Security.from_files(
        secret_key=keys["stranger"] / "stranger.key_secret",
        server_key=keys["edge"] / "server.key",  # the cloud's public key
    )
    link = Link(zmq.Context.instance(), secured["cloud"], security=stranger)
    try:
        link.send({"type": "ready", "step": 0})
        with pytest.raises(PeerRefusedError, match="does not list this tier's public key"):
            link.recv(30.0, "anything")
    finally:
        link.close()
    key = load_public_key(keys["stranger"] / "stranger.key").decode()
    wait_for_line(secured["cloud_log"], f"its public key {key} is not on the allow-list")
