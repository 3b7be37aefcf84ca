"""Property-based and mutation fuzzing of the decoder and the schema of every message type:
every case is either accepted as a valid message or rejected with a ProtocolError."""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

import msgpack
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hiertrain_edge.errors import ProtocolError
from hiertrain_edge.models import build_model, get_model
from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.wire import schema
from hiertrain_edge.wire.codec import DTYPES, decode, encode
from hiertrain_edge.wire.schema import JobBounds, check

BATCH, STEPS, SEED = 12, 10, 1
SCHEDULE = Schedule.parse("4:6:6,4:2:6,4:2:4")  # device only; device->edge; three tiers
MAX_BYTES = 1 << 20  # a small limit, so "too large" is reachable by the fuzzer
MUTANTS_PER_MESSAGE = 250
HANG_S = 5.0  # one case taking this long counts as a hang


@pytest.fixture(scope="module")
def world():
    spec = get_model("small_cnn", 10, None)
    bounds = {
        t: JobBounds(spec, SCHEDULE, BATCH, STEPS, t, SEED) for t in ("device", "edge", "cloud")
    }
    model = build_model(spec, SEED)
    units = {str(i): dict(m.state_dict()) for i, m in enumerate(model)}
    return spec, bounds, model, units


def _act(bounds: JobBounds, gid: int, cut: int) -> torch.Tensor:
    return torch.randn((SCHEDULE.groups[gid].n, *bounds.acts[cut].shape))


def valid_messages(world) -> list[tuple[str, dict[str, Any]]]:
    """One valid message of every type, with the tier that receives it."""
    spec, bounds, model, units = world
    n = spec.num_units
    b = bounds["edge"]
    dev_rep = SCHEDULE.replicated("device", n)
    cloud_rep = SCHEDULE.replicated("cloud", n)
    labels = torch.tensor([1, 0, 9, 3])
    grads = {
        str(u): {
            "grads": [torch.zeros_like(p) for p in model[u].parameters()],
            "buffers": dict(model[u].named_buffers()),
            "samples": 8,
        }
        for u in dev_rep
    }
    job = {"model": "small_cnn", "batch_size": BATCH, "steps": STEPS, "seed": SEED}
    return [
        ("edge", {"type": "join", "board_id": "b1", "n_train": 48, "sample_shape": [1, 28, 28],
                  "num_classes": 10}),
        ("edge", {"type": "join", "board_id": "b1", "n_train": 48, "sample_shape": [1, 28, 28],
                  "num_classes": 10, "session": "s1", "attempt": 4, "alone_step": 7}),
        ("device", {"type": "mirror", "step": 4, "units": {"2": units["2"], "5": units["5"]},
                    "opt": {"5": [{"momentum_buffer": torch.zeros_like(p)}
                                  for p in model[5].parameters()]}}),
        ("device", {"type": "handover_request", "attempt": 4}),
        ("edge", {"type": "handover", "step": 7, "attempt": 4, "units": units,
                  "opt": {k: [{} for _ in model[int(k)].parameters()] for k in units}}),
        ("device", {"type": "job", "job_id": "j1", "job": job, "schedule": SCHEDULE.to_dict(),
                    "steps": STEPS, "units": {k: units[k] for k in map(str, dev_rep)}}),
        ("cloud", {"type": "setup", "job_id": "j1", "job": job, "schedule": SCHEDULE.to_dict(),
                   "units": {k: units[k] for k in map(str, cloud_rep)}}),
        ("edge", {"type": "ready", "step": 0}),
        ("edge", {"type": "step", "step": 3, "prev_loss": 2.3, "prev_measured_s": 0.1}),
        ("edge", {"type": "fwd", "step": 3, "gid": 1, "x": _act(b, 1, 2), "y": labels}),
        ("cloud", {"type": "fwd", "step": 3, "gid": 2, "x": _act(b, 2, 4), "y": labels}),
        ("device", {"type": "bwd", "step": 3, "gid": 1, "grad": _act(b, 1, 2), "loss": 0.5}),
        ("edge", {"type": "bwd", "step": 3, "gid": 2, "grad": _act(b, 2, 4), "loss": 0.25}),
        ("edge", {"type": "grads", "step": 3, "units": grads}),
        ("device", {"type": "weights", "step": 3,
                    "units": {k: units[k] for k in map(str, dev_rep)}}),
        ("edge", {"type": "finish", "step": STEPS, "units": {"0": units["0"]},
                  "replicas": {k: units[k] for k in map(str, dev_rep)}}),
        ("edge", {"type": "state", "step": STEPS, "units": {},
                  "replicas": {k: units[k] for k in map(str, cloud_rep)}}),
        ("device", {"type": "model", "step": STEPS, "state": dict(model.state_dict()),
                    "meta": {"job_id": "j1", "steps": STEPS, "replicas_identical": True}}),
        ("device", {"type": "abort", "reason": "the edge stopped"}),
        ("edge", {"type": "status"}),
        ("edge", {"type": "error", "reason": "unknown request"}),
    ]  # fmt: skip


