"""`hiertrain-edge keys generate` and `keys show`, and the key flags of the tier commands."""

from __future__ import annotations

import os
import stat

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
