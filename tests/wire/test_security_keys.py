"""Key files: owner-only on disk, refused when others may read them, loaded into settings."""

from __future__ import annotations

import logging
import os
import stat

import pytest
import zmq
import zmq.auth

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.wire.security import (
    Security,
    generate_keypair,
    is_loopback,
    load_keypair,
    load_public_key,
)
from hiertrain_edge.wire.transport import Link, Listener


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_keys_generate_writes_owner_only_secret_and_readable_public(tmp_path):
    public, secret = generate_keypair(tmp_path / "k", "edge")
    assert (public.name, secret.name) == ("edge.key", "edge.key_secret")
    assert _mode(secret) == 0o600
    assert _mode(public) == 0o644
    assert _mode(tmp_path / "k") == 0o700
    pub, sec = load_keypair(secret)
    assert load_public_key(public) == pub
    assert zmq.curve_public(sec) == pub
    # ZeroMQ's own certificate reader understands the files.
    assert zmq.auth.load_certificate(secret) == (pub, sec)
    assert zmq.auth.load_certificate(public) == (pub, None)


def test_keys_generate_under_a_permissive_umask_is_still_owner_only(tmp_path):
    old = os.umask(0)
    try:
        _, secret = generate_keypair(tmp_path, "board")
    finally:
        os.umask(old)
    assert _mode(secret) == 0o600


def test_keys_generate_refuses_to_overwrite(tmp_path):
    generate_keypair(tmp_path, "edge")
    with pytest.raises(ConfigError) as err:
        generate_keypair(tmp_path, "edge")
    assert str(err.value) == (
        f"key file {tmp_path / 'edge.key_secret'} already exists; pass --force to replace it"
    )
    generate_keypair(tmp_path, "edge", force=True)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_keys_secret_readable_by_others_is_refused(tmp_path, mode):
    _, secret = generate_keypair(tmp_path, "edge")
    os.chmod(secret, mode)
    with pytest.raises(ConfigError) as err:
        load_keypair(secret)
    assert str(err.value) == (
        f"secret key file {secret} is open to group or others (mode {mode:04o}); "
        f"only its owner may read it: run chmod 600 {secret}"
    )


def test_keys_bad_name_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="key name '../x' must be"):
        generate_keypair(tmp_path, "../x")
    public, secret = generate_keypair(tmp_path, "edge")
    with pytest.raises(ConfigError) as err:
        load_keypair(public)
    assert str(err.value) == (
        f"{public} holds no secret-key line; give the NAME.key_secret file, not NAME.key"
    )
    bad = tmp_path / "bad.key"
    bad.write_text('curve\n    public-key = "tooshort"\n')
    with pytest.raises(ConfigError) as err:
        load_public_key(bad)
    assert str(err.value) == (f"public-key in {bad} has 8 characters; a Z85 CurveZMQ key has 40")
    with pytest.raises(ConfigError) as err:
        load_public_key(tmp_path / "missing.key")
    assert str(err.value) == f"public key file {tmp_path / 'missing.key'} does not exist"
    # A key pair whose listed public key is another key's.
    other_public, _ = generate_keypair(tmp_path, "other")
    text = secret.read_text().replace(
        load_public_key(public).decode(), load_public_key(other_public).decode()
    )
    forged = tmp_path / "forged.key_secret"
    forged.write_text(text)
    os.chmod(forged, 0o600)
    with pytest.raises(ConfigError) as err:
        load_keypair(forged)
    assert str(err.value) == f"public-key in {forged} does not belong to its secret-key"


def test_keys_folder_layout(tmp_path):
    d = tmp_path / "edge-keys"
    generate_keypair(d, "edge")
    b1, _ = generate_keypair(tmp_path / "b1", "board-1")
    b2, _ = generate_keypair(tmp_path / "b2", "board-2")
    cloud, _ = generate_keypair(tmp_path / "c", "cloud")
    (d / "allowed").mkdir()
    for f in (b1, b2):
        (d / "allowed" / f.name).write_text(f.read_text())
    (d / "server.key").write_text(cloud.read_text())

    s = Security.from_files(keys_dir=d)
    assert s.public_key == load_public_key(d / "edge.key")
    assert s.allowed == {load_public_key(b1), load_public_key(b2)}
    assert s.server_key == load_public_key(cloud)
    assert s.secret_key is not None and s.secret_key.decode() not in repr(s)

    # Explicit files win over the folder's parts.
    only = Security.from_files(keys_dir=d, allow=[b1])
    assert only.allowed == {load_public_key(b1)}

    generate_keypair(d, "second")
    with pytest.raises(ConfigError) as err:
        Security.from_files(keys_dir=d)
    assert str(err.value) == (
        f"keys folder {d} holds 2 key pairs (edge.key_secret, second.key_secret); "
        "keep one or pick it with --secret-key"
    )


def test_keys_allow_or_server_key_without_own_pair_is_refused(tmp_path):
    public, _ = generate_keypair(tmp_path, "board")
    with pytest.raises(ConfigError, match=r"an allow-list \(--allow\) needs this tier's own"):
        Security.from_files(allow=[public])
    with pytest.raises(ConfigError, match=r"a server key \(--server-key\) needs this tier's"):
        Security.from_files(server_key=public)
    with pytest.raises(ConfigError) as err:
        Security.from_files(allow=[tmp_path / "nothing"], secret_key=tmp_path / "board.key_secret")
    assert str(err.value) == f"public key file {tmp_path / 'nothing'} does not exist"


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("tcp://127.0.0.1:47810", True),
        ("tcp://127.3.4.5:1", True),
        ("tcp://[::1]:47810", True),
        ("tcp://localhost:47810", True),
        ("ipc:///tmp/x", True),
        ("inproc://x", True),
        ("tcp://*:47810", False),
        ("tcp://0.0.0.0:47810", False),
        ("tcp://10.0.0.2:47810", False),
        ("tcp://edge.local:47810", False),
        ("tcp://eth0:47810", False),
    ],
)
def test_security_is_loopback(address, loopback):
    assert is_loopback(address) is loopback


def test_security_plaintext_off_loopback_needs_insecure(caplog):
    ctx = zmq.Context.instance()
    with pytest.raises(ConfigError) as err:
        Listener(ctx, "tcp://0.0.0.0:0")
    assert str(err.value) == (
        "listener on tcp://0.0.0.0:0 would be plaintext off loopback; give this tier its keys "
        "(--keys DIR, see `hiertrain-edge keys generate`) or pass --insecure to accept an "
        "unencrypted, unauthenticated link"
    )
    with pytest.raises(ConfigError, match="link on tcp://10.255.255.1:9 would be plaintext"):
        Link(ctx, "tcp://10.255.255.1:9")

    with caplog.at_level(logging.WARNING, logger="hiertrain_edge.wire.security"):
        listener = Listener(ctx, "tcp://0.0.0.0:0", security=Security(insecure=True))
        listener.close()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "listener on tcp://0.0.0.0:0 is PLAINTEXT (--insecure): anyone who can reach it can "
        "read the activations and join the job"
    ]


def test_security_keyed_listener_without_allow_list_is_refused(tmp_path):
    _, secret = generate_keypair(tmp_path, "edge")
    with pytest.raises(ConfigError, match="has a key pair but admits nobody"):
        Listener(
            zmq.Context.instance(),
            "tcp://127.0.0.1:0",
            security=Security.from_files(secret_key=secret),
        )
