"""The run report a board writes with `--report FILE.json`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TRAIN_LOSS_WINDOW_STEPS = 20  # train_loss is the mean over this many last steps


@dataclass
class StepRecord:
    step: int
    schedule_id: str
    loss: float
    measured_s: float
    predicted_s: float | None = None
    bw_de_mbps: float | None = None
    bw_ec_mbps: float | None = None


@dataclass
class Report:
    schedule: dict[str, Any]
    iterations: list[StepRecord] = field(default_factory=list)
    schedule_changes: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    test_accuracy: float | None = None
    test_loss: float | None = None
    wall_s: float = 0.0

    def rolled_back(self, step: int, reason: str) -> None:
        """Steps from `step` on will run again: forget their records, note the event."""
        self.iterations = [r for r in self.iterations if r.step < step]
        self.events.append({"step": step, "event": "rollback", "reason": reason})

    @property
    def train_loss(self) -> float | None:
        tail = self.iterations[-TRAIN_LOSS_WINDOW_STEPS:]
        return sum(r.loss for r in tail) / len(tail) if tail else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_accuracy": self.test_accuracy,
            "test_loss": self.test_loss,
            "train_loss": self.train_loss,
            "steps": len(self.iterations),
            "wall_s": self.wall_s,
            "schedule": self.schedule,
            "iterations": [asdict(r) for r in self.iterations],
            "schedule_changes": self.schedule_changes,
            "events": self.events,
        }

    def write(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(p)
