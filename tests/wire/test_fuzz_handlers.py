"""Hostile input against live secured tiers: a listed board that also sends junk, replays
and out-of-range ids. Every bad message is dropped with a logged reason, the tiers keep
running, and the trained weights equal a clean single-process run."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import torch

from hiertrain_edge.runtime.checkpoint import load_model_file
from hiertrain_edge.runtime.device import Board
from hiertrain_edge.runtime.job import load_job
from hiertrain_edge.runtime.reference import train_reference
from hiertrain_edge.wire.codec import encode
from hiertrain_edge.wire.security import Security, load_public_key

FLOOD_MESSAGES = 300
REL_TOL = 1e-5


def _tensor_ext(index: int, dtype: str, shape: list[int]) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb([index, dtype, shape, "<"]))


def _frames(header: dict[str, Any], *buffers: bytes) -> list[bytes]:
    return [msgpack.packb({"v": 1, **header}, use_bin_type=True), *buffers]


class HostileBoard(Board):
    """A listed board that sends a batch of hostile messages before each step's work."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rng = random.Random(5)
        self.sent_hostile = 0
        self.previous_fwd: list[dict[str, Any]] = []
        self.current_fwd: list[dict[str, Any]] = []
        self.step_now = -1
        real_send = self.edge.send

        def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "fwd" and msg["step"] != self.step_now:
                self.step_now = msg["step"]
                self.previous_fwd, self.current_fwd = self.current_fwd, []
                self._hostile(msg["step"])
            if msg["type"] == "fwd":
                self.current_fwd.append(msg)
            real_send(msg)

        self.edge.send = send  # type: ignore[method-assign]

    def _raw(self, frames: list[bytes]) -> None:
        self.link.sock.send_multipart(frames)
        self.sent_hostile += 1

    def flood(self) -> None:
        for _ in range(FLOOD_MESSAGES):
            self._raw([self.rng.randbytes(self.rng.randrange(1, 200))])

    def _hostile(self, step: int) -> None:
        x = torch.zeros(4, 16, 14, 14)
        y = torch.zeros(4, dtype=torch.int64)
        bad = [
            {"type": "fwd", "step": step, "gid": 1, "x": x.double(), "y": y},  # wrong dtype
            {"type": "fwd", "step": step, "gid": 7, "x": x, "y": y},  # no such group
            {"type": "fwd", "step": step, "gid": 1, "x": x, "y": y + 99},  # labels out of range
            {"type": "fwd", "step": step, "gid": 1, "x": x[:, :, :3], "y": y},  # wrong shape
            {"type": "step", "step": 10**9},  # far beyond the job
            {"type": "exec", "cmd": "rm -rf /"},  # not a message type
            # The messages of a board that trained alone, with lies in them.
            {"type": "handover", "step": step, "attempt": 1, "units": {"9": {}}, "opt": {}},
            {"type": "handover", "step": step, "attempt": 1, "units": {}, "opt": {"0": 5}},
            {"type": "mirror", "step": step, "units": {"2": {"0.weight": y}}, "opt": {}},
            {"type": "handover_request", "attempt": -1},
        ]
        for msg in bad:
            self._raw([bytes(memoryview(f)) for f in encode(msg)])
        fwd = {"type": "fwd", "step": step, "gid": 1}
        self._raw(_frames({**fwd, "x": _tensor_ext(1, "float32", [4, 16, 14, 14])}, bytes(10)))
        self._raw(_frames({**fwd, "x": _tensor_ext(1, "float32", [2**62, 2**62])}, bytes(16)))
        self._raw(_frames({**fwd, "x": _tensor_ext(1, "pickle", [1])}, bytes(4)))
        self._raw([self.rng.randbytes(64), self.rng.randbytes(8)])
        for old in self.previous_fwd:  # replayed, valid, one step late: dropped as late
            self._raw([bytes(memoryview(f)) for f in encode(old)])


def test_fuzz_live_tiers_survive_hostile_board(
    wait_for_line, secured, mnist, short_join, tmp_path
):
    keys = secured["keys"]
    train = mnist.subset(0, 48)
    board = HostileBoard(
        secured["edge"],
        train,
        train.subset(0, 0),
        tmp_path,
        board_id="hostile",
        security=Security.from_files(keys_dir=keys["board"]),
    )
    board.flood()  # before the join: the edge is idle and must drop them all
    report = board.run()

    # Training finished, over CurveZMQ on both links.
    assert [r.step for r in report.iterations] == [0, 1]
    edge_key = load_public_key(keys["edge"] / "edge.key").decode()
    wait_for_line(secured["cloud_log"], f"with public key {edge_key}")
    wait_for_line(secured["edge_log"], "finished after 2 steps")
    print(f"\nlive hostile messages sent to the edge: {board.sent_hostile}")

    # Every kind of bad message was dropped with a reason, none crashed the edge.
    log = secured["edge_log"].read_text()
    for reason in [
        "fwd.x: expected float32[4, 16, 14, 14], got float64[4, 16, 14, 14]",
        "fwd.gid: expected an integer in 0..2, got 7",
        "fwd.y: labels must be in 0..9, got 99..99",
        "fwd.x: expected float32[4, 16, 14, 14], got float32[4, 16, 3, 14]",
        "step message for step 1000000000; this job has steps 0..2",
        "message type 'exec' is not part of the protocol",
        "tensor float32[4, 16, 14, 14] needs 50176 bytes, frame 1 has 10",
        "tensor shape [4611686018427387904, 4611686018427387904] is too large",
        "dtype 'pickle' is not allowed",
        "handover.units: unit 9 out of range 0..5",
        "handover.opt.0: expected a list of per-parameter state maps, got 5",
        "mirror.units.2: expected tensors ['0.bias', '0.weight'], got ['0.weight']",
        "handover_request.attempt: expected an integer in 0..1099511627775, got -1",
        # a replay without the job's generation is stale before it is late
        "dropped stale fwd of generation None from board hostile",
    ]:
        assert reason in log, reason
    assert "Traceback" not in log

    # The junk changed nothing: the weights equal a clean single-process run.
    job = load_job(secured["job"])
    reference = train_reference(job, train, 2).state_dict()
    hybrid = load_model_file(tmp_path / "model.pt")["state"]
    for key, want in reference.items():
        err = float((hybrid[key] - want).norm() / want.norm().clamp_min(1e-12))
        assert err <= REL_TOL, f"{key}: relative error {err:.2e}"
