"""The step a tier is working on, for log lines: the runtime sets it, the log format reads it."""

from __future__ import annotations

_step: int | None = None  # one process is one tier, and a tier runs one step at a time


def set_step(step: int | None) -> None:
    """Mark the step this process works on now (None between jobs)."""
    global _step
    _step = step


def current_step() -> int | None:
    return _step
