"""Log lines: one format with tier and step, JSON for shippers, flags anywhere on the line."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from hiertrain_edge.cli.logs import setup_logging
from hiertrain_edge.cli.main import build_parser
from hiertrain_edge.runtime.logstep import set_step


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    set_step(None)
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    set_step(None)


def test_text_lines_carry_tier_and_step(restore_logging, monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    setup_logging("info", "edge", "text", stream=out)
    log = logging.getLogger("hiertrain_edge.runtime.edge")
    log.info("between jobs")
    set_step(12)
    log.warning("cloud lost after %.1f s", 10.0)
    log.debug("not shown at info")
    lines = out.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert len(lines) == 2
    assert re.fullmatch(
        rf"{stamp} INFO \[edge\] hiertrain_edge.runtime.edge: between jobs", lines[0]
    )
    assert re.fullmatch(
        rf"{stamp} WARNING \[edge step 12\] hiertrain_edge.runtime.edge: cloud lost after 10.0 s",
        lines[1],
    )


def test_text_lines_under_journald_leave_the_time_out(restore_logging, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    out = io.StringIO()
    setup_logging("info", "device", "text", stream=out)
    set_step(3)
    logging.getLogger("hiertrain_edge.runtime.device").info("step %d/%d", 4, 10)
    assert out.getvalue() == "INFO [device step 3] hiertrain_edge.runtime.device: step 4/10\n"


def test_json_lines_are_one_object_each(restore_logging):
    out = io.StringIO()
    setup_logging("debug", "cloud", "json", stream=out)
    set_step(7)
    log = logging.getLogger("hiertrain_edge.runtime.cloud")
    log.debug("group %d", 2)
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")
    lines = out.getvalue().splitlines()
    first, second = json.loads(lines[0]), json.loads(lines[1])
    assert len(lines) == 2
    assert {k: first[k] for k in ("level", "tier", "step", "logger", "message")} == {
        "level": "DEBUG",
        "tier": "cloud",
        "step": 7,
        "logger": "hiertrain_edge.runtime.cloud",
        "message": "group 2",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first["time"])
    assert second["level"] == "ERROR"
    assert second["exc"].endswith("ValueError: bad")


@pytest.mark.parametrize(
    ("argv", "level", "fmt"),
    [
        (["serve"], "info", "text"),
        (["--log-level", "warning", "serve"], "warning", "text"),
        (["serve", "--log-level", "debug", "--log-format", "json"], "debug", "json"),
        (["--log-format", "json", "status", "--log-level", "error"], "error", "json"),
    ],
)
def test_log_flags_work_before_and_after_the_command(argv, level, fmt):
    args = build_parser().parse_args(argv)
    assert (args.log_level, args.log_format) == (level, fmt)
