"""The device role: the board that holds the data joins an edge, runs its slices of every
group, and at the end evaluates the trained model on its held-out samples."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import zmq

from hiertrain_edge.datasets import Dataset
from hiertrain_edge.errors import ConfigError
from hiertrain_edge.models import build_model
from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.runtime.batches import BatchOrder
from hiertrain_edge.runtime.checkpoint import save_model
from hiertrain_edge.runtime.job import job_from_dict
from hiertrain_edge.runtime.logstep import set_step
from hiertrain_edge.runtime.mailbox import Mailbox
from hiertrain_edge.runtime.reference import evaluate
from hiertrain_edge.runtime.report import Report, StepRecord
from hiertrain_edge.runtime.slices import TierSlice
from hiertrain_edge.wire.schema import JobBounds
from hiertrain_edge.wire.security import Security
from hiertrain_edge.wire.transport import Link

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 120.0
PROGRESS_EVERY_STEPS = 25  # plain progress lines when not on a terminal


class Progress:
    """A tqdm bar on a terminal; a plain line every few steps for a service's journal."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="step", dynamic_ncols=True)

    def update(self, step: int, loss: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.bar.update(1)
        elif (step + 1) % PROGRESS_EVERY_STEPS == 0 or step + 1 == self.total:
            log.info("step %d/%d loss %.4f (%.1f steps/s)", step + 1, self.total, loss, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# Picks the schedule for a step from the step index and the current schedule; None keeps it.
Chooser = Callable[[int, Schedule], "Schedule | None"]


class Board:
    """One board's training run against an edge."""

    def __init__(
        self,
        edge: str,
        train: Dataset,
        test: Dataset,
        out_dir: str | Path | None = None,
        board_id: str | None = None,
        security: Security | None = None,
        chooser: Chooser | None = None,
    ) -> None:
        self.chooser = chooser
        self.ctx = zmq.Context.instance()
        self.link = Link(self.ctx, edge, security=security)
        self.edge = Mailbox(self.link, name=f"the edge at {edge}")
        self.train, self.test = train, test
        self.out_dir = Path(out_dir) if out_dir else None
        self.board_id = board_id or uuid.uuid4().hex[:8]
        self.last_step: dict[str, float] = {}  # the previous step's loss and time, for the edge

    def run(self) -> Report:
        started = time.perf_counter()
        try:
            report = self._run()
        finally:
            self.link.close()
        report.wall_s = time.perf_counter() - started
        return report

    def _run(self) -> Report:
        n_classes = int(self.train.y.max()) + 1
        self.edge.send(
            {
                "type": "join",
                "board_id": self.board_id,
                "n_train": len(self.train),
                "sample_shape": list(self.train.sample_shape),
                "num_classes": n_classes,
            }
        )
        log.info(
            "board %s joining %s with %d training samples",
            self.board_id,
            self.edge.name,
            len(self.train),
        )
        offer = self.edge.expect("job", None, JOIN_TIMEOUT_S)
        job = job_from_dict(offer["job"], "job from the edge")
        spec = job.spec()
        if tuple(self.train.sample_shape) != spec.input_shape:
            raise ConfigError(
                f"data samples have shape {self.train.sample_shape}, model {spec.name} takes "
                f"{spec.input_shape}"
            )
        schedule = Schedule.from_dict(offer["schedule"]).validate(spec.num_units, job.batch_size)
        steps = int(offer["steps"])
        self.link.bounds = JobBounds(spec, schedule, job.batch_size, steps, "device", job.seed)
        tier = TierSlice("device", spec, job, schedule)
        tier.load_unit_state(offer["units"])
        log.info(
            "job %s: model %s, %d steps, schedule %s; this board runs units %s",
            offer["job_id"],
            spec.name,
            steps,
            schedule.describe(),
            sorted(tier.runs),
        )

        report = Report(schedule=schedule.to_dict())
        order = BatchOrder(len(self.train), job.batch_size, job.seed)
        progress = Progress(steps)
        t_run = time.perf_counter()
        try:
            for step in range(steps):
                set_step(step)
                t0 = time.perf_counter()
                new = self.chooser(step, tier.schedule) if self.chooser else None
                header = {"type": "step", "step": step, **self.last_step}
                if new is not None and new != tier.schedule:
                    old = tier.schedule
                    self.edge.send({**header, "schedule": new.to_dict()})
                    self._switch(step, tier, new, job.step_timeout_s)
                    report.schedule_changes.append(
                        {
                            "step": step,
                            "from": old.schedule_id(),
                            "to": new.schedule_id(),
                            "from_schedule": old.to_dict(),
                            "to_schedule": new.to_dict(),
                            "bw_de_mbps": None,
                            "bw_ec_mbps": None,
                            "predicted_gain_s": None,
                        }
                    )
                    log.warning(
                        "step %d: switched schedule %s -> %s", step, old.describe(), new.describe()
                    )
                else:
                    self.edge.send(header)
                loss = self._step(step, tier, order, job.batch_size, job.step_timeout_s)
                measured = time.perf_counter() - t0
                self.last_step = {"prev_loss": loss, "prev_measured_s": measured}
                report.iterations.append(
                    StepRecord(step, tier.schedule.schedule_id(), loss, measured)
                )
                progress.update(step, loss, (step + 1) / (time.perf_counter() - t_run))
        finally:
            progress.close()

        # Gather the trained model from every owner, then test it here.
        self.edge.send(
            {
                "type": "finish",
                "step": steps,
                **self.last_step,
                "units": tier.unit_state(tier.owns),
                "replicas": tier.unit_state(tier.replicated),
            }
        )
        final = self.edge.expect("model", steps, job.step_timeout_s)
        model = build_model(spec, job.seed)
        model.load_state_dict({k: v.clone() for k, v in final["state"].items()})
        if self.out_dir is not None:
            save_model(
                self.out_dir / "model.pt",
                offer["job"],
                model.state_dict(),
                {
                    **final["meta"],
                    "mean": self.train.mean,
                    "std": self.train.std,
                    "class_names": self.train.class_names,
                },
            )
        if len(self.test):
            report.test_accuracy, report.test_loss = evaluate(model, self.test)
        return report

    def _switch(self, step: int, tier: TierSlice, new: Schedule, timeout: float) -> None:
        """Move to `new` before `step`: hand the units we stop owning to the edge, take
        the units we start owning (weights and optimizer state) and new replicas."""
        n = tier.num_units
        leaving = sorted(u for u in tier.owns if new.owner(u, n) != "device")
        if leaving:
            self.edge.send(
                {
                    "type": "moving",
                    "step": step,
                    "units": tier.unit_state(leaving),
                    "opt": tier.optimizer_state(leaving),
                }
            )
        arriving = self.edge.expect("units", step, timeout)
        tier.reconfigure(new, arriving["units"], arriving["opt"])
        if self.link.bounds is not None:
            self.link.bounds = self.link.bounds.with_schedule(new)

    def _step(
        self,
        step: int,
        tier: TierSlice,
        order: BatchOrder,
        batch_size: int,
        timeout: float,
    ) -> float:
        schedule = tier.schedule
        n = tier.num_units
        idx = order.indices(step)
        x, y = self.train.x[idx], self.train.y[idx]
        offsets = schedule.offsets()

        def part(gid: int) -> tuple[torch.Tensor, torch.Tensor]:
            at, size = offsets[gid], schedule.groups[gid].n
            return x[at : at + size], y[at : at + size]

        tier.begin_step()

        # 1. Offloaded groups first, so the edge and cloud start while we work.
        offloaded = schedule.dispatch_order(n)
        for gid in offloaded:
            xg, yg = part(gid)
            h = tier.forward(gid, 0, schedule.groups[gid].c1, xg)
            self.edge.send({"type": "fwd", "step": step, "gid": gid, "x": h, "y": yg})

        # 2. Groups trained end to end on the board.
        loss = 0.0
        for gid in schedule.local_groups(n):
            xg, yg = part(gid)
            loss += tier.forward_loss(0, n, xg, yg, batch_size)[0]

        # 3. Gradients w.r.t. our activations come back; finish the backward pass.
        for gid in offloaded:
            bwd: dict[str, Any] = self.edge.expect("bwd", step, timeout, gid)
            if schedule.groups[gid].c1 > 0:
                tier.backward(gid, bwd["grad"])
            loss += float(bwd["loss"])

        # 4. Replicated units: the edge sums and steps them; we step the ones we own.
        if tier.replicated:
            self.edge.send({"type": "grads", "step": step, "units": tier.replica_grads()})
        tier.step_optimizer()
        if tier.replicated:
            tier.load_unit_state(self.edge.expect("weights", step, timeout)["units"])
        return loss
