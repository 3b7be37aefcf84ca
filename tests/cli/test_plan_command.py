"""`hiertrain-edge plan` prints the plan as JSON or a table, and rejects bad input."""

from __future__ import annotations

import json

from hiertrain_edge.cli.main import main


def test_plan_command_json(capsys, tmp_path):
    gantt = tmp_path / "step.png"
    rc = main(
        [
            "plan", "--model", "small_cnn", "--batch-size", "8", "--device", "rpi4",
            "--edge", "x86_edge", "--cloud", "gpu_cloud", "--bw-de", "20", "--bw-ec", "50",
            "--json", "--gantt", str(gantt),
        ]
    )  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"schedule", "predicted_s", "baselines", "lower_bound_s", "gap", "solve_ms"}
    assert set(out["baselines"]) == {"device_only", "edge_only", "cloud_only", "best_two_tier"}
    assert sum(g["n"] for g in out["schedule"]["groups"]) == 8
    assert out["lower_bound_s"] <= out["predicted_s"] <= min(out["baselines"].values())
    assert gantt.stat().st_size > 1000


def test_plan_command_table(capsys):
    rc = main(
        [
            "plan", "--batch-size", "4", "--device", "rpi5", "--edge", "jetson_orin_nano",
            "--cloud", "gpu_cloud", "--bw-de", "0", "--bw-ec", "10",
        ]
    )  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "edge_only        infeasible" in out
    assert "gap 0.00%" in out


def test_plan_command_unknown_profile(capsys):
    rc = main(
        [
            "plan", "--device", "nope", "--edge", "x86_edge", "--cloud", "gpu_cloud",
            "--bw-de", "1", "--bw-ec", "1",
        ]
    )  # fmt: skip
    assert rc == 2
    assert "no profile file or hw_profiles name 'nope'" in capsys.readouterr().err
