"""Three network namespaces (device, edge, cloud) joined by tc-shaped veth pairs, with CPU shares.

    [device] hteXXXX-de-d  <-- veth "de" -->  hteXXXX-de-e [edge] hteXXXX-ec-e  <-- veth "ec" -->
    hteXXXX-ec-c [cloud]

Each direction of a link is shaped on the sending side's egress with `tbf` ("up" is toward
the cloud: device -> edge on "de", edge -> cloud on "ec"; "down" is the reverse). Delay and
loss use `netem` under the `tbf` where the kernel has it. Every tier can be held to a CPU
share with a cgroup (v2 where its cpu controller is on, else v1's `cpu` hierarchy).

Everything the testbed creates carries the prefix `hte` plus a 4-hex-digit tag, and a state
file under /run names the owning process, so `cleanup_leftovers()` can remove what a killed
run left behind without touching a testbed that is still in use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from hiertrain_edge.errors import ConfigError, HierTrainError

log = logging.getLogger(__name__)

PREFIX = "hte"
TIERS = ("device", "edge", "cloud")
# link name -> (tier nearer the device, tier nearer the cloud)
LINKS = {"de": ("device", "edge"), "ec": ("edge", "cloud")}
DIRECTIONS = ("up", "down")
# RFC 2544's benchmarking range (198.18.0.0/15): never routed, and here it exists only
# inside the testbed's namespaces, so it cannot clash with the host's networks.
ADDRESSES = {
    ("de", "device"): "198.18.1.1",
    ("de", "edge"): "198.18.1.2",
    ("ec", "edge"): "198.18.2.1",
    ("ec", "cloud"): "198.18.2.2",
}
PREFIX_LEN = 24
STATE_DIR = Path(os.environ.get("HIERTRAIN_EMULATE_STATE", "/run/hiertrain-edge-emulate"))
_NAME_RE = re.compile(rf"^{PREFIX}([0-9a-f]{{4}})-")

# tbf: the bucket must hold the largest packet and a few ms of traffic at the rate, or tbf
# throttles below the rate; the queue holds QUEUE_MS of it. The veths send no GSO
# super-packets (gso_max_segs 1), so the largest packet is one MTU-sized frame: a bucket
# of 64 KiB (one super-packet) would let every message after an idle gap pass its first
# 64 KiB at line rate, 105 ms free per step at 5 Mbit/s.
MIN_BURST_BYTES = 4 * 1514
BURST_S = 0.004
QUEUE_S = 0.05
# ...and never less than this: TCP puts a whole message of a step (33 KB of small_cnn
# activations for 64 samples) into the queue at once after the link was idle, and a
# 50 ms queue at 2 Mbit/s (12.5 KB) dropped the rest: 99 drops in 40 s, retransmission
# timeouts, steps of 1.4 s where the link carries the message in 0.13 s. An access
# link's modem buffers far more than 50 ms of its uplink.
MIN_QUEUE_BYTES = 256 * 1024
MAX_RATE_MBPS = 100_000.0
# A CPU share emulates a slower processor only over spans longer than the cfs period:
# within a period a tier runs at the host's full speed until its quota is spent. With
# 100 ms a quarter-core board ran any burst of up to 25 ms (a forward pass, a send) four
# times faster than the board it stands for, and its steps alternated between full-speed
# and throttled lengths; 10 ms keeps such bursts under 2.5 ms.
CFS_PERIOD_US = 10_000
STOP_TIMEOUT_S = 5.0


class EmulationError(HierTrainError, RuntimeError):
    """The testbed cannot be set up on this host (no root, no iproute2, no cgroups)."""


@dataclass(frozen=True)
class LinkShape:
    """One link's emulated properties: a rate per direction, delay and loss both ways."""

    up_mbps: float
    down_mbps: float
    delay_ms: float = 0.0
    loss_pct: float = 0.0

    def __post_init__(self) -> None:
        for name in ("up_mbps", "down_mbps"):
            _check_rate(getattr(self, name), name)
        if self.delay_ms < 0:
            raise ConfigError(f"delay_ms must be >= 0, got {self.delay_ms}")
        if not 0 <= self.loss_pct < 100:
            raise ConfigError(f"loss_pct must be in [0, 100), got {self.loss_pct}")


