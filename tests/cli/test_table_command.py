"""`hiertrain-edge table build` and `table show` on a small grid: files, summary, map."""

from __future__ import annotations

import pytest

from hiertrain_edge.cli.main import main
from hiertrain_edge.planning.table import ScheduleTable

BUILD = [
    "table",
    "build",
    "--model",
    "small_cnn",
    "--batch-size",
    "8",
    "--device",
    "rpi4",
    "--edge",
    "rpi5",
    "--cloud",
    "x86_edge",
    "--latency-ec-ms",
    "20",
    "--min-mbps",
    "1",
    "--max-mbps",
    "10",
    "--refine-calls",
    "2",
]


def test_build_then_show_and_plot(tmp_path, capsys):
    out = tmp_path / "t.htab"
    assert main([*BUILD, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("built table for small_cnn at B=8: ")
    table = ScheduleTable.load(out)
    assert (table.model, table.batch_size, table.grid.size) == ("small_cnn", 8, 9)
    assert table.build["seed_calls"] == 2 * 2 + 2 + 1

    png = tmp_path / "map.png"
    assert main(["table", "show", str(out), "--plot", str(png)]) == 0
    shown = capsys.readouterr().out
    assert shown.splitlines()[0] == f"schedule table {table.content_hash[:12]} (format version 1)"
    assert f"{len(table.schedules)} distinct schedules:" in shown
    assert "edge unreachable: [" in shown
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_of_a_damaged_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.htab"
    bad.write_bytes(b"not a table")
    assert main(["table", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hiertrain-edge table: error: {bad} is not a ")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--points-per-decade", "4"], "a table needs >= 8 grid points per decade, got 4"),
        (["--min-mbps", "10"], "grid max 10.0 Mbit/s must exceed min 10.0 Mbit/s"),
    ],
)
def test_bad_flags_are_user_errors(tmp_path, capsys, extra, message):
    assert main([*BUILD, *extra, "--out", str(tmp_path / "t.htab")]) == 2  # last flag wins
    assert capsys.readouterr().err.strip() == f"hiertrain-edge table: error: {message}"


def test_a_table_built_with_the_snapshot_priced_says_so(tmp_path, capsys):
    out = tmp_path / "t.htab"
    assert main([*BUILD, "--checkpoint-every", "20", "--no-mirror", "--out", str(out)]) == 0
    capsys.readouterr()
    table = ScheduleTable.load(out)
    assert table.build["checkpoints"] == {"every": 20, "opt_copies": 1, "mirror": False}
    assert main(["table", "show", str(out)]) == 0
    assert "snapshot: every 20 steps, no mirror, 1 optimizer" in capsys.readouterr().out
