"""The message schema: every field of every message type, checked before the runtime sees it.

`check(msg)` validates what any tier can know without a job: the type, the fields
and their types, integer ranges, tensor dtypes from an allow-list and bounded ranks.
`JobBounds` adds what a tier knows once a job is set: the step range, the groups of
the schedule, the exact shape and dtype of every activation, gradient and weight, and
the label range. A message that fails either check raises `ProtocolError` naming the
field and what was expected; the transport drops it with a logged reason.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hiertrain_edge.errors import ProtocolError
from hiertrain_edge.models import ModelSpec, build_units
from hiertrain_edge.planning.schedule import MAX_GROUPS, TIERS, Schedule

MAX_STEP = 2**40 - 1  # far beyond any job; keeps ids in a signed 64-bit range
MAX_UNITS = 4096
MAX_NDIM = 8
MAX_DIM = 2**31 - 1
MAX_TEXT_CHARS = 4096
MAX_ID_CHARS = 64
MAX_PLAIN_ITEMS = 4096  # entries in a job, schedule or meta map, in total
MAX_PLAIN_DEPTH = 6
MAX_STATE_TENSORS = 65536
FLOAT_DTYPES = frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16})
LABEL_DTYPES = frozenset({torch.int64})

Check = Callable[[Any, str], None]


def _fail(where: str, expected: str, value: Any) -> None:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise ProtocolError(f"{where}: expected {expected}, got {shown}")


# --- field checks ---------------------------------------------------------------------


def integer(lo: int, hi: int) -> Check:
    def check(v: Any, where: str) -> None:
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            _fail(where, f"an integer in {lo}..{hi}", v)

    return check


def number() -> Check:
    def check(v: Any, where: str) -> None:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            _fail(where, "a number", v)

    return check


def flag() -> Check:
    def check(v: Any, where: str) -> None:
        if not isinstance(v, bool):
            _fail(where, "true or false", v)

    return check


def text(max_chars: int) -> Check:
    def check(v: Any, where: str) -> None:
        if not isinstance(v, str) or len(v) > max_chars:
            _fail(where, f"a string of at most {max_chars} characters", v)

    return check


def tensor(
    dtypes: frozenset[torch.dtype] | None = None, ndim: tuple[int, int] = (0, MAX_NDIM)
) -> Check:
    def check(v: Any, where: str) -> None:
        if not isinstance(v, torch.Tensor):
            _fail(where, "a tensor", type(v).__name__)
        if dtypes is not None and v.dtype not in dtypes:
            names = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
            _fail(where, f"a tensor of dtype {names}", v.dtype)
        if not ndim[0] <= v.dim() <= ndim[1]:
            _fail(where, f"a tensor of rank {ndim[0]}..{ndim[1]}", list(v.shape))

    return check


def optional(inner: Check) -> Check:
    def check(v: Any, where: str) -> None:
        if v is not None:
            inner(v, where)

    return check


def int_list(max_len: int, lo: int, hi: int) -> Check:
    item = integer(lo, hi)

    def check(v: Any, where: str) -> None:
        if not isinstance(v, list) or len(v) > max_len:
            _fail(where, f"a list of at most {max_len} integers", v)
        for i, x in enumerate(v):
            item(x, f"{where}[{i}]")

    return check


def plain() -> Check:
    """JSON-like data (job, schedule, meta): no tensors, bounded size and depth."""

    def check(v: Any, where: str) -> None:
        budget = [MAX_PLAIN_ITEMS]

        def walk(x: Any, at: str, depth: int) -> None:
            budget[0] -= 1
            if budget[0] < 0:
                _fail(where, f"at most {MAX_PLAIN_ITEMS} entries", "more")
            if depth > MAX_PLAIN_DEPTH:
                _fail(at, f"nesting of at most {MAX_PLAIN_DEPTH} levels", "deeper")
            if x is None or isinstance(x, (bool, int, float)):
                return
            if isinstance(x, str):
                if len(x) > MAX_TEXT_CHARS:
                    _fail(at, f"a string of at most {MAX_TEXT_CHARS} characters", x)
                return
            if isinstance(x, list):
                for i, item in enumerate(x):
                    walk(item, f"{at}[{i}]", depth + 1)
                return
            if isinstance(x, dict):
                for k, item in x.items():
                    if not isinstance(k, str) or len(k) > MAX_ID_CHARS:
                        _fail(at, "string keys of at most 64 characters", k)
                    walk(item, f"{at}.{k}", depth + 1)
                return
            _fail(at, "plain data (numbers, strings, lists, maps)", type(x).__name__)

        if not isinstance(v, dict):
            _fail(where, "a map", v)
        walk(v, where, 0)

    return check


def _unit_key(k: Any, where: str) -> int:
    if not isinstance(k, str) or not k.isdigit() or len(k) > 5 or int(k) >= MAX_UNITS:
        _fail(where, f"a unit index as a decimal string below {MAX_UNITS}", k)
    return int(k)


def _tensor_map(v: Any, where: str, max_items: int = MAX_STATE_TENSORS) -> None:
    any_tensor = tensor()
    if not isinstance(v, dict) or len(v) > max_items:
        _fail(where, f"a map of at most {max_items} named tensors", type(v).__name__)
    for name, t in v.items():
        if not isinstance(name, str) or not 0 < len(name) <= 256:
            _fail(where, "tensor names as strings of 1..256 characters", name)
        any_tensor(t, f"{where}.{name}")


def unit_tensors() -> Check:
    """str(unit index) -> {name: tensor}: weights and buffers of some units."""

    def check(v: Any, where: str) -> None:
        if not isinstance(v, dict) or len(v) > MAX_UNITS:
            _fail(where, f"a map of at most {MAX_UNITS} units", type(v).__name__)
        for k, tensors in v.items():
            _unit_key(k, where)
            _tensor_map(tensors, f"{where}.{k}")

    return check


def unit_grads() -> Check:
    """str(unit index) -> {"grads": [tensor], "buffers": {name: tensor}, "samples": int}."""
    samples = integer(0, MAX_DIM)
    any_tensor = tensor()

    def check(v: Any, where: str) -> None:
        if not isinstance(v, dict) or len(v) > MAX_UNITS:
            _fail(where, f"a map of at most {MAX_UNITS} units", type(v).__name__)
        for k, part in v.items():
            _unit_key(k, where)
            at = f"{where}.{k}"
            if not isinstance(part, dict) or set(part) != {"grads", "buffers", "samples"}:
                _fail(at, "a map with exactly grads, buffers and samples", part)
            grads = part["grads"]
            if not isinstance(grads, list) or len(grads) > MAX_STATE_TENSORS:
                _fail(f"{at}.grads", "a list of tensors", type(grads).__name__)
            for i, g in enumerate(grads):
                any_tensor(g, f"{at}.grads[{i}]")
            _tensor_map(part["buffers"], f"{at}.buffers")
            samples(part["samples"], f"{at}.samples")

    return check


def unit_opt_state() -> Check:
    """str(unit index) -> [{state name: tensor} per parameter]: optimizer state that moves
    with a unit to its new owner."""

    def check(v: Any, where: str) -> None:
        if not isinstance(v, dict) or len(v) > MAX_UNITS:
            _fail(where, f"a map of at most {MAX_UNITS} units", type(v).__name__)
        for k, per_param in v.items():
            _unit_key(k, where)
            if not isinstance(per_param, list) or len(per_param) > MAX_STATE_TENSORS:
                _fail(f"{where}.{k}", "a list of per-parameter state maps", per_param)
            for i, state in enumerate(per_param):
                _tensor_map(state, f"{where}.{k}[{i}]", max_items=8)

    return check


def state_dict() -> Check:
    def check(v: Any, where: str) -> None:
        _tensor_map(v, where)

    return check


# --- the message types ------------------------------------------------------------------

STEP = integer(0, MAX_STEP)
GID = integer(0, MAX_GROUPS - 1)

# type -> {field: (required, check)}; `v` and `type` are checked by the codec.
MESSAGES: dict[str, dict[str, tuple[bool, Check]]] = {
    "join": {
        "board_id": (True, text(MAX_ID_CHARS)),
        "n_train": (True, integer(0, MAX_DIM)),
        "sample_shape": (True, int_list(MAX_NDIM, 1, MAX_DIM)),
        "num_classes": (True, integer(1, MAX_DIM)),
        "session": (False, text(MAX_ID_CHARS)),  # one board process's run
        "attempt": (False, integer(0, MAX_STEP)),  # the join's number within that run
        "alone_step": (False, STEP),  # the board trained alone and is before this step
    },
    "job": {
        "job_id": (True, text(MAX_ID_CHARS)),
        "job": (True, plain()),
        "schedule": (True, plain()),
        "steps": (True, integer(1, MAX_STEP)),
        "units": (True, unit_tensors()),
        "start_step": (False, STEP),
        "plan": (False, flag()),  # the board profiles itself, then gets a schedule table
        "opt": (False, unit_opt_state()),
        "attempt": (False, integer(0, MAX_STEP)),
        "cloud_ok": (False, flag()),  # false: the edge lost the cloud and probes it
        "preferred": (False, plain()),  # the schedule to take when the cloud answers again
    },
    "setup": {
        "job_id": (True, text(MAX_ID_CHARS)),
        "job": (True, plain()),
        "schedule": (True, plain()),
        "units": (True, unit_tensors()),
        "opt": (False, unit_opt_state()),
        "step": (False, STEP),
    },
    # A schedule switch: units leaving a tier go to the edge, then out to their new tiers.
    "moving": {
        "step": (True, STEP),
        "units": (True, unit_tensors()),
        "opt": (True, unit_opt_state()),
    },
    "units": {
        "step": (True, STEP),
        "units": (True, unit_tensors()),
        "opt": (True, unit_opt_state()),
    },
    "ready": {"step": (True, STEP)},
    # Owners' units before a checkpoint step, to the edge; the edge's answer to a lost tier.
    "snapshot": {
        "step": (True, STEP),
        "units": (True, unit_tensors()),
        "opt": (True, unit_opt_state()),
    },
    # At each checkpoint the edge mirrors to the board the units it does not own, so the
    # board can train alone from there when it loses the edge (runtime/device.py).
    "mirror": {
        "step": (True, STEP),
        "units": (True, unit_tensors()),
        "opt": (True, unit_opt_state()),
    },
    # A board that trained alone rejoins: the edge asks for its state, the board hands over
    # every unit (weights and optimizer state) at the step it reached.
    "handover_request": {"attempt": (True, integer(0, MAX_STEP))},
    "handover": {
        "step": (True, STEP),
        "attempt": (True, integer(0, MAX_STEP)),
        "units": (True, unit_tensors()),
        "opt": (True, unit_opt_state()),
    },
    "rollback": {
        "step": (True, STEP),
        "schedule": (True, plain()),
        "units": (True, unit_tensors()),
        "opt": (True, unit_opt_state()),
        "cloud_ok": (True, flag()),
    },
    "tiers": {
        "step": (True, STEP),
        "cloud_ok": (True, flag()),
        "bw_ec_mbps": (False, optional(number())),
    },
    # Planning at job start: profiles, link probes, and the schedule table for the board.
    "profile_request": {"step": (True, STEP), "job": (True, plain())},
    "profile": {
        "step": (True, STEP),
        "profile": (True, plain()),
        "bw_de_mbps": (False, optional(number())),
        "latency_s": (False, optional(number())),
    },
    "probe": {"step": (True, STEP), "payload": (True, tensor())},
    "probe_ack": {"step": (True, STEP)},
    "table": {
        "step": (True, STEP),
        "table": (True, tensor()),
        "profiles": (True, plain()),
        "cloud_ok": (True, flag()),
        "bw_ec_mbps": (False, optional(number())),
    },
    "ping": {"step": (False, STEP)},
    "done": {"step": (True, STEP)},  # the board has the final model
    "pong": {"step": (False, STEP)},
    "step": {
        "step": (True, STEP),
        "schedule": (False, plain()),  # present when the step starts a new schedule
        "bw_de_mbps": (False, number()),  # the board's link estimate, for the edge's status
        "predicted_s": (False, number()),
        "prev_loss": (False, number()),  # the board's previous step, for the edge's status
        "prev_measured_s": (False, number()),
    },
    "fwd": {
        "step": (True, STEP),
        "gid": (True, GID),
        "x": (True, tensor(FLOAT_DTYPES, (1, MAX_NDIM))),
        "y": (True, tensor(LABEL_DTYPES, (1, 1))),
    },
    "bwd": {
        "step": (True, STEP),
        "gid": (True, GID),
        "grad": (True, optional(tensor(FLOAT_DTYPES, (1, MAX_NDIM)))),
        "loss": (True, number()),
    },
    "grads": {"step": (True, STEP), "units": (True, unit_grads())},
    "weights": {"step": (True, STEP), "units": (True, unit_tensors())},
    "finish": {
        "step": (True, STEP),
        "units": (False, unit_tensors()),
        "replicas": (False, unit_tensors()),
        "prev_loss": (False, number()),
        "prev_measured_s": (False, number()),
    },
    "state": {
        "step": (True, STEP),
        "units": (True, unit_tensors()),
        "replicas": (False, unit_tensors()),
    },
    "model": {"step": (True, STEP), "state": (True, state_dict()), "meta": (True, plain())},
    "abort": {"reason": (True, text(MAX_TEXT_CHARS))},
    # The edge's status port (runtime/status.py): a request, its answer, or an error.
    "status": {"status": (False, plain())},
    "error": {"reason": (True, text(MAX_TEXT_CHARS))},
}
# Every message may name its job, so a tier can drop one meant for another job.
COMMON_FIELDS: dict[str, tuple[bool, Check]] = {
    "job_id": (False, text(MAX_ID_CHARS)),
    "gen": (False, integer(0, 2**31 - 1)),  # the job's generation (runtime/mailbox.py)
    # Link measuring (runtime/mailbox.py, runtime/bandwidth.py): the sender's seconds since
    # its previous message to this peer; its estimate of the peer's direction to it; and
    # the edge's estimate of its link to the cloud, on its messages to the board.
    "gap_s": (False, number()),
    "rx_mbps": (False, number()),
    "bw_ec_mbps": (False, optional(number())),
}


def register(kind: str, fields: dict[str, tuple[bool, Check]]) -> None:
    """Declare a message type (or replace one); its fields as name -> (required, check)."""
    MESSAGES[kind] = fields


def check(msg: dict[str, Any], bounds: JobBounds | None = None) -> dict[str, Any]:
    """Validate a decoded message; with `bounds`, also against the current job.

    Raises:
        ProtocolError: the message does not fit its type's schema or the job.
    """
    kind = msg.get("type")
    fields = MESSAGES.get(kind)  # type: ignore[arg-type]
    if fields is None:
        raise ProtocolError(
            f"message type {kind!r} is not part of the protocol; expected one of "
            f"{', '.join(sorted(MESSAGES))}"
        )
    for name, value in msg.items():
        if name in ("v", "type"):
            continue
        spec = fields.get(name) or COMMON_FIELDS.get(name)
        if spec is None:
            allowed = ", ".join(sorted({*fields, *COMMON_FIELDS}))
            raise ProtocolError(
                f"{kind} message has an unknown field {name!r}; expected only {allowed}"
            )
        spec[1](value, f"{kind}.{name}")
    missing = [name for name, (required, _) in fields.items() if required and name not in msg]
    if missing:
        raise ProtocolError(f"{kind} message lacks the field(s) {', '.join(missing)}")
    if bounds is not None:
        bounds.check(msg)
    return msg


# --- what a tier knows once the job is set --------------------------------------------------


@dataclass(frozen=True)
class _TensorSpec:
    dtype: torch.dtype
    shape: tuple[int, ...]


def _match(t: torch.Tensor, spec: _TensorSpec, where: str) -> None:
    if t.dtype != spec.dtype or tuple(t.shape) != spec.shape:
        raise ProtocolError(
            f"{where}: expected {str(spec.dtype).removeprefix('torch.')}{list(spec.shape)}, "
            f"got {str(t.dtype).removeprefix('torch.')}{list(t.shape)}"
        )


class JobBounds:
    """The exact messages one tier may receive during one job.

    Args:
        spec: the job's model.
        schedule: the job's schedule, validated.
        batch_size: samples per step.
        steps: the job's number of steps; step ids run 0..steps (finish carries steps);
            None where the tier does not know it (the cloud).
        tier: the receiving tier, which decides the cut an activation or gradient is at.
        seed: the job's seed (weights do not matter here, only shapes).
    """

    def __init__(
        self,
        spec: ModelSpec,
        schedule: Schedule,
        batch_size: int,
        steps: int | None,
        tier: str,
        seed: int = 0,
    ) -> None:
        if tier not in TIERS:
            raise ProtocolError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
        self.schedule, self.tier, self.steps = schedule, tier, steps
        self.batch_size, self.num_classes = batch_size, spec.num_classes
        self.num_units = spec.num_units

        # One sample through every unit gives the activation after each cut; the
        # units' state dicts give every weight, buffer and gradient shape.
        units = build_units(spec, range(spec.num_units), seed)
        x = torch.zeros((1, *spec.input_shape))
        self.acts = [_TensorSpec(x.dtype, tuple(x.shape[1:]))]  # acts[c]: input of unit c
        self.state: list[dict[str, _TensorSpec]] = []
        self.params: list[list[_TensorSpec]] = []
        with torch.no_grad():
            for i in range(spec.num_units):
                unit = units[i].eval()
                x = unit(x)
                self.acts.append(_TensorSpec(x.dtype, tuple(x.shape[1:])))
                self.state.append(
                    {k: _TensorSpec(v.dtype, tuple(v.shape)) for k, v in unit.state_dict().items()}
                )
                self.params.append(
                    [_TensorSpec(p.dtype, tuple(p.shape)) for p in unit.parameters()]
                )
        self.named_buffers = [
            {k: _TensorSpec(b.dtype, tuple(b.shape)) for k, b in units[i].named_buffers()}
            for i in range(spec.num_units)
        ]

    def with_schedule(self, schedule: Schedule) -> JobBounds:
        """The same bounds after a schedule switch (shapes do not change, groups do)."""
        other = copy.copy(self)
        other.schedule = schedule
        return other

    # --- the checks -------------------------------------------------------------------

    def check(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if "step" in msg and self.steps is not None and msg["step"] > self.steps:
            raise ProtocolError(
                f"{kind} message for step {msg['step']}; this job has steps 0..{self.steps}"
            )
        if "gid" in msg and msg["gid"] >= len(self.schedule.groups):
            raise ProtocolError(
                f"{kind} message for group {msg['gid']}; the schedule has groups "
                f"0..{len(self.schedule.groups) - 1}"
            )
        if kind == "fwd":
            self._check_fwd(msg)
        elif kind == "bwd":
            self._check_bwd(msg)
        elif kind == "grads":
            self._check_grads(msg["units"])
        elif kind == "model":
            self._check_model(msg["state"])
        for name in ("units", "replicas"):
            if name in msg and kind in (
                "job",
                "setup",
                "weights",
                "finish",
                "state",
                "moving",
                "units",
                "snapshot",
                "rollback",
                "mirror",
                "handover",
            ):
                self._check_units(msg[name], f"{kind}.{name}")

    def _group_act(self, gid: int, cut: int) -> _TensorSpec:
        act = self.acts[cut]
        return _TensorSpec(act.dtype, (self.schedule.groups[gid].n, *act.shape))

    def _check_fwd(self, msg: dict[str, Any]) -> None:
        gid, n = msg["gid"], self.num_units
        g = self.schedule.groups[gid]
        if g.loss_tier(n) == "device" or self.tier == "device":
            raise ProtocolError(f"fwd for group {gid}: that group never leaves the device")
        cut = g.c1 if self.tier == "edge" else g.c2
        _match(msg["x"], self._group_act(gid, cut), "fwd.x")
        y = msg["y"]
        _match(y, _TensorSpec(torch.int64, (g.n,)), "fwd.y")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ProtocolError(
                f"fwd.y: labels must be in 0..{self.num_classes - 1}, got "
                f"{int(y.min())}..{int(y.max())}"
            )

    def _check_bwd(self, msg: dict[str, Any]) -> None:
        gid = msg["gid"]
        g = self.schedule.groups[gid]
        if self.tier == "cloud":
            raise ProtocolError("bwd messages never go to the cloud")
        cut = g.c1 if self.tier == "device" else g.c2
        grad = msg["grad"]
        if grad is None:
            if cut != 0:
                raise ProtocolError(f"bwd for group {gid} has no grad; the cut is at unit {cut}")
            return
        _match(grad, self._group_act(gid, cut), "bwd.grad")

    def _unit(self, key: str, where: str) -> int:
        u = int(key)
        if u >= self.num_units:
            raise ProtocolError(f"{where}: unit {u} out of range 0..{self.num_units - 1}")
        return u

    def _check_units(self, units: dict[str, Any], where: str) -> None:
        for key, tensors in units.items():
            u = self._unit(key, where)
            expected = self.state[u]
            if set(tensors) != set(expected):
                raise ProtocolError(
                    f"{where}.{key}: expected tensors {sorted(expected)}, got {sorted(tensors)}"
                )
            for name, t in tensors.items():
                _match(t, expected[name], f"{where}.{key}.{name}")

    def _check_grads(self, units: dict[str, Any]) -> None:
        for key, part in units.items():
            u = self._unit(key, "grads.units")
            at = f"grads.units.{key}"
            params = self.params[u]
            if len(part["grads"]) != len(params):
                raise ProtocolError(
                    f"{at}.grads: expected {len(params)} tensors, got {len(part['grads'])}"
                )
            for i, (g, spec) in enumerate(zip(part["grads"], params, strict=True)):
                _match(g, spec, f"{at}.grads[{i}]")
            bufs = self.named_buffers[u]
            if set(part["buffers"]) != set(bufs):
                raise ProtocolError(
                    f"{at}.buffers: expected {sorted(bufs)}, got {sorted(part['buffers'])}"
                )
            for name, b in part["buffers"].items():
                _match(b, bufs[name], f"{at}.buffers.{name}")
            if part["samples"] > self.batch_size:
                raise ProtocolError(
                    f"{at}.samples: expected at most the batch size {self.batch_size}, "
                    f"got {part['samples']}"
                )

    def _check_model(self, state: dict[str, Any]) -> None:
        expected = {
            f"{u}.{name}": spec
            for u in range(self.num_units)
            for name, spec in self.state[u].items()
        }
        if set(state) != set(expected):
            extra = sorted(set(state) - set(expected))[:3]
            missing = sorted(set(expected) - set(state))[:3]
            raise ProtocolError(
                f"model.state does not match the model: unexpected {extra}, missing {missing}"
            )
        for name, t in state.items():
            _match(t, expected[name], f"model.state.{name}")
