"""Writing and reading model files atomically: a crash never leaves a half-written one."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from hiertrain_edge.errors import ConfigError

FORMAT = "hiertrain-edge/model/1"
CHECKPOINT_FORMAT = "hiertrain-edge/checkpoint/1"  # the edge's job snapshots


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(
    path: str | Path, job: dict[str, Any], state: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """The trained model with the job that made it (model name, classes, input shape)."""
    atomic_save({"format": FORMAT, "job": job, "state": state, "meta": meta}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read the edge's job checkpoint (see EdgeServer._take_snapshot); plain data only."""
    p = Path(path)
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        # torch's first sentence says what broke; the rest is advice for pickles we refuse
        why = (str(exc).strip().splitlines() or [""])[0].split(". ")[0]
        raise ConfigError(
            f"{p} is not a readable checkpoint (truncated, corrupted or not a torch file; "
            f"{type(exc).__name__}: {why})"
        ) from exc
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{p} is not a hiertrain-edge checkpoint")
    return blob


def load_model_file(path: str | Path) -> dict[str, Any]:
    """Read a model file; only tensors and plain data are accepted (no arbitrary pickles)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"model file {str(p)!r} is a folder; expected a file such as model.pt")
    if not p.is_file():
        raise ConfigError(f"model file {str(p)!r} does not exist")
    not_ours = f"{p} is not a hiertrain-edge model file (expected format {FORMAT})"
    try:
        with warnings.catch_warnings():
            # Its pickle-protocol notes are about foreign files, reported below in one line.
            warnings.simplefilter("ignore", UserWarning)
            blob = torch.load(p, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ConfigError(f"cannot read model file {p}: {exc.strerror or exc}") from exc
    except Exception as exc:
        # torch raises many kinds for a foreign file, with pages of advice on loading it
        # unsafely (weights_only=False); a model file never needs that, so say only what it is.
        raise ConfigError(not_ours) from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ConfigError(not_ours)
    return blob
