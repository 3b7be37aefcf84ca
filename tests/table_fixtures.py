"""Small, fast inputs for schedule-table tests: a 6-unit model's facts, estimated tier
profiles and a solver that picks the best of a fixed candidate list."""

from __future__ import annotations

from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.planning.table import Grid, build_table, cost_evaluator
from hiertrain_edge.profiling import ModelFacts, load_profile

# small_cnn's real facts (model_facts(get_model("small_cnn"))), written out to skip torch.
SMALL_FACTS = ModelFacts(
    name="small_cnn",
    num_units=6,
    input_bytes=3136,
    out_bytes=(50176, 12544, 25088, 6272, 512, 40),
    param_bytes=(1664, 0, 51328, 0, 803328, 5160),
    buffer_bytes=(0, 0, 0, 0, 0, 0),
    flops=(627200, 0, 5017600, 0, 401408, 2560),
    saved_bytes=(53312, 75264, 37632, 37632, 6784, 512),
)
BATCH = 32
LATENCY_S = (0.002, 0.02)
CANDIDATES = [
    Schedule.parse(t)
    for t in (
        "32:6:6",  # device only
        "32:0:6",  # edge from raw input
        "32:0:0",  # cloud from raw input
        "32:2:6",  # device [0,2), edge the rest
        "16:6:6,16:0:6",  # half local, half edge
        "8:6:6,12:0:6,12:0:0",  # all three tiers
        "16:2:4,16:6:6",  # device -> edge -> cloud chain and a local group
    )
]


# A modest edge and a stronger "cloud": four schedules win somewhere on the grid.
PROFILE_NAMES = {"device": "rpi4", "edge": "rpi5", "cloud": "x86_edge"}


def profiles():
    return {tier: load_profile(name) for tier, name in PROFILE_NAMES.items()}


def candidate_solver(profs, calls=None):
    """Best of CANDIDATES by the cost model at one bandwidth pair, like a tiny planner."""
    import numpy as np

    evaluate = cost_evaluator(SMALL_FACTS, profs, LATENCY_S)

    def solve(bw_de, bw_ec):
        if calls is not None:
            calls.append((bw_de, bw_ec))
        times = [float(evaluate(s, np.array([bw_de]), np.array([bw_ec]))[0]) for s in CANDIDATES]
        best = min(range(len(times)), key=lambda k: times[k])
        return [CANDIDATES[best]] if np.isfinite(times[best]) else []

    return solve


def small_table(grid: Grid | None = None, **kw):
    profs = profiles()
    return build_table(
        SMALL_FACTS,
        profs,
        BATCH,
        latency_s=LATENCY_S,
        grid=grid or Grid(),
        solve=kw.pop("solve", None) or candidate_solver(profs),
        **kw,
    )
