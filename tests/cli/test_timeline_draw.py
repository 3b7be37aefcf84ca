"""`hiertrain-edge timeline`: a report with a schedule switch and a lost tier, drawn, checked."""

from __future__ import annotations

import json
import random

import matplotlib.image
import numpy as np
from matplotlib.colors import to_rgb

from hiertrain_edge.cli.main import main
from hiertrain_edge.cli.timeline import (
    LOST_COLOR,
    OTHER_EVENT_COLOR,
    RETURNED_COLOR,
    SWITCH_COLOR,
    draw_timeline,
)

SWITCH_STEP = 20
LOST_STEP, RETURNED_STEP, ROLLBACK_STEP = 32, 36, 40


def _report() -> dict:
    rng = random.Random(0)
    iterations = []
    for step in range(50):
        fast = step >= SWITCH_STEP
        iterations.append(
            {
                "step": step,
                "schedule_id": "bbbbbbbbbbbb" if fast else "aaaaaaaaaaaa",
                "loss": 2.3 * 0.97**step,
                "measured_s": (0.2 if fast else 0.5) * rng.uniform(0.9, 1.1),
                "predicted_s": 0.2 if fast else 0.5,
                "bw_de_mbps": 100.0 if fast else 10.0,
                "bw_ec_mbps": None if LOST_STEP <= step < RETURNED_STEP else 50.0,
            }
        )
    return {
        "schedule": {"groups": [{"n": 64, "cuts": [2, 4]}]},
        "iterations": iterations,
        "schedule_changes": [
            {
                "step": SWITCH_STEP,
                "from": "aaaaaaaaaaaa",
                "to": "bbbbbbbbbbbb",
                "bw_de_mbps": 100.0,
                "bw_ec_mbps": 50.0,
                "predicted_gain_s": 0.3,
            }
        ],
        "events": [
            {"step": LOST_STEP, "event": "lost", "tier": "cloud", "reason": "silent for 10 s"},
            {"step": RETURNED_STEP, "event": "returned", "tier": "cloud"},
            {"step": ROLLBACK_STEP, "event": "rollback", "reason": "board rejoined"},
        ],
    }


def test_timeline_marks_switches_and_events_on_every_panel():
    fig = draw_timeline(_report())
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["Mbit/s", "schedule", "step time (s)", "loss"]
    for ax in axes:
        marks = {
            line.get_gid(): (list(line.get_xdata()), line.get_color()) for line in ax.get_lines()
        }
        assert marks["schedule_switch"] == ([SWITCH_STEP, SWITCH_STEP], SWITCH_COLOR)
        assert marks["event:lost"] == ([LOST_STEP, LOST_STEP], LOST_COLOR)
        assert marks["event:returned"] == ([RETURNED_STEP, RETURNED_STEP], RETURNED_COLOR)
        assert marks["event:rollback"] == ([ROLLBACK_STEP, ROLLBACK_STEP], OTHER_EVENT_COLOR)
    sched = next(line for line in axes[1].get_lines() if line.get_gid() == "schedule")
    assert list(sched.get_ydata()) == [0] * SWITCH_STEP + [1] * (50 - SWITCH_STEP)
    assert [t.get_text() for t in axes[1].get_yticklabels()] == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    assert axes[0].get_yscale() == "log"
    assert fig._suptitle.get_text() == "50 steps, 2 schedules, 1 switch, 1 lost tier"


def test_timeline_png_has_the_switch_line_at_its_step(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_report()))
    out = tmp_path / "timeline.png"
    assert main(["timeline", str(report), "--out", str(out)]) == 0

    # Where the switch's x falls in the picture: the same figure, laid out the same way.
    fig = draw_timeline(_report())
    fig.canvas.draw()
    ax = fig.get_axes()[3]
    x_px, _ = ax.transData.transform((SWITCH_STEP, 0))
    (x0, y0), (x1, y1) = ax.get_window_extent().get_points()
    img = matplotlib.image.imread(out)[:, :, :3]
    height = img.shape[0]
    rows = slice(int(height - y1) + 2, int(height - y0) - 2)  # image rows run top down

    def red_share(x: int) -> float:
        column = img[rows, x - 1 : x + 2].reshape(-1, 3)
        return float(np.mean(np.all(np.abs(column - to_rgb(SWITCH_COLOR)) < 0.1, axis=1)))

    assert img.shape[:2] == (900, 1000)
    assert red_share(round(x_px)) > 0.3  # the dashed line: dashes and gaps
    assert red_share(round((x0 + x_px) / 2)) == 0.0  # and no red elsewhere in the panel


def test_timeline_of_a_report_without_iterations_is_an_error(tmp_path, capsys):
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"iterations": []}))
    assert main(["timeline", str(report), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err == f"hiertrain-edge timeline: error: report {report} has no iterations to draw\n"
