"""`join` settings from /etc/hiertrain-edge/device.toml: parsing, clear errors, flags win."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hiertrain_edge.cli.device_config import (
    DeviceConfig,
    apply_device_config,
    load_device_config,
)
from hiertrain_edge.cli.main import build_parser
from hiertrain_edge.errors import ConfigError

GOOD = """\
edge = "192.168.1.20:47810"
data = "data"
report = "/var/lib/hiertrain-edge/report.json"
out = "out"
threads = 3
test_fraction = 0.25

[keys]
secret = "keys/device.key_secret"
edge_public = "/etc/hiertrain-edge/keys/edge.key"
"""


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "device.toml"
    f.write_text(text)
    return f


def join_args(*argv: str):
    return build_parser().parse_args(["join", *argv])


def test_config_reads_every_setting_relative_to_the_file(tmp_path):
    c = load_device_config(write(tmp_path, GOOD))
    assert c.edge == "192.168.1.20:47810"
    assert c.data == tmp_path / "data"
    assert c.report == Path("/var/lib/hiertrain-edge/report.json")
    assert c.out == tmp_path / "out"
    assert c.threads == 3
    assert c.test_fraction == 0.25
    assert c.keys.secret == tmp_path / "keys" / "device.key_secret"
    assert c.keys.edge_public == Path("/etc/hiertrain-edge/keys/edge.key")


def test_config_absent_default_file_means_no_settings(tmp_path):
    assert load_device_config(None, default=tmp_path / "none.toml") == DeviceConfig()


def test_config_flags_override_the_file(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    f = write(tmp_path, GOOD)
    args = join_args("10.0.0.9", "--config", str(f), "--test-fraction", "0.1", "--out", "/x")
    apply_device_config(args)
    assert args.edge == "10.0.0.9"
    assert args.test_fraction == 0.1
    assert args.out == "/x"
    # Unset flags come from the file.
    assert args.data == str(tmp_path / "data")
    assert args.report == "/var/lib/hiertrain-edge/report.json"
    assert args.threads == 3


def test_config_default_path_is_read_when_present(tmp_path):
    f = write(tmp_path, 'edge = "edge.local"\n')
    args = join_args()
    apply_device_config(args, default=f)
    assert args.edge == "edge.local"
    assert args.test_fraction == 0.2
    assert args.data is None and args.threads is None


def test_config_without_edge_anywhere_is_a_clear_error(tmp_path):
    args = join_args()
    with pytest.raises(ConfigError) as exc:
        apply_device_config(args, default=tmp_path / "device.toml")
    assert str(exc.value) == (
        "no edge address: give EDGE_HOST on the command line or set edge = "
        f'"HOST[:PORT]" in {tmp_path}/device.toml'
    )


def test_config_key_paths_are_kept_and_reported_when_join_has_no_key_options(tmp_path, caplog):
    f = write(tmp_path, GOOD)
    args = join_args("--config", str(f))
    if hasattr(args, "secret_key"):
        pytest.skip("join has key options now; see the pass-through test")
    with caplog.at_level(logging.WARNING):
        config = apply_device_config(args)
    assert config.keys.secret == tmp_path / "keys" / "device.key_secret"
    assert (
        f"keys.secret, keys.edge_public in {f}: this version of join has no key options, so "
        "the link is not encrypted by them"
    ) in caplog.text


def test_config_key_paths_pass_through_to_join_key_options(tmp_path):
    import argparse

    f = write(tmp_path, GOOD)
    args = argparse.Namespace(
        edge=None,
        config=str(f),
        data=None,
        report=None,
        out=None,
        test_fraction=None,
        threads=1,
        keys=None,
        secret_key=None,
        server_key="/given/on/the/command/line.key",
        insecure=False,
    )
    apply_device_config(args)
    assert args.secret_key == str(tmp_path / "keys" / "device.key_secret")
    assert args.server_key == "/given/on/the/command/line.key"
    assert args.keys is None and args.insecure is False


def test_config_key_folder_and_insecure_pass_through_to_join(tmp_path):
    f = write(tmp_path, 'edge = "e"\ninsecure = true\n[keys]\ndir = "/etc/hiertrain-edge/keys"\n')
    args = join_args("--config", str(f))
    if not hasattr(args, "server_key"):
        pytest.skip("this join has no key options (security layer not merged)")
    apply_device_config(args)
    assert args.keys == "/etc/hiertrain-edge/keys"
    assert args.insecure is True
    assert args.secret_key is None and args.server_key is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "threads = 0\n",
            "threads: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            'threads = "four"\n',
            "threads: Input should be a valid integer, unable to parse string as an integer "
            "(got 'four')",
        ),
        (
            "test_fraction = 1.5\n",
            "test_fraction: Input should be less than 1 (got 1.5)",
        ),
        (
            'edge = "edge.local:99999"\n',
            "edge: port in 'edge.local:99999' must be 1..65535 (got 'edge.local:99999')",
        ),
        (
            'edge = "  "\n',
            "edge: must be host, host:port or tcp://host:port, not empty (got '  ')",
        ),
        (
            'edge_adress = "edge.local"\n',
            "unknown setting 'edge_adress' (accepted: edge, data, report, out, threads, "
            "test_fraction, board_id, insecure, keys)",
        ),
        (
            '[keys]\nprivate = "a.key"\n',
            "unknown setting 'keys.private' (accepted: keys.dir, keys.secret, keys.edge_public)",
        ),
        (
            "data = 3\n",
            "data: Input is not a valid path for <class 'pathlib.Path'> (got 3)",
        ),
    ],
)
def test_config_bad_value_names_the_key_and_value(tmp_path, text, message):
    f = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_device_config(f)
    assert str(exc.value) == f"{f}: {message}"


def test_config_not_toml_and_missing_file(tmp_path):
    f = write(tmp_path, "edge = 192.168.1.20\n")
    with pytest.raises(ConfigError) as exc:
        load_device_config(f)
    assert str(exc.value).startswith(f"config file {f} is not valid TOML: ")
    with pytest.raises(ConfigError) as exc:
        load_device_config(tmp_path / "nope.toml")
    assert str(exc.value) == f"config file '{tmp_path}/nope.toml' does not exist"


def test_config_error_from_the_command_line_is_one_line(tmp_path):
    import subprocess
    import sys

    f = write(tmp_path, "threads = -2\n")
    out = subprocess.run(
        [sys.executable, "-m", "hiertrain_edge", "join", "--config", str(f)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"hiertrain-edge join: error: {f}: threads: Input should be greater than or equal "
        "to 1 (got -2)"
    )


def test_config_board_id_names_the_board_unless_the_flag_does(tmp_path):
    f = write(tmp_path, 'edge = "edge.local"\nboard_id = "greenhouse-7"\n')
    args = join_args("--config", str(f))
    apply_device_config(args)
    assert args.board_id == "greenhouse-7"
    args = join_args("--config", str(f), "--board-id", "pi-2")
    apply_device_config(args)
    assert args.board_id == "pi-2"
