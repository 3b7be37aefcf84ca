"""The entry point: a closed stdout, unknown flags, and help text on every flag."""

from __future__ import annotations

import argparse
import os
import subprocess

import pytest
from tierprocs import REPO, tier_argv, tier_env

from hiertrain_edge.cli.main import build_parser, main


def _command_parser(*names: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in names:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def test_closed_stdout_ends_quietly_like_a_unix_tool(tmp_path):
    # `hiertrain-edge ... | head` once head has exited: the reader of stdout is gone.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run(
            tier_argv("keys", "generate", "--out", str(tmp_path), "--name", "edge"),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            cwd=REPO,
            env=tier_env(),
        )
    finally:
        os.close(write_end)
    assert out.returncode == 141  # 128 + SIGPIPE, what a shell shows for `yes | head`
    assert "Traceback" not in out.stderr and "BrokenPipeError" not in out.stderr
    assert (tmp_path / "edge.key").is_file()  # the work was done; only the printing stopped


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["join", "--foo"], "usage: hiertrain-edge join "),
        (["keys", "generate", "--out", "k", "--name", "e", "--foo"],
         "usage: hiertrain-edge keys generate "),
    ],
)  # fmt: skip
def test_unknown_flag_shows_the_command_usage(capsys, argv, usage):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage)
    command = usage.removeprefix("usage: ").strip()
    assert err.splitlines()[-1] == f"{command}: error: unrecognized arguments: --foo"


@pytest.mark.parametrize("command", [("demo",), ("profile",), ("plan",), ("serve",), ("join",)])
def test_every_flag_has_help(command):
    parser = _command_parser(*command)
    silent = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert silent == []


def test_demo_help_names_only_what_the_demo_has():
    text = _command_parser("demo").format_help()
    assert "overrides the job file" not in text
    assert "--listen" not in text.replace("--status-listen", "")
    serve = _command_parser("serve").format_help()
    assert "overrides the job file" in " ".join(serve.split())
