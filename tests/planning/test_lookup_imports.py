"""The board's lookup path never imports the solver, the cost model, the profiler or torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from table_fixtures import small_table

BOARD_SCRIPT = textwrap.dedent(
    """
    import sys
    from hiertrain_edge.planning.lookup import Selector
    from hiertrain_edge.planning.table import ScheduleTable

    table = ScheduleTable.load(sys.argv[1])
    d = Selector(table).observe(100.0, 1.0, step=0)
    assert d.schedule_index == 1, d
    banned = ("hiertrain_edge.planning.planner", "hiertrain_edge.planning.cost",
              "hiertrain_edge.profiling", "numpy", "torch")
    print(sorted(m for m in sys.modules if m.startswith(banned)))
    """
)


def test_loading_and_selecting_imports_no_solver(tmp_path):
    path = small_table().save(tmp_path / "t.htab")
    out = subprocess.run(
        [sys.executable, "-c", BOARD_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"
