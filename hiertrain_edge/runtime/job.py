"""The training job: what the edge reads from `job.toml` and hands to every tier."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.models import ModelSpec, get_model
from hiertrain_edge.planning.schedule import Schedule, default_three_group

if TYPE_CHECKING:
    from hiertrain_edge.planning.cost import Checkpoints

DEFAULT_EPOCHS = 3.0  # training length when a job gives neither steps nor epochs

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (Ubuntu 22.04, JetPack 6)
    import tomli as tomllib


class Job(BaseModel):
    """Every setting of one training job; the edge's job file, validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "small_cnn"
    num_classes: int = Field(10, ge=2)
    input_shape: tuple[int, ...] | None = None
    batch_size: int = Field(64, ge=1)
    # The training length: `steps`, or `epochs` passes over the board's training samples
    # (DEFAULT_EPOCHS when neither is set). A job file may give one of them, not both.
    steps: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    schedule: dict[str, Any] | None = None
    step_timeout_s: float = Field(120.0, gt=0)
    # Every this many steps the edge gathers all units' weights and optimizer state (and
    # writes them to its --out folder); a lost tier costs at most this many steps of work.
    checkpoint_every: int = Field(50, ge=1)
    rejoin_patience_s: float = Field(300.0, gt=0)  # how long the edge waits for a lost board
    # When the board loses the edge it trains on alone from the last checkpoint (the edge
    # mirrors every unit to it at each checkpoint) and hands its state back when the edge
    # returns. False: the board waits for the edge instead (a board that cannot hold the
    # whole model; the mirror then costs nothing).
    device_fallback: bool = True
    # With a planned schedule: probe the links every this many steps (0: only when no
    # estimate is fresh, see runtime/bandwidth.py). Each probe costs about 0.25 s of link.
    probe_every_steps: int = Field(0, ge=0)

    @field_validator("schedule")
    @classmethod
    def _schedule_shape(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            Schedule.from_dict(v)
        return v

    def checkpoint_costs(self) -> Checkpoints:
        """The periodic snapshot as the cost model prices it: this interval, this
        optimizer's state per parameter, the board's mirror when it may train alone."""
        from hiertrain_edge.planning.cost import Checkpoints  # numpy: not on the lookup path

        # Adam keeps two moments per parameter; SGD a buffer only with momentum.
        copies = 2 if self.optimizer == "adam" else int(self.momentum > 0)
        return Checkpoints(self.checkpoint_every, copies, self.device_fallback)

    def spec(self) -> ModelSpec:
        return get_model(self.model, self.num_classes, self.input_shape)

    def the_schedule(self, spec: ModelSpec | None = None) -> Schedule:
        """The job's fixed schedule, or the three-group default when none is given."""
        spec = spec or self.spec()
        if self.schedule is None:
            return default_three_group(spec.num_units, self.batch_size)
        return Schedule.from_dict(self.schedule).validate(spec.num_units, self.batch_size)

    def total_steps(self, n_train: int) -> int:
        if self.steps is not None:
            return self.steps
        epochs = DEFAULT_EPOCHS if self.epochs is None else self.epochs
        return max(1, math.ceil(epochs * steps_per_epoch(n_train, self.batch_size)))


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Full batches per pass over the data; the last partial batch is dropped."""
    if n_train < batch_size:
        raise ConfigError(
            f"batch size {batch_size} exceeds the {n_train} training samples on the board"
        )
    return n_train // batch_size


def _pretty(exc: ValidationError, where: str) -> ConfigError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return ConfigError(f"{where}: {field}: {first['msg']} (got {first.get('input')!r})")


def job_from_dict(data: dict[str, Any], where: str = "job") -> Job:
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        raise _pretty(exc, where) from exc


def load_job(path: str | Path) -> Job:
    """Read and validate a TOML job file."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"job file {str(p)!r} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"job file {p} is not valid TOML: {exc}") from exc
    # Checked on the file alone: jobs written before epochs could be unset carry both
    # (epochs 3.0 beside the steps that were used), in model files and from older edges.
    if "steps" in data and "epochs" in data:
        raise ConfigError(
            f"{p}: gives both steps ({data['steps']!r}) and epochs ({data['epochs']!r}); "
            "expected one of them"
        )
    return job_from_dict(data, str(p))
