"""A Gantt chart of one predicted step: a row per tier and per link direction."""

from __future__ import annotations

from pathlib import Path

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.planning.cost import LINKS, Event
from hiertrain_edge.planning.schedule import TIERS

ROWS = (*TIERS, *LINKS)
_COLORS = {"fwd": "#4c78a8", "bwd": "#f58518", "train": "#54a24b", "grads": "#b279a2"}


def _color(label: str) -> str:
    for key, color in _COLORS.items():
        if key in label:
            return color
    return "#9d9d9d"


def draw_gantt(events: list[Event], total_s: float, path: str | Path, title: str = "") -> Path:
    """Write a PNG of the predicted step's busy intervals (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError(
            "--gantt needs matplotlib; install it with pip install 'hiertrain-edge[plots]'"
        ) from exc
    fig, ax = plt.subplots(figsize=(11, 0.5 * len(ROWS) + 1.2))
    for y, row in enumerate(ROWS):
        spans = [
            (e.start_s * 1000, (e.end_s - e.start_s) * 1000) for e in events if e.resource == row
        ]
        colors = [_color(e.label) for e in events if e.resource == row]
        ax.broken_barh(spans, (y - 0.4, 0.8), facecolors=colors, edgecolor="black", linewidth=0.3)
    ax.set_yticks(range(len(ROWS)), ROWS)
    ax.invert_yaxis()
    ax.set_xlabel("time in the step (ms)")
    ax.set_xlim(0, total_s * 1000 * 1.02 if total_s > 0 else 1)
    ax.set_title(title or f"predicted step: {total_s * 1000:.1f} ms")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
