"""Shared inputs of the fast-evaluator and planner-gap tests: VGG-11's unit sizes written
out (no torch needed) and the real estimated profiles of a board, an edge PC and a GPU."""

from __future__ import annotations

from hiertrain_edge.profiling import ModelFacts

# VGG-11's sizes, as model_facts(get_model("vgg11")) gives them, written out to skip torch.
VGG11_FACTS = ModelFacts(
    name="vgg11",
    num_units=16,
    input_bytes=12288,
    out_bytes=(262144, 65536, 131072, 32768, 65536, 65536, 16384, 32768, 32768, 8192, 8192,
               8192, 2048, 2048, 2048, 40),
    param_bytes=(7168, 0, 295424, 0, 1180672, 2360320, 0, 4720640, 9439232, 0, 9439232,
                 9439232, 0, 1050624, 1050624, 20520),
    buffer_bytes=(0,) * 16,
    flops=(3538944, 0, 37748736, 0, 37748736, 75497472, 0, 37748736, 75497472, 0, 18874368,
           18874368, 0, 524288, 524288, 10240),
    saved_bytes=(274432, 393216, 196608, 196608, 98304, 131072, 98304, 49152, 65536, 49152,
                 16384, 16384, 12288, 4096, 4096, 2048),
)  # fmt: skip
REAL = {"device": "rpi4", "edge": "x86_edge", "cloud": "gpu_cloud"}


def real_profiles():
    from hiertrain_edge.profiling import load_profile

    return {t: load_profile(name) for t, name in REAL.items()}
