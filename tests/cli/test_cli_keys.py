"""`hiertrain-edge keys generate` and `keys show`, and the key flags of the tier commands."""

from __future__ import annotations

import os
import stat

import pytest

from hiertrain_edge.cli.main import build_parser, main
from hiertrain_edge.wire.security import load_public_key


def test_cli_keys_generate_and_show(tmp_path, capsys):
    assert main(["keys", "generate", "--out", str(tmp_path), "--name", "board-1"]) == 0
    secret, public = tmp_path / "board-1.key_secret", tmp_path / "board-1.key"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"key pair (keep on this machine, mode 0600): {secret}",
        f"public key (copy to the tiers that admit or trust this one): {public}",
    ]
    assert main(["keys", "show", str(public), str(secret)]) == 0
    key = load_public_key(public).decode()
    assert capsys.readouterr().out.splitlines() == [f"{public}: {key}", f"{secret}: {key}"]


def test_cli_keys_generate_twice_is_a_one_line_error(tmp_path, capsys):
    args = ["keys", "generate", "--out", str(tmp_path), "--name", "edge"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"hiertrain-edge keys: error: key file {tmp_path / 'edge.key_secret'} already "
        "exists; pass --force to replace it\n"
    )


def test_cli_tier_commands_take_key_flags():
    parser = build_parser()
    cloud = parser.parse_args(["cloud", "--keys", "k", "--allow", "a.key", "--allow", "d"])
    assert (cloud.keys, cloud.allow, cloud.insecure) == ("k", ["a.key", "d"], False)
    serve = parser.parse_args(["serve", "--secret-key", "e.key_secret", "--server-key", "c.key"])
    assert (serve.secret_key, serve.server_key) == ("e.key_secret", "c.key")
    join = parser.parse_args(["join", "edge.local", "--insecure"])
    assert join.insecure is True and not hasattr(join, "allow")


def _keys_folder(path, name, server_key=False, admits=False):
    """A --keys folder with NAME's key pair, and optionally server.key and allowed/."""
    assert main(["keys", "generate", "--out", str(path), "--name", name]) == 0
    if server_key:
        (path / "server.key").write_bytes((path / f"{name}.key").read_bytes())
    if admits:
        (path / "allowed").mkdir()
        (path / "allowed" / "peer.key").write_bytes((path / f"{name}.key").read_bytes())
    return path


def test_cli_keys_folder_without_the_key_pair_names_it(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["cloud", "--keys", str(empty)]) == 2
    assert capsys.readouterr().err == (
        f"hiertrain-edge cloud: error: keys folder {empty} holds no NAME.key_secret (this "
        "tier's key pair), which the listener on tcp://*:47820 needs off loopback; make one "
        f"with `hiertrain-edge keys generate --out {empty} --name NAME`\n"
    )
    assert main(["join", "10.0.0.7", "--keys", str(empty)]) == 2
    assert capsys.readouterr().err == (
        f"hiertrain-edge join: error: keys folder {empty} holds no NAME.key_secret (this "
        "tier's key pair) and no server.key (the edge's public key), which the link to "
        "tcp://10.0.0.7:47810 needs off loopback; make one with `hiertrain-edge keys "
        f"generate --out {empty} --name NAME` and copy the edge's NAME.key there as "
        "server.key\n"
    )


def test_cli_keys_folder_without_server_key_names_it(tmp_path, capsys):
    edge = _keys_folder(tmp_path / "edge", "edge", admits=True)
    capsys.readouterr()
    argv = ["serve", "--keys", str(edge), "--cloud", "10.0.0.9", "--listen", "127.0.0.1"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"hiertrain-edge serve: error: keys folder {edge} holds no server.key (the cloud's "
        "public key), which the link to tcp://10.0.0.9:47820 needs off loopback; copy the "
        "cloud's NAME.key there as server.key\n"
    )
    board = _keys_folder(tmp_path / "board", "board-1")
    capsys.readouterr()
    assert main(["join", "10.0.0.7:5555", "--keys", str(board)]) == 2
    assert capsys.readouterr().err.endswith(
        f"keys folder {board} holds no server.key (the edge's public key), which the link "
        "to tcp://10.0.0.7:5555 needs off loopback; copy the edge's NAME.key there as "
        "server.key\n"
    )


def test_cli_keys_given_a_file_says_it_is_not_a_folder(tmp_path, capsys):
    _keys_folder(tmp_path, "edge")
    capsys.readouterr()
    secret = tmp_path / "edge.key_secret"
    assert main(["cloud", "--keys", str(secret)]) == 2
    assert capsys.readouterr().err == (
        f"hiertrain-edge cloud: error: --keys {secret} is a file, not a folder; expected a "
        "folder holding NAME.key_secret (give a key pair file alone with --secret-key FILE)\n"
    )
    assert main(["cloud", "--keys", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == (
        f"hiertrain-edge cloud: error: keys folder {tmp_path / 'nope'} does not exist\n"
    )


@pytest.mark.parametrize("command", [["cloud"], ["serve", "--cloud", "127.0.0.1"]])
def test_cli_default_listen_without_keys_says_how_to_stay_on_loopback(capsys, command):
    port = 47820 if command[0] == "cloud" else 47810
    assert main(command) == 2
    assert capsys.readouterr().err == (
        f"hiertrain-edge {command[0]}: error: the listener on tcp://*:{port} (the default) "
        "would be plaintext off loopback; on one machine pass --listen 127.0.0.1, else give "
        "this tier its keys (--keys DIR, see `hiertrain-edge keys generate`) or pass "
        "--insecure\n"
    )


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("127.0.0.1:70000", "port in '127.0.0.1:70000' must be 1..65535"),
        ("10.0.0.3", "listener on tcp://10.0.0.3:47820 would be plaintext off loopback"),
    ],
)  # fmt: skip
def test_cli_listen_takes_host_and_port(capsys, listen, message):
    assert main(["cloud", "--listen", listen]) == 2
    assert message in capsys.readouterr().err