def _check_rate(mbps: float, what: str = "rate") -> None:
    if not 0 < mbps <= MAX_RATE_MBPS:
        raise ConfigError(f"{what} must be > 0 and <= {MAX_RATE_MBPS:g} Mbit/s, got {mbps!r}")


# ---------------------------------------------------------------------------------------
# Running the tools


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    log.debug("run: %s", " ".join(argv))
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise EmulationError(
            f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return proc


def require_root() -> None:
    """Raise a clear error unless we are root and have iproute2."""
    if os.geteuid() != 0:
        raise EmulationError(
            "the emulated testbed needs root (network namespaces, tc, cgroups); "
            "run it with sudo or as root"
        )
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise EmulationError(
                f"{tool!r} not found; install iproute2 (apt-get install iproute2)"
            )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------
# CPU shares


@dataclass(frozen=True)
class CpuController:
    """Where the host's cgroup cpu controller lives and which version it speaks."""

    version: int
    root: Path

    @classmethod
    def detect(cls, base: Path = Path("/sys/fs/cgroup")) -> CpuController:
        # v2: the unified hierarchy is mounted at the base and offers the cpu controller.
        controllers = base / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            return cls(2, base)
        # v1 (also hybrid hosts, whose unified mount has no cpu controller)
        for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            if (base / name / "cpu.cfs_quota_us").exists():
                return cls(1, base / name)
        raise EmulationError(
            f"no cgroup cpu controller under {base} (neither v2 cgroup.controllers with "
            "'cpu' nor a v1 cpu hierarchy); run without CPU shares (leave cpus unset)"
        )

    def create(self, name: str, cpus: float) -> Path:
        """A cgroup that holds its processes to `cpus` CPUs (e.g. 0.5 is half a core)."""
        if not cpus > 0:
            raise ConfigError(f"cpus must be > 0, got {cpus!r}")
        path = self.root / name
        path.mkdir(exist_ok=True)
        self.set_cpus(path, cpus)
        return path

    def set_cpus(self, path: Path, cpus: float) -> None:
        quota_us = max(1000, int(cpus * CFS_PERIOD_US))
        if self.version == 2:
            with contextlib.suppress(OSError):  # may already be on, or set by the host
                (self.root / "cgroup.subtree_control").write_text("+cpu")
            try:
                (path / "cpu.max").write_text(f"{quota_us} {CFS_PERIOD_US}")
            except OSError as exc:
                raise EmulationError(
                    f"cannot set cpu.max in {path}: {exc} (is the cpu controller enabled "
                    f"in {self.root / 'cgroup.subtree_control'}?)"
                ) from exc
        else:
            (path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota_us))

    @staticmethod
    def add(path: Path, pid: int) -> None:
        (path / "cgroup.procs").write_text(str(pid))

    @staticmethod
    def remove(path: Path) -> None:
        """Kill what is left in the cgroup and remove it."""
        for _ in range(50):
            if not path.exists():
                return
            with contextlib.suppress(OSError):
                for line in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(line), signal.SIGKILL)
            try:
                path.rmdir()
                return
            except OSError:
                time.sleep(0.05)
        log.warning("could not remove cgroup %s (processes still inside?)", path)


# ---------------------------------------------------------------------------------------
# The testbed


def netem_missing_message(link: str, shape: LinkShape, why: str) -> str:
    return (
        f"netem is not available in this kernel ({why}); link {link}: delay {shape.delay_ms:g} ms "
        f"and loss {shape.loss_pct:g}% are NOT emulated, only the rates "
        f"({shape.up_mbps:g}/{shape.down_mbps:g} Mbit/s up/down)"
    )


