"""Tier profiles: what one tier's hardware costs per unit, per message and per byte, with
where the numbers came from; the JSON schema of hw_profiles/, validated on load.

A profile is either

* **measured** -- `hiertrain-edge profile` (or `quick_profile`) timed every unit of one
  model on the host: forward and backward time as ``a + b * n`` for n samples, fitted by
  least squares over several n, with the fit's error; or
* **estimated** -- a board we cannot run here, described by published figures (effective
  GFLOP/s, memory bandwidth, per-operator overhead) that `unit_costs` maps through each
  unit's FLOPs and bytes:

      forward(n)  = overhead_s + n * (flops / (gflops * 1e9) + bytes_moved / (mem_gbps * 1e9))
      backward(n) = overhead_s + n * bwd_ratio * (the same per-sample term)

  with bytes_moved = input + output activation bytes of the unit per sample, and
  bwd_ratio = 2 (input and weight gradients), 1 for unit 0 (no input gradient).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hiertrain_edge.errors import ConfigError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BWD_FLOPS_RATIO = 2.0  # backward = input gradient + weight gradient, each ~ one forward
FIRST_UNIT_BWD_FLOPS_RATIO = 1.0  # unit 0 never computes a gradient for the raw input
PROFILE_DIR_ENV = "HIERTRAIN_HW_PROFILES"


class LinearFit(BaseModel):
    """Time of n samples as a_s + b_s * n, and how well that line fits the measurements."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a_s: float = Field(ge=0)
    b_s: float = Field(ge=0)
    rel_err: float = Field(0.0, ge=0, description="max |fit - measured| / measured")

    def at(self, n: float) -> float:
        return self.a_s + self.b_s * n


class UnitProfile(BaseModel):
    """One unit of a model as measured on one tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    fwd: LinearFit
    bwd: LinearFit
    out_bytes: int = Field(ge=0, description="float32 output bytes per sample")
    param_bytes: int = Field(ge=0)
    saved_bytes: int = Field(0, ge=0, description="activation bytes kept for backward, per sample")


class ComputeFigures(BaseModel):
    """Published-figure description of a processor, for estimated profiles."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gflops: float = Field(gt=0, description="effective fp32 GFLOP/s of PyTorch training kernels")
    mem_gbps: float = Field(gt=0, description="effective memory bandwidth, GB/s")
    op_overhead_s: float = Field(ge=0, description="fixed cost of one unit's forward or backward")


class Provenance(BaseModel):
    """Where the numbers came from; an estimate names its sources and formula."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["measured", "estimated"]
    method: str = Field(min_length=1)
    host: str | None = None
    date: str | None = None
    sources: list[str] = Field(default_factory=list)
    formula: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Provenance:
        if self.kind == "measured" and not (self.host and self.date):
            raise ValueError("a measured profile must name its host and date")
        if self.kind == "estimated" and not (self.sources and self.formula):
            raise ValueError("an estimated profile must list its sources and its formula")
        return self


class TierProfile(BaseModel):
    """The cost of one tier's hardware; see the module docstring for the two kinds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(min_length=1)
    description: str = ""
    provenance: Provenance
    cpu_model: str = ""
    threads: int | None = Field(None, ge=1)
    memory_budget_bytes: int = Field(gt=0, description="what training may use on this tier")
    message_overhead_s: float = Field(ge=0, description="fixed CPU cost of one message, one way")
    optimizer_s_per_byte: float = Field(ge=0, description="optimizer step per parameter byte")
    copy_s_per_byte: float = Field(ge=0, description="adding or copying one tensor byte")
    wire_s_per_byte: float = Field(
        0.0,
        ge=0,
        description="CPU cost of one byte a message carries, one way (sender and receiver "
        "together), on top of message_overhead_s: encryption, copies, the TCP stack",
    )
    model: str | None = Field(None, description="the model a measured profile was taken on")
    batch_size: int | None = Field(None, ge=1, description="the largest n measured")
    units: list[UnitProfile] | None = None
    compute: ComputeFigures | None = None

    @model_validator(mode="after")
    def _kind_matches(self) -> TierProfile:
        kind = self.provenance.kind
        if kind == "measured" and (self.units is None or self.model is None):
            raise ValueError("a measured profile needs `model` and `units`")
        if kind == "estimated" and self.compute is None:
            raise ValueError("an estimated profile needs `compute` figures")
        if self.units is not None and [u.index for u in self.units] != list(
            range(len(self.units))
        ):
            raise ValueError("`units` must list unit 0, 1, 2, ... in order")
        return self

    @property
    def measured(self) -> bool:
        return self.provenance.kind == "measured"

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.model_dump_json(indent=1, exclude_none=True) + "\n")
        return p


def today() -> str:
    return date.today().isoformat()


# --- finding and loading ------------------------------------------------------------


def profile_dirs() -> list[Path]:
    """Where profile names are looked up, first match wins.

    1. $HIERTRAIN_HW_PROFILES, when set;
    2. hw_profiles/ at the top of a source checkout (next to the package);
    3. the copies shipped inside the package (hiertrain_edge/profiling/hw_profiles).
    """
    here = Path(__file__).resolve().parent
    dirs = []
    if os.environ.get(PROFILE_DIR_ENV):
        dirs.append(Path(os.environ[PROFILE_DIR_ENV]))
    dirs += [here.parents[1] / "hw_profiles", here / "hw_profiles"]
    return [d for d in dirs if d.is_dir()]


def available_profiles() -> list[str]:
    names: set[str] = set()
    for d in profile_dirs():
        names.update(p.stem for p in d.glob("*.json"))
    return sorted(names)


def parse_profile(data: object, where: str = "profile") -> TierProfile:
    try:
        return TierProfile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{where}: {field}: {first['msg']}") from exc


def load_profile(ref: str | Path) -> TierProfile:
    """A profile from a JSON file path, or by name from hw_profiles/ (e.g. `rpi4`)."""
    path = Path(ref)
    if not path.is_file():
        for d in profile_dirs():
            candidate = d / f"{ref}.json"
            if candidate.is_file():
                path = candidate
                break
        else:
            raise ConfigError(
                f"no profile file or hw_profiles name {str(ref)!r}; expected a JSON path or "
                f"one of {', '.join(available_profiles()) or '(none found)'}"
            )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"profile {path} is not valid JSON: {exc}") from exc
    profile = parse_profile(data, str(path))
    log.debug("loaded %s profile %s from %s", profile.provenance.kind, profile.name, path)
    return profile