class Tally:
    """Counts cases; fails on anything but acceptance or a ProtocolError, or a hang."""

    def __init__(self) -> None:
        self.cases = self.accepted = self.rejected = 0
        self.crashes: list[str] = []

    def run(self, frames: list[Any], bounds: JobBounds | None, label: str) -> None:
        self.cases += 1
        t0 = time.perf_counter()
        try:
            check(decode(frames, MAX_BYTES), bounds)
            self.accepted += 1
        except ProtocolError as exc:
            assert str(exc), "a ProtocolError must say what was wrong"
            self.rejected += 1
        except Exception as exc:  # noqa: BLE001 -- the fuzzer's whole point
            self.crashes.append(f"{label}: {type(exc).__name__}: {exc}")
        took = time.perf_counter() - t0
        if took > HANG_S:
            self.crashes.append(f"{label}: took {took:.1f} s")


def test_fuzz_valid_messages_pass_for_their_tier(world):
    for tier, msg in valid_messages(world):
        out = check(decode(encode(msg)), world[1][tier])
        assert out["type"] == msg["type"]


# --- mutations of valid messages ---------------------------------------------------------


def _raw_header(frames: list[Any]) -> Any:
    return msgpack.unpackb(frames[0], raw=False, ext_hook=lambda c, d: msgpack.ExtType(c, d))


def _pack(header: Any) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def _wild_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            None, True, -1, 0, 1, 2, 3, 7, STEPS, STEPS + 1, 2**31, 2**40, 2**63 - 1, -(2**63),
            1.5, float("nan"), float("inf"), "", "x" * 5000, "fwd", b"\x00\xff", [], [1, 2],
            [-1], {}, {"a": 1}, {"0": {}}, {"99": {}}, [[[[[[[[1]]]]]]]],
        ]
    )  # fmt: skip


def _paths(obj: Any, at: tuple = ()) -> list[tuple]:
    out = [at]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*at, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*at, i))
    return out


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    obj[path[0]] = _set(obj[path[0]], path[1:], value)
    return obj


def _mutate_descriptor(rng: random.Random, data: bytes, frames: int) -> bytes:
    index, name, shape, order = msgpack.unpackb(data)
    choice = rng.randrange(8)
    if choice == 0:
        name = rng.choice(["float128", "object", "complex64", "", "int64", "bool", "uint8"])
    elif choice == 1:  # a lying shape: one dimension off
        if shape:
            shape[rng.randrange(len(shape))] += rng.choice([-1, 1, 7])
        else:
            shape = [2]
    elif choice == 2:  # a huge declared size
        shape = [2**62, 2**62] if rng.random() < 0.5 else [0, 2**63 - 1]
    elif choice == 3:
        shape = [1] * rng.choice([9, 64, 1000])
    elif choice == 4:
        index = rng.choice([0, -1, frames, frames + 5, "1", None])
    elif choice == 5:
        order = rng.choice(["|", "", "<<", None])
    elif choice == 6:
        shape = rng.choice([[-4], [True], ["3"], None, 5])
    else:
        return rng.randbytes(len(data))
    return msgpack.packb([index, name, shape, order])


