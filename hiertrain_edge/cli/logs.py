"""Log setup for every command: one line per record with tier and step, as text or JSON.

Text:  2026-12-03 16:20:01,123 INFO [edge step 12] hiertrain_edge.runtime.edge: message
JSON:  {"time": "2026-12-03T16:20:01.123+00:00", "level": "INFO", "tier": "edge", "step": 12,
        "logger": "hiertrain_edge.runtime.edge", "message": "..."}  (one object per line)

Under systemd (JOURNAL_STREAM is set) the text format leaves out the time, which the
journal records itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
from typing import TextIO

from hiertrain_edge.runtime.logstep import current_step

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


class TierStepFilter(logging.Filter):
    """Puts `tier`, `step` (None between jobs) and `where` ("edge step 12") on every record."""

    def __init__(self, tier: str) -> None:
        super().__init__()
        self.tier = tier

    def filter(self, record: logging.LogRecord) -> bool:
        step = current_step()
        record.tier = self.tier
        record.step = step
        record.where = self.tier if step is None else f"{self.tier} step {step}"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald and log shippers (Loki, Fluent Bit, Vector)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        out = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "tier": getattr(record, "tier", None),
            "step": getattr(record, "step", None),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def text_format(journald: bool) -> str:
    head = "" if journald else "%(asctime)s "
    return head + "%(levelname)s [%(where)s] %(name)s: %(message)s"


def setup_logging(
    level: str, tier: str, fmt: str = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Route every logger to one handler on stderr; returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(TierStepFilter(tier))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(text_format("JOURNAL_STREAM" in os.environ)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return handler


def add_log_options(parser: argparse.ArgumentParser, subcommand: bool = False) -> None:
    """`--log-level` and `--log-format`, on the main parser and again on each subcommand.

    On a subcommand the defaults are suppressed, so `hiertrain-edge --log-level debug serve`
    and `hiertrain-edge serve --log-level debug` both work.
    """
    default = argparse.SUPPRESS if subcommand else None
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default if subcommand else "info",
        help="least severe messages shown (default info)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default if subcommand else "text",
        help="text lines, or one JSON object per line for journald and log shippers",
    )
