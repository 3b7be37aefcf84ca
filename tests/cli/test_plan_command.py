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


VGG_THIN = [
    "plan", "--model", "vgg11", "--batch-size", "16", "--device", "rpi4", "--edge",
    "x86_edge", "--cloud", "gpu_cloud", "--bw-de", "20", "--bw-ec", "5", "--json",
]  # fmt: skip


def test_plan_command_prices_the_snapshot_when_asked(capsys):
    # VGG-11's 78 MB of weights and momentum every 50 steps outweigh its activations at
    # 20 Mbit/s: the snapshot makes every offloading schedule slower, the board's mirror
    # most of all.
    times = {}
    for flags in ([], ["--checkpoint-every", "50"], ["--checkpoint-every", "50", "--no-mirror"]):
        assert main(VGG_THIN + flags) == 0
        times[" ".join(flags)] = json.loads(capsys.readouterr().out)["predicted_s"]
    plain, mirrored = times[""], times["--checkpoint-every 50"]
    assert mirrored > 3 * plain
    assert plain <= times["--checkpoint-every 50 --no-mirror"] < mirrored


def test_plan_command_says_whether_the_snapshot_is_priced(capsys):
    base = [a for a in VGG_THIN if a != "--json"]
    assert main(base) == 0
    assert "snapshot: not priced (--checkpoint-every to price it)" in capsys.readouterr().out
    assert main(base + ["--checkpoint-every", "50"]) == 0
    out = capsys.readouterr().out
    assert "snapshot: every 50 steps, with the board's mirror" in out
    assert "(without the snapshot)" in out  # the lower bound leaves it out


def test_plan_command_no_mirror_needs_a_checkpoint_interval(capsys):
    assert main(VGG_THIN + ["--no-mirror"]) == 2
    assert "--no-mirror needs --checkpoint-every STEPS (> 0)" in capsys.readouterr().err
    assert main(VGG_THIN + ["--checkpoint-every", "-1"]) == 2
    assert "--checkpoint-every must be >= 0 steps, got -1" in capsys.readouterr().err
