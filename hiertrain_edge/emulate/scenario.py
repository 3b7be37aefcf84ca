"""Emulation scenarios: tiers' CPU shares, link shapes and their changes over time, the job.

A scenario file is TOML:

    name = "thin-wan"
    description = "slow board on a LAN edge, thin WAN to a fast cloud"
    timeout_s = 900                      # the whole run, board start to report

    [job]                                # the edge's job file (see runtime/job.py)
    model = "small_cnn"
    batch_size = 64
    steps = 40

    [run]
    schedule = "planned"                 # planned | device | edge | cloud | "n:c1:c2,..."
    secure = true                        # CurveZMQ with fresh keys; false: --insecure
    changes_from = "board"               # at_s counts from the board's start, or from
                                         # "training": the edge's "job ... started" and
                                         # the board's "job ...: model ..." lines

    [tiers.device]                       # cpus: a CPU share (0.25 = a quarter of a core)
    cpus = 0.25
    threads = 1                          # torch threads of the tier

    [links.de]                           # device <-> edge; "ec" is edge <-> cloud
    up_mbps = 100                        # toward the cloud
    down_mbps = 100
    delay_ms = 1                         # needs netem in the kernel
    loss_pct = 0

    [[changes]]                          # at_s after the board starts
    at_s = 20
    link = "ec"
    up_mbps = 2
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hiertrain_edge.emulate.netns import LINKS, MAX_RATE_MBPS, TIERS, LinkShape
from hiertrain_edge.errors import ConfigError
from hiertrain_edge.runtime.job import Job, job_from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
BASELINES = ("device", "edge", "cloud")
PLANNED = "planned"


class TierSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float | None = Field(None, gt=0, le=1024)
    threads: int = Field(1, ge=1, le=256)


class LinkSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    up_mbps: float = Field(1000.0, gt=0, le=MAX_RATE_MBPS)
    down_mbps: float = Field(1000.0, gt=0, le=MAX_RATE_MBPS)
    delay_ms: float = Field(0.0, ge=0)
    loss_pct: float = Field(0.0, ge=0, lt=100)

    def shape(self) -> LinkShape:
        return LinkShape(self.up_mbps, self.down_mbps, self.delay_ms, self.loss_pct)


class RateChange(BaseModel):
    """At `at_s` seconds after the board starts, set one or both directions of a link."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at_s: float = Field(ge=0)
    link: str
    up_mbps: float | None = Field(None, gt=0, le=MAX_RATE_MBPS)
    down_mbps: float | None = Field(None, gt=0, le=MAX_RATE_MBPS)

    @model_validator(mode="after")
    def _check(self) -> RateChange:
        if self.link not in LINKS:
            raise ValueError(f"link must be one of {', '.join(LINKS)}, got {self.link!r}")
        if self.up_mbps is None and self.down_mbps is None:
            raise ValueError("a change needs up_mbps, down_mbps or both")
        return self

    def settings(self) -> list[tuple[str, str, float]]:
        """(link, direction, Mbit/s) for each direction this change sets."""
        out = []
        if self.up_mbps is not None:
            out.append((self.link, "up", self.up_mbps))
        if self.down_mbps is not None:
            out.append((self.link, "down", self.down_mbps))
        return out


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: str = PLANNED
    # CurveZMQ on every link, with keys fresh for each runner process, as a real deployment
    # runs; false runs plaintext (--insecure) to measure what encryption costs.
    secure: bool = True
    data: str | None = None
    test_fraction: float = Field(0.2, ge=0, lt=1)
    # Where the changes' at_s count from: the board's start, or the start of training
    # (after the tiers have profiled themselves, the edge has built its table and the
    # board has built its units), so
    # that a planned run and a fixed-schedule run see the same rates at the same step.
    changes_from: Literal["board", "training"] = "board"


class Scenario(BaseModel):
    """One emulated deployment: who computes how fast, which links, which job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    timeout_s: float = Field(900.0, gt=0)
    job: dict[str, Any] = Field(default_factory=dict)
    run: RunSettings = RunSettings()
    tiers: dict[str, TierSettings] = Field(default_factory=dict)
    links: dict[str, LinkSettings] = Field(default_factory=dict)
    changes: list[RateChange] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        for tier in self.tiers:
            if tier not in TIERS:
                raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
        for link in self.links:
            if link not in LINKS:
                raise ValueError(f"unknown link {link!r}; expected one of {', '.join(LINKS)}")
        return self

    def the_job(self) -> Job:
        return job_from_dict(self.job, f"scenario {self.name}: [job]")

    def tier(self, name: str) -> TierSettings:
        return self.tiers.get(name, TierSettings())

    def link_shapes(self) -> dict[str, LinkShape]:
        return {n: self.links.get(n, LinkSettings()).shape() for n in LINKS}

    def cpu_shares(self) -> dict[str, float]:
        return {t: s.cpus for t, s in self.tiers.items() if s.cpus is not None}

    def timeline(self) -> list[RateChange]:
        return sorted(self.changes, key=lambda c: c.at_s)


def _pretty(exc: ValidationError, where: str) -> ConfigError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return ConfigError(f"{where}: {loc}: {first['msg']} (got {first.get('input')!r})")


def scenario_from_dict(data: dict[str, Any], where: str = "scenario") -> Scenario:
    try:
        scn = Scenario.model_validate(data)
    except ValidationError as exc:
        raise _pretty(exc, where) from exc
    scn.the_job()  # validate the job section now, not when the edge starts
    return scn


def shipped_scenarios() -> dict[str, Path]:
    """The scenarios that come with the package, by name."""
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.toml"))}


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Read a scenario file, or a shipped scenario by name (e.g. `thin-wan`)."""
    p = Path(path_or_name)
    if not p.exists() and str(path_or_name) in shipped_scenarios():
        p = shipped_scenarios()[str(path_or_name)]
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError as exc:
        names = ", ".join(shipped_scenarios())
        raise ConfigError(
            f"scenario {str(path_or_name)!r} is neither a file nor a shipped scenario ({names})"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scenario file {p} is not valid TOML: {exc}") from exc
    return scenario_from_dict(data, str(p))