def _mutate(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    frames = list(frames)
    kind = rng.randrange(10)
    if kind == 0:  # truncate a frame
        i = rng.randrange(len(frames))
        frames[i] = frames[i][: rng.randrange(len(frames[i]) + 1)]
    elif kind == 1:  # drop or add a frame
        if len(frames) > 1 and rng.random() < 0.5:
            del frames[rng.randrange(1, len(frames))]
        else:
            frames.insert(rng.randrange(1, len(frames) + 1), rng.randbytes(rng.randrange(64)))
    elif kind == 2:  # flip bytes in the header
        h = bytearray(frames[0])
        for _ in range(rng.randint(1, 4)):
            h[rng.randrange(len(h))] ^= 1 << rng.randrange(8)
        frames[0] = bytes(h)
    elif kind == 3:  # random bytes everywhere
        frames = [rng.randbytes(rng.randrange(256)) for _ in range(rng.randint(1, 4))]
    elif kind == 4:  # an oversized frame
        frames.append(bytes(MAX_BYTES))
    else:  # rewrite a field or a tensor descriptor in the header
        header = _raw_header(frames)
        paths = [p for p in _paths(header) if p]
        path = rng.choice(paths)
        target = header
        for k in path:
            target = target[k]
        if isinstance(target, msgpack.ExtType) and rng.random() < 0.8:
            header = _set(
                header,
                path,
                msgpack.ExtType(target.code, _mutate_descriptor(rng, target.data, len(frames))),
            )
        elif rng.random() < 0.15 and isinstance(header, dict):
            header.pop(path[0], None)  # a missing field
        elif rng.random() < 0.1 and isinstance(header, dict):
            header[rng.choice(["extra", "gid", "step", "x", "units"])] = _wild_value(rng)
        else:
            header = _set(header, path, _wild_value(rng))
        frames[0] = _pack(header)
    return frames


def test_fuzz_mutated_messages_only_raise_protocol_errors(world, capsys):
    rng = random.Random(20261203)
    tally = Tally()
    for tier, msg in valid_messages(world):
        base = [bytes(memoryview(f)) for f in encode(msg)]
        for i in range(MUTANTS_PER_MESSAGE):
            frames = _mutate(rng, base)
            tally.run(frames, world[1][tier], f"{msg['type']} mutant {i}")
            tally.run(frames, None, f"{msg['type']} mutant {i} without bounds")
    with capsys.disabled():
        print(
            f"\nmutation fuzzing: {tally.cases} cases, {tally.accepted} accepted, "
            f"{tally.rejected} rejected with ProtocolError, {len(tally.crashes)} crashes"
        )
    assert tally.crashes == []
    assert tally.rejected > tally.cases // 2


# --- wrong values in otherwise valid messages, one per rule -----------------------------


def _with(world, kind: str, tier: str, **changes: Any) -> tuple[dict[str, Any], JobBounds]:
    msg = next(dict(m) for t, m in valid_messages(world) if m["type"] == kind and t == tier)
    msg.update(changes)
    return msg, world[1][tier]


@pytest.mark.parametrize(
    ("kind", "tier", "changes", "error"),
    [
        ("step", "edge", {"step": STEPS + 1},
         "step message for step 11; this job has steps 0..10"),
        ("step", "edge", {"step": -1},
         "step.step: expected an integer in 0..1099511627775, got -1"),
        ("fwd", "edge", {"gid": 3}, "fwd.gid: expected an integer in 0..2, got 3"),
        ("fwd", "edge", {"gid": 0}, "fwd for group 0: that group never leaves the device"),
        ("fwd", "edge", {"x": torch.zeros(4, 16, 14, 14, dtype=torch.float64)},
         "fwd.x: expected float32[4, 16, 14, 14], got float64[4, 16, 14, 14]"),
        ("fwd", "edge", {"x": torch.zeros(4, 16, 14, 15)},
         "fwd.x: expected float32[4, 16, 14, 14], got float32[4, 16, 14, 15]"),
        ("fwd", "edge", {"y": torch.tensor([0, 1, 2, 10])},
         "fwd.y: labels must be in 0..9, got 0..10"),
        ("fwd", "edge", {"y": torch.tensor([0.0, 1.0, 2.0, 3.0])},
         "fwd.y: expected a tensor of dtype int64, got torch.float32"),
        ("bwd", "device", {"grad": None}, "bwd for group 1 has no grad; the cut is at unit 2"),
        ("bwd", "device", {"loss": "low"}, "bwd.loss: expected a number, got 'low'"),
        ("grads", "edge", {"units": {"2": {"grads": [], "buffers": {}, "samples": 1}}},
         "grads.units.2.grads: expected 2 tensors, got 0"),
        ("weights", "device", {"units": {"9": {}}}, "weights.units: unit 9 out of range 0..5"),
        ("weights", "device", {"units": {"2": {"0.weight": torch.zeros(3)}}},
         "weights.units.2: expected tensors ['0.bias', '0.weight'], got ['0.weight']"),
        ("abort", "device", {"reason": 7}, "abort.reason: expected a string of at most 4096 "
         "characters, got 7"),
        ("join", "edge", {"sample_shape": [1, -28]},
         "join.sample_shape[1]: expected an integer in 1..2147483647, got -28"),
        ("mirror", "device", {"units": {"9": {}}}, "mirror.units: unit 9 out of range 0..5"),
        ("handover", "edge", {"units": {"2": {"0.weight": torch.zeros(3)}}},
         "handover.units.2: expected tensors ['0.bias', '0.weight'], got ['0.weight']"),
        ("handover", "edge", {"step": STEPS + 1},
         "handover message for step 11; this job has steps 0..10"),
        ("handover_request", "device", {"attempt": -1},
         "handover_request.attempt: expected an integer in 0..1099511627775, got -1"),
        ("ready", "edge", {"pickle": b"cos\nsystem\n"},
         "ready message has an unknown field 'pickle'; expected only bw_ec_mbps, gap_s, gen, "
         "job_id, rx_mbps, step"),
    ],
)  # fmt: skip
def test_schema_rejects_with_a_clear_error(world, kind, tier, changes, error):
    msg, bounds = _with(world, kind, tier, **changes)
    with pytest.raises(ProtocolError) as err:
        check(decode(encode(msg)), bounds)
    assert str(err.value) == error


def test_schema_rejects_unknown_type_and_missing_field():
    with pytest.raises(ProtocolError) as err:
        check({"v": 1, "type": "exec"})
    assert str(err.value).startswith("message type 'exec' is not part of the protocol; expected")
    with pytest.raises(ProtocolError) as err:
        check({"v": 1, "type": "fwd", "step": 1, "gid": 0})
    assert str(err.value) == "fwd message lacks the field(s) x, y"


def test_schema_every_runtime_type_is_declared():
    assert set(schema.MESSAGES) >= {
        "join", "job", "setup", "ready", "step", "fwd", "bwd", "grads", "weights", "finish",
        "state", "model", "abort",
    }  # fmt: skip


# --- property-based ----------------------------------------------------------------------

_FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_counts = {"random_frames": 0, "random_headers": 0, "random_tensors": 0}


@_FUZZ
@given(st.lists(st.binary(max_size=512), min_size=0, max_size=5))
def test_fuzz_random_frames(frames):
    _counts["random_frames"] += 1
    with contextlib.suppress(ProtocolError):
        check(decode(frames, MAX_BYTES))


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True), st.text(max_size=20), st.binary(max_size=20),
)  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@_FUZZ
@given(
    st.sampled_from(sorted(schema.MESSAGES) + ["exec", ""]),
    st.dictionaries(
        st.sampled_from(["step", "gid", "x", "y", "grad", "loss", "units", "state", "meta",
                         "job", "schedule", "reason", "board_id", "n_train", "replicas", "zz"]),
        _values,
        max_size=6,
    ),
    st.sampled_from([1, 1, 1, 0, 2, None]),
)  # fmt: skip
def test_fuzz_random_headers(kind, fields, version):
    _counts["random_headers"] += 1
    header = _pack({"v": version, "type": kind, **fields})
    with contextlib.suppress(ProtocolError):
        check(decode([header], MAX_BYTES))


@_FUZZ
@given(
    st.sampled_from([*DTYPES, "float128", "object", ""]),
    st.lists(st.integers(min_value=-3, max_value=2**64 - 1), max_size=10)
    | st.lists(st.integers(min_value=0, max_value=6), max_size=5),
    st.integers(min_value=0, max_value=300),
    st.sampled_from(["<", ">", "="]),
)
def test_fuzz_random_tensor_descriptors(dtype, shape, nbytes, order):
    _counts["random_tensors"] += 1
    ext = msgpack.ExtType(1, msgpack.packb([1, dtype, shape, order]))
    header = _pack({"v": 1, "type": "fwd", "step": 0, "gid": 1, "x": ext, "y": ext})
    try:
        msg = decode([header, bytes(nbytes)], MAX_BYTES)
    except ProtocolError:
        return
    x = msg["x"]
    assert x.numel() * x.element_size() == nbytes  # an accepted tensor never lies


def test_fuzz_property_counts(capsys):
    with capsys.disabled():
        print(f"\nproperty-based fuzzing cases: {_counts}")
    assert all(v > 0 for v in _counts.values()) or sum(_counts.values()) == 0
