"""The board's code path never loads the solver: planner and cost model stay on the edge."""

from __future__ import annotations

import ast
import subprocess
import sys


def test_board_code_path_does_not_import_the_solver():
    code = (
        "import sys\n"
        "import hiertrain_edge.cli.train, hiertrain_edge.runtime.device\n"
        "import hiertrain_edge.profiling.measure\n"
        "print(sorted(m for m in sys.modules if m.startswith('hiertrain_edge.planning')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = ast.literal_eval(out.stdout)
    assert "hiertrain_edge.planning.lookup" in loaded
    assert "hiertrain_edge.planning.planner" not in loaded
    assert "hiertrain_edge.planning.cost" not in loaded