@dataclass
class Testbed:
    """Device, edge and cloud namespaces joined by shaped veth pairs; a context manager.

    Args:
        links: the shape of "de" and "ec"; a missing link gets 1000 Mbit/s both ways.
        cpus: CPUs per tier (a float, e.g. {"device": 0.5}); tiers left out are not limited.
        tag: 4 hex digits naming this testbed's objects; random by default.
    """

    __test__ = False  # not a pytest test class, despite its name

    links: dict[str, LinkShape] = field(default_factory=dict)
    cpus: dict[str, float] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    netem: bool | None = None  # whether delay/loss could be applied; None: not needed
    notices: list[str] = field(default_factory=list)
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    _cgroups: dict[str, Path] = field(default_factory=dict)
    _cpu: CpuController | None = None
    _up: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{4}", self.tag):
            raise ConfigError(f"testbed tag must be 4 hex digits, got {self.tag!r}")
        for name in self.links:
            if name not in LINKS:
                raise ConfigError(f"unknown link {name!r}; expected one of {', '.join(LINKS)}")
        for tier in self.cpus:
            if tier not in TIERS:
                raise ConfigError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
        self.links = {n: self.links.get(n, LinkShape(1000.0, 1000.0)) for n in LINKS}
        self.rates: dict[tuple[str, str], float] = {}

    # -- names ------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.tag}"

    def ns(self, tier: str) -> str:
        if tier not in TIERS:
            raise ConfigError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
        return f"{self.prefix}-{tier}"

    def iface(self, link: str, tier: str) -> str:
        return f"{self.prefix}-{link}-{tier[0]}"

    def address(self, tier: str, link: str | None = None) -> str:
        """The tier's address on `link` (default: the device's and cloud's only link, the
        edge's link to the device)."""
        if link is None:
            link = "ec" if tier == "cloud" else "de"
        try:
            return ADDRESSES[(link, tier)]
        except KeyError:
            raise ConfigError(f"tier {tier!r} has no address on link {link!r}") from None

    def _sender(self, link: str, direction: str) -> str:
        if link not in LINKS:
            raise ConfigError(f"unknown link {link!r}; expected one of {', '.join(LINKS)}")
        if direction not in DIRECTIONS:
            raise ConfigError(f"direction must be 'up' or 'down', got {direction!r}")
        near, far = LINKS[link]
        return near if direction == "up" else far

    @property
    def addresses(self) -> dict[str, str]:
        """Who reaches whom where: the board dials "edge", the edge dials "cloud"."""
        return {
            "device": ADDRESSES[("de", "device")],
            "edge": ADDRESSES[("de", "edge")],
            "edge_to_cloud": ADDRESSES[("ec", "edge")],
            "cloud": ADDRESSES[("ec", "cloud")],
        }

    @property
    def cgroup_version(self) -> int | None:
        return self._cpu.version if self._cpu else None

    # -- life cycle -------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def up(self) -> Testbed:
        """Create namespaces, links, shaping and cgroups; on any failure, undo it all."""
        require_root()
        cleanup_leftovers()
        self._write_state()
        self._up = True
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        log.info(
            "testbed %s up: de %s, ec %s%s",
            self.prefix,
            self.links["de"],
            self.links["ec"],
            f", cpus {self.cpus}" if self.cpus else "",
        )
        return self

    def _create(self) -> None:
        # 1. namespaces, each with its loopback up
        for tier in TIERS:
            _run(["ip", "netns", "add", self.ns(tier)])
            self._ip(tier, "link", "set", "lo", "up")

        # 2. veth pairs straight into their namespaces, addressed and up
        for link, (near, far) in LINKS.items():
            _run(
                [
                    "ip", "link", "add", self.iface(link, near), "netns", self.ns(near),
                    "type", "veth", "peer", "name", self.iface(link, far), "netns", self.ns(far),
                ]
            )  # fmt: skip
            for tier in (near, far):
                dev = self.iface(link, tier)
                self._ip(
                    tier, "addr", "add", f"{ADDRESSES[(link, tier)]}/{PREFIX_LEN}", "dev", dev
                )
                self._ip(tier, "link", "set", dev, "gso_max_segs", "1")
                self._ip(tier, "link", "set", dev, "up")

        # 3. shaping, then delay/loss where asked for and possible
        for link, shape in self.links.items():
            self._shape(link, "up", shape.up_mbps, create=True)
            self._shape(link, "down", shape.down_mbps, create=True)
            if shape.delay_ms or shape.loss_pct:
                self._add_netem(link, shape)

        # 4. CPU shares
        if self.cpus:
            self._cpu = CpuController.detect()
            for tier, cpus in self.cpus.items():
                self._cgroups[tier] = self._cpu.create(self.ns(tier), cpus)

    def close(self) -> None:
        """Stop the processes, then remove namespaces (and with them the veths) and cgroups.

        Safe to call twice and after a partial `up()`.
        """
        if not self._up:
            return
        for p in self._procs:
            _stop(p)
        self._procs.clear()
        for tier in TIERS:
            ns = self.ns(tier)
            proc = _run(["ip", "netns", "pids", ns], check=False)
            for pid in proc.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _run(["ip", "netns", "del", ns], check=False)
        for path in self._cgroups.values():
            CpuController.remove(path)
        self._cgroups.clear()
        with contextlib.suppress(FileNotFoundError):
            self._state_file().unlink()
        self._up = False
        log.info("testbed %s removed", self.prefix)

    def _state_file(self) -> Path:
        return STATE_DIR / f"{self.prefix}.json"

    def _write_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self._state_file().write_text(json.dumps({"pid": os.getpid(), "tag": self.tag}))

    # -- shaping ----------------------------------------------------------------------

    def _ip(self, tier: str, *args: str) -> None:
        _run(["ip", "-n", self.ns(tier), *args])

    def _shape(self, link: str, direction: str, mbps: float, create: bool = False) -> None:
        tier = self._sender(link, direction)
        rate_bytes_s = mbps * 1e6 / 8
        burst = max(MIN_BURST_BYTES, int(rate_bytes_s * BURST_S))
        limit = burst + max(MIN_QUEUE_BYTES, int(rate_bytes_s * QUEUE_S))
        verb = "add" if create else "change"
        _run(
            [
                "tc", "-n", self.ns(tier), "qdisc", verb, "dev", self.iface(link, tier),
                "root", "handle", "1:", "tbf", "rate", f"{mbps * 1000:.0f}kbit",
                "burst", str(burst), "limit", str(limit),
            ]
        )  # fmt: skip
        self.rates[(link, direction)] = mbps

    def _add_netem(self, link: str, shape: LinkShape) -> None:
        for tier in LINKS[link]:
            args = ["delay", f"{shape.delay_ms:g}ms"] if shape.delay_ms else []
            if shape.loss_pct:
                args += ["loss", f"{shape.loss_pct:g}%"]
            proc = _run(
                [
                    "tc", "-n", self.ns(tier), "qdisc", "add", "dev", self.iface(link, tier),
                    "parent", "1:1", "handle", "10:", "netem", *args,
                ],
                check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                self.netem = False
                msg = netem_missing_message(link, shape, proc.stderr.strip() or "tc failed")
                self.notices.append(msg)
                log.warning("%s", msg)
                return
        self.netem = True

    def set_rate(self, link: str, direction: str, mbps: float) -> None:
        """Change one direction's rate now (queued packets are kept)."""
        _check_rate(mbps)
        self._sender(link, direction)
        if not self._up:
            raise EmulationError(f"testbed {self.prefix} is not up")
        self._shape(link, direction, mbps)
        log.info("link %s %s now %g Mbit/s", link, direction, mbps)

    def set_link(self, link: str, up: bool) -> None:
        """Cut `link` (both veth ends down: every packet is dropped, no reset is sent, as
        when a cable is pulled) or restore it; its addresses and shaping survive."""
        if link not in LINKS:
            raise ConfigError(f"unknown link {link!r}; expected one of {', '.join(LINKS)}")
        if not self._up:
            raise EmulationError(f"testbed {self.prefix} is not up")
        for tier in LINKS[link]:
            self._ip(tier, "link", "set", self.iface(link, tier), "up" if up else "down")
        log.info("link %s %s", link, "restored" if up else "cut")

    def set_cpus(self, tier: str, cpus: float) -> None:
        """Change a tier's CPU share now; the tier must have been given one at start."""
        if tier not in self._cgroups or self._cpu is None:
            raise ConfigError(
                f"tier {tier!r} has no cgroup; give it a cpus value when creating the testbed"
            )
        self._cpu.set_cpus(self._cgroups[tier], cpus)

    # -- processes --------------------------------------------------------------------

    def command(self, tier: str, argv: Sequence[str]) -> list[str]:
        """`argv` as run inside the tier's namespace."""
        return ["ip", "netns", "exec", self.ns(tier), *argv]

    def popen(self, tier: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` in the tier's namespace and CPU share; it is stopped on close().

        `ip netns exec` execs the command in place, so the pid is the command's own; it
        joins the cgroup right away, before it starts its torch threads.
        """
        if not self._up:
            raise EmulationError(f"testbed {self.prefix} is not up")
        proc = subprocess.Popen(self.command(tier, argv), **kwargs)
        self._procs.append(proc)
        cgroup = self._cgroups.get(tier)
        if cgroup is not None:
            try:
                CpuController.add(cgroup, proc.pid)
            except OSError as exc:
                raise EmulationError(f"cannot move pid {proc.pid} into {cgroup}: {exc}") from exc
        return proc

    def run(self, tier: str, argv: Sequence[str], timeout_s: float = 30.0) -> str:
        """Run a short command in the tier's namespace and return its stdout."""
        proc = subprocess.run(
            self.command(tier, argv), capture_output=True, text=True, timeout=timeout_s
        )
        if proc.returncode != 0:
            raise EmulationError(
                f"{' '.join(argv)} in {tier} failed (exit {proc.returncode}): "
                f"{proc.stderr.strip()}"
            )
        return proc.stdout


def _stop(p: subprocess.Popen[Any]) -> None:
    if p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def cleanup_leftovers() -> list[str]:
    """Remove namespaces and cgroups of testbeds whose owning process is gone.

    Returns the names removed. A testbed whose owner still runs is left alone.
    """
    live: set[str] = set()
    if STATE_DIR.exists():
        for f in STATE_DIR.glob(f"{PREFIX}*.json"):
            try:
                owner = int(json.loads(f.read_text())["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                owner = -1
            if owner > 0 and _pid_alive(owner):
                live.add(f.stem)
            else:
                f.unlink(missing_ok=True)

    def stale(name: str) -> bool:
        m = _NAME_RE.match(name)
        return m is not None and f"{PREFIX}{m.group(1)}" not in live

    removed = []
    listing = _run(["ip", "netns", "list"], check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if stale(name):
            pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    with contextlib.suppress(EmulationError):
        cpu = CpuController.detect()
        for path in cpu.root.glob(f"{PREFIX}*"):
            if path.is_dir() and stale(path.name):
                CpuController.remove(path)
                removed.append(f"cgroup {path.name}")
    if removed:
        log.warning("removed leftovers of earlier testbeds: %s", ", ".join(removed))
    return removed


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into SystemExit while inside, so `finally` blocks and
    context managers clean up; Ctrl-C already raises KeyboardInterrupt."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
