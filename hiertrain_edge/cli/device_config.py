"""The board's settings file (`/etc/hiertrain-edge/device.toml`) that `join` reads as a service.

A board installed by `firmware_scripts/install.sh` runs `hiertrain-edge join` from systemd with
no flags; everything it needs comes from this file. Flags given on the command line win over
the file. Relative paths in the file are taken relative to the file's folder.

    edge = "192.168.1.20:47810"        # edge host[:port] or a full tcp:// endpoint
    data = "/var/lib/hiertrain-edge/data"
    report = "/var/lib/hiertrain-edge/report.json"
    out = "/var/lib/hiertrain-edge/out"
    threads = 4
    test_fraction = 0.2
    board_id = "greenhouse-7"          # this board's name at the edge (default: host name)

    [keys]                             # CurveZMQ keys (see `hiertrain-edge keys generate`)
    secret = "/etc/hiertrain-edge/keys/device.key_secret"   # join --secret-key
    edge_public = "/etc/hiertrain-edge/keys/edge.key"       # join --server-key
    # dir = "/etc/hiertrain-edge/keys"                      # join --keys (instead of both)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hiertrain_edge.errors import ConfigError, TransportError
from hiertrain_edge.wire.transport import EDGE_PORT, endpoint

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (Ubuntu 22.04, JetPack 6)
    import tomli as tomllib

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("/etc/hiertrain-edge/device.toml")
DEFAULT_TEST_FRACTION = 0.2

# `keys.<name>` in the file -> the `join` option (argparse dest) it fills. A `join` without
# key options (a build without the security layer) keeps the paths and logs a WARNING.
KEY_DESTS = {"dir": "keys", "secret": "secret_key", "edge_public": "server_key"}


class KeyPaths(BaseModel):
    """Paths of the board's CurveZMQ key files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Path | None = None
    secret: Path | None = None
    edge_public: Path | None = None


class DeviceConfig(BaseModel):
    """Every setting `join` can take from the board's settings file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    edge: str | None = None
    data: Path | None = None
    report: Path | None = None
    out: Path | None = None
    threads: int | None = Field(None, ge=1)
    test_fraction: float = Field(DEFAULT_TEST_FRACTION, ge=0.0, lt=1.0)
    # Boards flashed from one image share a host name: each needs its own id at the edge.
    board_id: str | None = Field(None, min_length=1, max_length=64)
    insecure: bool | None = None
    keys: KeyPaths = KeyPaths()

    @field_validator("edge")
    @classmethod
    def _edge_address(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip():
            raise ValueError("must be host, host:port or tcp://host:port, not empty")
        try:
            endpoint(v, EDGE_PORT)
        except TransportError as exc:
            raise ValueError(str(exc)) from None
        return v

    def relative_to(self, folder: Path) -> DeviceConfig:
        """The same settings with relative paths resolved against `folder`."""

        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else folder / p

        keys = KeyPaths(**{k: fix(v) for k, v in self.keys.model_dump().items()})
        return self.model_copy(
            update={
                "data": fix(self.data),
                "report": fix(self.report),
                "out": fix(self.out),
                "keys": keys,
            }
        )


def _field_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    return [prefix + name for name in model.model_fields]


def _pretty(exc: ValidationError, where: Path) -> ConfigError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        accepted = _field_names(KeyPaths, "keys.") if field.startswith("keys.") else None
        accepted = accepted or _field_names(DeviceConfig)
        return ConfigError(f"{where}: unknown setting {field!r} (accepted: {', '.join(accepted)})")
    msg = first["msg"].removeprefix("Value error, ")
    return ConfigError(f"{where}: {field}: {msg} (got {first.get('input')!r})")


def config_from_dict(data: dict[str, Any], where: Path) -> DeviceConfig:
    """Validate parsed TOML; relative paths are resolved against the file's folder."""
    try:
        return DeviceConfig.model_validate(data).relative_to(where.parent)
    except ValidationError as exc:
        raise _pretty(exc, where) from exc


def load_device_config(
    path: str | Path | None, default: Path = DEFAULT_CONFIG_PATH
) -> DeviceConfig:
    """Read the settings file.

    Args:
        path: the file given with --config; it must exist. None means `default`, which may be
            absent (then every setting comes from the command line).
        default: the file read when no path is given.

    Raises:
        ConfigError: the file is missing (when given), unreadable, not TOML, or has a bad value.
    """
    p = Path(path) if path is not None else default
    try:
        text = p.read_text()
    except FileNotFoundError as exc:
        if path is None:
            return DeviceConfig()
        raise ConfigError(f"config file {str(p)!r} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc
    config = config_from_dict(data, p)
    log.info("settings read from %s", p)
    return config


def add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        help=f"settings file (TOML); default {DEFAULT_CONFIG_PATH} when it exists. "
        "Flags override it",
    )


def apply_device_config(
    args: argparse.Namespace, default: Path = DEFAULT_CONFIG_PATH
) -> DeviceConfig:
    """Fill every `join` option the command line left unset from the settings file.

    Returns the config, so a caller can reach settings `join` has no option for yet.

    Raises:
        ConfigError: the file is bad, or neither the command line nor the file names the edge.
    """
    config = load_device_config(getattr(args, "config", None), default)
    where = args.config or default

    if args.edge is None:
        if config.edge is None:
            raise ConfigError(
                f"no edge address: give EDGE_HOST on the command line or set edge = "
                f'"HOST[:PORT]" in {where}'
            )
        args.edge = config.edge
    if getattr(args, "board_id", None) is None and config.board_id is not None:
        args.board_id = config.board_id
    for name in ("data", "report", "out"):
        value = getattr(config, name)
        if getattr(args, name) is None and value is not None:
            setattr(args, name, str(value))
    if args.test_fraction is None:
        args.test_fraction = config.test_fraction
    if args.threads is None and config.threads is not None:
        args.threads = config.threads
        from hiertrain_edge.cli.common import set_threads

        set_threads(config.threads)
    if getattr(args, "insecure", None) is False and config.insecure:
        args.insecure = True

    # Key files: passed on when `join` has the matching option, otherwise kept and reported.
    unused = []
    for name, dest in KEY_DESTS.items():
        value = getattr(config.keys, name)
        if value is None:
            continue
        if hasattr(args, dest):
            if getattr(args, dest) is None:
                setattr(args, dest, str(value))
        else:
            unused.append(f"keys.{name}")
    if unused:
        log.warning(
            "%s in %s: this version of join has no key options, so the link is not "
            "encrypted by them",
            ", ".join(unused),
            where,
        )
    return config
