"""`hiertrain-edge timeline REPORT.json --out FILE.png`: a run's report drawn over the steps.

Four panels share the step axis: the two bandwidths, the schedule in use, the measured
and predicted step time, and the loss. Every panel marks each schedule switch with a
dashed red line and each lost-tier event with a dotted black line (a returned tier with a
dotted green one).

Report fields read (hiertrain_edge.runtime.report): `iterations[]` (step, schedule_id,
loss, measured_s, predicted_s, bw_de_mbps, bw_ec_mbps), `schedule_changes[]` (step, from,
to, bw_de_mbps, bw_ec_mbps, predicted_gain_s) and `events[]`, each at least
{"step": int, "event": str}, with "tier" and "reason" where they apply: an event whose name
holds "lost" is drawn black, one holding "return" or "rejoin" green, any other (a rollback)
grey. `kind` is read where `event` is missing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hiertrain_edge.errors import ConfigError

SWITCH_COLOR = "#d62728"  # red: schedule switches
LOST_COLOR = "#000000"  # black: a tier was lost
RETURNED_COLOR = "#2ca02c"  # green: a tier came back
OTHER_EVENT_COLOR = "#7f7f7f"
FIGURE_SIZE_IN = (10.0, 9.0)
FIGURE_DPI = 100


def load_report(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        report = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"report {str(p)!r} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"report {p} is not JSON: {exc}") from exc
    if not isinstance(report, dict) or not isinstance(report.get("iterations"), list):
        raise ConfigError(f"report {p} has no 'iterations' list; expected a run report")
    if not report["iterations"]:
        raise ConfigError(f"report {p} has no iterations to draw")
    return report


def _series(iterations: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key`; a missing value is NaN, a gap in the line (a lost link).
    Both lists are empty when no step has a value."""
    if all(r.get(key) is None for r in iterations):
        return [], []
    nan = float("nan")
    values = [nan if r.get(key) is None else float(r[key]) for r in iterations]
    return [int(r["step"]) for r in iterations], values


def _event_name(ev: dict[str, Any]) -> str:
    return str(ev.get("event", ev.get("kind", "event")))


def _event_color(name: str) -> str:
    if "lost" in name:
        return LOST_COLOR
    if "return" in name or "rejoin" in name:
        return RETURNED_COLOR
    return OTHER_EVENT_COLOR


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('h') else 's'}"


def draw_timeline(report: dict[str, Any]) -> Any:
    """The timeline as a matplotlib Figure (not yet saved)."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
    except ImportError as exc:
        raise ConfigError(
            "timeline needs matplotlib; install it with pip install 'hiertrain-edge[plots]'"
        ) from exc

    its = sorted(report["iterations"], key=lambda r: int(r["step"]))
    fig = Figure(figsize=FIGURE_SIZE_IN, dpi=FIGURE_DPI)
    ax_bw, ax_sched, ax_time, ax_loss = fig.subplots(4, 1, sharex=True)

    # 1. Bandwidths, on a log axis: links change by ten times in the field.
    drawn = False
    for key, label in (("bw_de_mbps", "device<->edge"), ("bw_ec_mbps", "edge<->cloud")):
        xs, ys = _series(its, key)
        if xs:
            ax_bw.plot(xs, ys, label=label, gid=f"bandwidth:{key}")
            drawn = True
    if drawn:
        ax_bw.set_yscale("log")
        ax_bw.legend(loc="upper right", fontsize="small")
    else:
        ax_bw.text(0.5, 0.5, "no bandwidth measured", ha="center", transform=ax_bw.transAxes)
    ax_bw.set_ylabel("Mbit/s")

    # 2. The schedule: one level per distinct id, in order of first use.
    ids: list[str] = []
    for r in its:
        if r.get("schedule_id") not in ids:
            ids.append(r.get("schedule_id"))
    ax_sched.step(
        [int(r["step"]) for r in its],
        [ids.index(r.get("schedule_id")) for r in its],
        where="post",
        gid="schedule",
    )
    ax_sched.set_yticks(range(len(ids)))
    ax_sched.set_yticklabels([str(i)[:12] for i in ids], fontsize="small")
    ax_sched.set_ylim(-0.5, len(ids) - 0.5)
    ax_sched.set_ylabel("schedule")

    # 3. Step time, measured by the board and predicted by the planner.
    for key, label, style in (("measured_s", "measured", "-"), ("predicted_s", "predicted", "--")):
        xs, ys = _series(its, key)
        if xs:
            ax_time.plot(xs, ys, style, label=label, gid=f"time:{key}")
    ax_time.set_ylabel("step time (s)")
    ax_time.legend(loc="upper right", fontsize="small")

    # 4. Loss.
    xs, ys = _series(its, "loss")
    ax_loss.plot(xs, ys, gid="loss")
    ax_loss.set_ylabel("loss")
    ax_loss.set_xlabel("step")

    # Markers on every panel: switches, then lost and returned tiers.
    axes = (ax_bw, ax_sched, ax_time, ax_loss)
    for change in report.get("schedule_changes") or []:
        for ax in axes:
            ax.axvline(
                int(change["step"]), color=SWITCH_COLOR, ls="--", lw=1.5, gid="schedule_switch"
            )
        gain = change.get("predicted_gain_s")
        note = f"-> {str(change.get('to', ''))[:8]}" + (
            f" ({gain * 1000:.0f} ms)" if isinstance(gain, (int, float)) else ""
        )
        ax_bw.annotate(
            note,
            (int(change["step"]), 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            fontsize="x-small",
            color=SWITCH_COLOR,
            rotation=90,
            va="top",
        )
    for ev in report.get("events") or []:
        name = _event_name(ev)
        color = _event_color(name)
        for ax in axes:
            ax.axvline(int(ev["step"]), color=color, ls=":", lw=1.5, gid=f"event:{name}")
        ax_loss.annotate(
            f"{ev.get('tier', '')} {name}".strip(),
            (int(ev["step"]), 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            fontsize="x-small",
            color=color,
            rotation=90,
            va="top",
        )

    switches = len(report.get("schedule_changes") or [])
    lost = sum(1 for ev in report.get("events") or [] if "lost" in _event_name(ev))
    title = ", ".join(
        (_plural(len(its), "step"), _plural(len(ids), "schedule"), _plural(switches, "switch"))
    )
    fig.suptitle(f"{title}, {_plural(lost, 'lost tier')}")
    fig.tight_layout()
    return fig


def cmd_timeline(args: argparse.Namespace) -> int:
    report = load_report(args.report)
    fig = draw_timeline(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"timeline of {len(report['iterations'])} steps written to {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("timeline", help="draw a run report over the steps (PNG)")
    p.add_argument("report", metavar="REPORT.json", help="a report from join/demo --report")
    p.add_argument("--out", required=True, metavar="FILE.png", help="picture to write")
    p.set_defaults(func=cmd_timeline, tier="timeline")
