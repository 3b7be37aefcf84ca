"""The device role: the board that holds the data joins an edge, runs its slices of every
group, and at the end evaluates the trained model on its held-out samples."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import zmq

from hiertrain_edge.datasets import Dataset
from hiertrain_edge.errors import ConfigError, HierTrainError, PeerLostError
from hiertrain_edge.models import build_model
from hiertrain_edge.planning.schedule import Schedule, device_only
from hiertrain_edge.runtime.batches import BatchOrder
from hiertrain_edge.runtime.checkpoint import save_model
from hiertrain_edge.runtime.job import job_from_dict
from hiertrain_edge.runtime.logstep import set_step
from hiertrain_edge.runtime.mailbox import Interrupt, Mailbox
from hiertrain_edge.runtime.reference import evaluate
from hiertrain_edge.runtime.replan import (
    START_PROBES,
    Choice,
    LinkProbe,
    TableChooser,
    every_due,
    probe,
)
from hiertrain_edge.runtime.report import Report, StepRecord
from hiertrain_edge.runtime.slices import TierSlice, full_state
from hiertrain_edge.wire.schema import JobBounds
from hiertrain_edge.wire.security import Security
from hiertrain_edge.wire.transport import Deadline, Link

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 120.0
JOIN_RETRY_S = 15.0  # a join unanswered this long is sent again
TABLE_TIMEOUT_S = 600.0  # the edge profiles itself and builds the table meanwhile
PROGRESS_EVERY_STEPS = 25  # plain progress lines when not on a terminal
# Training alone without the edge: an unanswered join is dropped with its socket and sent
# anew this often (short, so a returning edge is found soon; one join queued at a time).
ALONE_JOIN_EVERY_S = 3.0
ALONE_IDLE_S = 0.2  # all steps done alone: how often to look for the edge meanwhile
HANDOVER_TIMEOUT_S = 60.0  # the edge sets up the cloud before it answers a handover


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
        self.edge_address, self.security = edge, security
        self.link = Link(self.ctx, edge, security=security)
        self.edge = Mailbox(self.link, name=f"the edge at {edge}")
        self.train, self.test = train, test
        self.out_dir = Path(out_dir) if out_dir else None
        self.board_id = board_id or socket.gethostname()
        self.session = uuid.uuid4().hex[:8]  # this process's run, told apart from restarts
        self.attempt = 0
        self.cloud_ok = True
        self.preferred: Schedule | None = None  # what a rollback without the cloud replaced
        self.table: TableChooser | None = None  # the edge's schedule table, when it plans
        self.bw_de = self.edge.meter  # our link to the edge: real transfers, probes when idle
        self.link_probe = LinkProbe()
        self.bw_ec_mbps: float | None = None  # the edge's link to the cloud, as it reports
        self.last_step: dict[str, float] = {}  # the previous step's loss and time, for the edge
        # Training without the edge (see _train_alone): the whole model at the last
        # checkpoint step (units None: the job's initial weights), our own units at a
        # checkpoint step until the edge's mirror of the others arrives, and the state of
        # the outage.
        self.job_id: str | None = None
        self.mirror: dict[str, Any] | None = None
        self.pending_own: dict[str, Any] | None = None
        self.alone = False
        self.before_alone: Schedule | None = None  # the schedule when the edge was lost
        self.asked_at: float | None = None  # when the join on the current socket went out

    def run(self) -> Report:
        started = time.perf_counter()
        try:
            report = self._run()
        finally:
            self.link.close()
        report.wall_s = time.perf_counter() - started
        return report

    def _join(self, patience_s: float) -> dict[str, Any]:
        """Ask the edge for the job until it answers or `patience_s` runs out.

        Every attempt is numbered and the edge echoes the number, so an offer answering
        an older attempt (queued while the edge was down) is told apart and dropped.
        """
        deadline = Deadline(patience_s)
        n_classes = int(self.train.y.max()) + 1
        while True:
            self.attempt += 1
            self.edge.clear()
            self.edge.generation = None
            self.edge.send(self._join_message(n_classes))
            wait = Deadline(min(JOIN_RETRY_S, max(0.1, deadline.left())))
            try:
                while True:
                    offer = self.edge.expect("job", None, wait.left())
                    if offer.get("attempt", self.attempt) == self.attempt:
                        self.edge.generation = offer.get("gen")
                        return offer
            except PeerLostError:
                if deadline.left() <= 0:
                    raise PeerLostError(
                        f"{self.edge.name} did not answer within {patience_s:g} s; check that "
                        "`hiertrain-edge serve` runs there and that this board can reach it"
                    ) from None

    def _join_message(self, n_classes: int, alone_step: int | None = None) -> dict[str, Any]:
        msg = {
            "type": "join",
            "board_id": self.board_id,
            "session": self.session,
            "attempt": self.attempt,
            "n_train": len(self.train),
            "sample_shape": list(self.train.sample_shape),
            "num_classes": n_classes,
        }
        if alone_step is not None:
            msg["alone_step"] = alone_step
        return msg

    def _take_offer(self, offer: dict[str, Any]) -> tuple[Any, TierSlice, int, int]:
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
        tier = TierSlice("device", spec, job, schedule, offer["units"], offer.get("opt", {}))
        start = int(offer.get("start_step", 0))
        if offer["job_id"] != self.job_id:  # a new job: no copy of the model yet
            self.job_id = offer["job_id"]
            self.mirror = {"step": 0, "units": None, "opt": None} if start == 0 else None
            self.pending_own = None
        log.info(
            "job %s: model %s, steps %d..%d, schedule %s; this board runs units %s",
            offer["job_id"],
            spec.name,
            start,
            steps - 1,
            schedule.describe(),
            sorted(tier.runs),
        )
        return job, tier, steps, start

    def _run(self) -> Report:
        log.info(
            "board %s joining %s with %d training samples",
            self.board_id,
            self.edge.name,
            len(self.train),
        )
        offer = self._join(JOIN_TIMEOUT_S)
        job, tier, steps, step = self._take_offer(offer)
        spec = tier.spec
        report = Report(schedule=tier.schedule.to_dict())
        self._cloud_news(offer, job, step, report)  # before the table's own cloud_ok
        if offer.get("plan"):
            self._get_table(spec, job, steps, tier.schedule)
        self.edge.interrupts = ("rollback",)
        order = BatchOrder(len(self.train), job.batch_size, job.seed)
        progress = Progress(steps)
        t_run = time.perf_counter()
        try:
            while step < steps:
                set_step(step)
                t0 = time.perf_counter()
                try:
                    if self._tiers_news():
                        report.events.append(
                            {"step": step, "event": "tier_returned", "tier": "cloud"}
                        )
                        log.warning("step %d: the edge says the cloud is back", step)
                    choice = self._begin(step, tier, report, job)
                    loss = self._step(step, tier, order, job.batch_size, job.step_timeout_s)
                    self._take_mirror(tier)
                except Interrupt as exc:  # the edge lost a tier and rolled everyone back
                    msg = exc.msg
                    self.edge.generation = msg.get("gen")
                    step = int(msg["step"])
                    self.cloud_ok = bool(msg["cloud_ok"])
                    if not self.cloud_ok and tier.schedule.uses_cloud(spec.num_units):
                        self.preferred = self.preferred or tier.schedule
                        report.events.append({"step": step, "event": "tier_lost", "tier": "cloud"})
                    new = Schedule.from_dict(msg["schedule"]).validate(
                        spec.num_units, job.batch_size
                    )
                    tier = TierSlice("device", spec, job, new, msg["units"], msg["opt"])
                    self.link.bounds = self.link.bounds.with_schedule(new)
                    self.edge.clear()
                    report.rolled_back(step, f"rollback to step {step}: {new.describe()}")
                    log.warning(
                        "the edge rolled back to step %d with schedule %s", step, new.describe()
                    )
                    continue
                except PeerLostError as exc:  # the edge is gone: it may come back
                    if self._may_go_alone(job, tier):
                        job, tier, steps, step = self._train_alone(
                            exc, step, tier, job, steps, order, report, progress
                        )
                        continue
                    log.warning(
                        "lost the edge at step %d (%s); joining again for up to %g s",
                        step,
                        exc,
                        job.rejoin_patience_s,
                    )
                    self.edge.interrupts = ()
                    offer = self._join(job.rejoin_patience_s)
                    job, tier, steps, step = self._take_offer(offer)
                    self._cloud_news(offer, job, step, report)
                    self.edge.interrupts = ("rollback",)
                    report.rolled_back(step, f"rejoined the edge at step {step}")
                    continue
                measured = time.perf_counter() - t0
                self.last_step = {"prev_loss": loss, "prev_measured_s": measured}
                report.iterations.append(
                    StepRecord(
                        step,
                        tier.schedule.schedule_id(),
                        loss,
                        measured,
                        choice.predicted_s,
                        choice.bw_de_mbps,
                        choice.bw_ec_mbps,
                    )
                )
                progress.update(step, loss, (step + 1) / (time.perf_counter() - t_run))
                step += 1
        finally:
            progress.close()

        # Gather the trained model from every owner, then test it here.
        self.edge.interrupts = ()
        if self.alone:  # the edge never came back: the model trained here is the result
            final = self._own_model(tier, steps)
        else:
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
            self.edge.send({"type": "done", "step": steps})
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

    def _cloud_news(self, offer: dict[str, Any], job: Any, step: int, report: Report) -> None:
        """What a job offer says of the cloud: lost (the edge asks it back between steps),
        and the schedule to return to when it answers."""
        cloud_ok = bool(offer.get("cloud_ok", True))
        if not cloud_ok and self.cloud_ok:
            report.events.append({"step": step, "event": "tier_lost", "tier": "cloud"})
        self.cloud_ok = cloud_ok
        if not cloud_ok and offer.get("preferred"):
            spec = job.spec()
            self.preferred = Schedule.from_dict(offer["preferred"]).validate(
                spec.num_units, job.batch_size
            )

    def _tiers_news(self) -> bool:
        """Take the edge's unasked news without waiting; True when the cloud came back."""
        news = self.edge.take("tiers")
        if self.edge.heard.get("bw_ec_mbps") is not None:  # the edge's replies carry it
            self.bw_ec_mbps = self.edge.heard["bw_ec_mbps"]
        if news is None:
            return False
        back = bool(news["cloud_ok"]) and not self.cloud_ok
        self.cloud_ok = bool(news["cloud_ok"])
        return back

    def _get_table(self, spec: Any, job: Any, steps: int, current: Schedule) -> None:
        """Measure our link, profile this board, and take the edge's schedule table."""
        from hiertrain_edge.planning.table import JobIdentity, ScheduleTable
        from hiertrain_edge.profiling.measure import quick_profile

        for _ in range(START_PROBES):
            probe(self.edge, self.bw_de, 0)
        profile = quick_profile(spec, job.batch_size, torch.get_num_threads(), "device")
        self.edge.send(
            {
                "type": "profile",
                "step": 0,
                "profile": profile.model_dump(mode="json"),
                "bw_de_mbps": self.bw_de.bandwidth_mbps,
                "latency_s": self.bw_de.latency_s,
            }
        )
        msg = self.edge.expect("table", 0, TABLE_TIMEOUT_S)
        table = ScheduleTable.from_bytes(bytes(msg["table"].numpy()), "the edge's table")
        identity = JobIdentity(spec.name, spec.num_units, job.batch_size, msg["profiles"])
        self.table = TableChooser(table, identity, steps, current)
        self.cloud_ok = bool(msg["cloud_ok"])
        self.bw_ec_mbps = msg.get("bw_ec_mbps")
        log.info(
            "schedule table %s: %d schedules; link to the edge %.3g Mbit/s",
            table.content_hash[:12],
            len(table.schedules),
            self.bw_de.bandwidth_mbps or 0,
        )

    def _begin(self, step: int, tier: TierSlice, report: Report, job: Any) -> Choice:
        """Announce the step, switching schedule first if the table (or the chooser) says
        so, and hand the edge our units at checkpoint steps."""
        choice = Choice(None, None, None, None, self.bw_ec_mbps)
        if self.table is not None:
            idle = not tier.schedule.dispatch_order(tier.num_units)  # all groups local
            every = every_due(step, job.probe_every_steps)
            self.link_probe.measure(self.edge, self.bw_de, step, idle, every)
            choice = self.table.choose(
                step, tier.schedule, self.bw_de.bandwidth_mbps, self.bw_ec_mbps, self.cloud_ok
            )
        new = self.chooser(step, tier.schedule) if self.chooser else choice.schedule
        if new is None and self.cloud_ok and self.preferred is not None:
            new = self.preferred  # the cloud is back: return to the schedule it replaced
        if new is not None and not self.cloud_ok and new.uses_cloud(tier.num_units):
            new = None  # never switch onto a lost tier
        header = {"type": "step", "step": step, **self.last_step}
        if choice.bw_de_mbps is not None:  # for the edge's status and metrics
            header["bw_de_mbps"] = choice.bw_de_mbps
        if choice.predicted_s is not None:
            header["predicted_s"] = choice.predicted_s
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
                    "bw_de_mbps": choice.bw_de_mbps,
                    "bw_ec_mbps": choice.bw_ec_mbps,
                    "predicted_gain_s": choice.gain_s,
                }
            )
            log.warning(
                "step %d: switched schedule %s -> %s (%s)",
                step,
                old.describe(),
                new.describe(),
                _switch_reason(choice, new == self.preferred),
            )
            if new == self.preferred:
                self.preferred = None
        else:
            self.edge.send(header)
        if step % job.checkpoint_every == 0:
            self._keep_own(step, tier, job)
        if step % job.checkpoint_every == 0 and tier.owns:
            self.edge.send(
                {
                    "type": "snapshot",
                    "step": step,
                    "units": tier.unit_state(tier.owns),
                    "opt": tier.optimizer_state(tier.owns),
                }
            )
        return choice

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

    # --- training without the edge ------------------------------------------------------

    def _keep_own(self, step: int, tier: TierSlice, job: Any) -> None:
        """At a checkpoint step, keep a copy of the units we own; with the edge's mirror of
        the others (see `_take_mirror`) it makes the whole model at this step."""
        if not job.device_fallback:
            return
        self.pending_own = {
            "step": step,
            "units": _cloned(tier.unit_state(tier.owns)),
            "opt": _cloned(tier.optimizer_state(tier.owns)),
        }

    def _take_mirror(self, tier: TierSlice) -> None:
        """Join the edge's mirror, when it has arrived, with our own units of that step."""
        msg = self.edge.take("mirror")
        own = self.pending_own
        if msg is None or own is None or own["step"] != msg["step"]:
            return
        # Copies: kept for many steps, never tied to the lifetime of a received frame.
        units = {**own["units"], **_cloned(msg["units"])}
        opt = {**own["opt"], **_cloned(msg["opt"])}
        every = {str(u) for u in range(tier.num_units)}
        if set(units) != every or set(opt) != every:
            log.warning(
                "step %d: the edge's mirror and this board's units cover %s, not every unit "
                "0..%d; keeping the copy of step %s",
                msg["step"],
                sorted(units, key=int),
                tier.num_units - 1,
                self.mirror and self.mirror["step"],
            )
            return
        self.mirror = {"step": int(msg["step"]), "units": units, "opt": opt}
        self.pending_own = None

    def _may_go_alone(self, job: Any, tier: TierSlice) -> bool:
        """Whether this board can train on without the edge, saying why not if it cannot."""
        if not job.device_fallback:
            return False
        with contextlib.suppress(HierTrainError):  # a mirror that came before the loss
            self._take_mirror(tier)
        if self.table is not None:
            table = self.table.table
            if table.slot_index[table.edge_down_slot] < 0:
                log.warning(
                    "the schedule table says the model does not fit this board alone; "
                    "waiting for the edge instead of training on"
                )
                return False
        if self.mirror is None:
            log.warning(
                "this board has no copy of the whole model yet (the edge mirrors one at its "
                "next checkpoint); waiting for the edge instead of training on"
            )
            return False
        return True

    def _alone_schedule(self, spec: Any, job: Any) -> Schedule:
        """The table's "edge unreachable" entry, else the whole batch in one group here."""
        n = spec.num_units
        if self.table is not None:
            table = self.table.table
            chosen = table.schedules[table.slot_index[table.edge_down_slot]]
            if all(g.c1 == n for g in chosen.groups):
                return chosen.validate(n, job.batch_size)
        return device_only(n, job.batch_size)

    def _train_alone(
        self,
        lost: Exception,
        step: int,
        tier: TierSlice,
        job: Any,
        steps: int,
        order: BatchOrder,
        report: Report,
        progress: Progress,
    ) -> tuple[Any, TierSlice, int, int]:
        """Train every unit here from the last checkpoint until the edge is back.

        The steps since the checkpoint run again on the same batches, so none is lost and
        none applied twice. Between steps a short join goes out (never waited on); when
        the edge answers it takes our state as the job's new checkpoint and every tier
        resumes from our step. Returns the job, slice, total steps and step to go on with;
        with `self.alone` still set when every step ran here and the edge never returned.
        """
        spec, mirror = tier.spec, self.mirror
        assert mirror is not None
        start = int(mirror["step"])
        schedule = self._alone_schedule(spec, job)
        alone = TierSlice("device", spec, job, schedule, mirror["units"], mirror["opt"])
        self.alone = True
        self.before_alone = tier.schedule
        self.edge.interrupts = ()
        report.events.append({"step": step, "event": "tier_lost", "tier": "edge"})
        report.rolled_back(start, f"edge lost: this board trains alone from step {start}")
        report.events.append(
            {"step": start, "event": "device_alone", "schedule": schedule.to_dict()}
        )
        log.warning(
            "lost the edge at step %d (%s); training alone on this board from step %d (the "
            "last checkpoint) with schedule %s, asking the edge back every %g s; check the "
            "edge host and its link (hiertrain-edge status)",
            step,
            lost,
            start,
            schedule.describe(),
            ALONE_JOIN_EVERY_S,
        )
        self._relink()
        step, waiting = start, None
        while True:
            set_step(step)
            offer = self._ask_edge_back(step, alone, job)
            if offer is not None:
                return self._edge_back(offer, step, report)
            if step >= steps:  # every step ran here: give the edge a chance to take them
                if waiting is None:
                    waiting = Deadline(job.rejoin_patience_s)
                    log.warning(
                        "all %d steps done on this board alone; waiting up to %g s for the "
                        "edge to take the model",
                        steps,
                        job.rejoin_patience_s,
                    )
                if waiting.left() <= 0:
                    return job, alone, steps, step
                time.sleep(ALONE_IDLE_S)
                continue
            t0 = time.perf_counter()
            loss = self._step(step, alone, order, job.batch_size, job.step_timeout_s)
            measured = time.perf_counter() - t0
            self.last_step = {"prev_loss": loss, "prev_measured_s": measured}
            report.iterations.append(StepRecord(step, schedule.schedule_id(), loss, measured))
            progress.update(step, loss, 1.0 / max(measured, 1e-9))
            step += 1

    def _relink(self) -> None:
        """A fresh socket to the edge: whatever the old one queued (joins, step traffic
        for an edge that is gone) is dropped with it."""
        bounds = self.link.bounds
        self.link.close(linger_s=0)
        self.link = Link(self.ctx, self.edge_address, security=self.security)
        self.link.bounds = bounds
        self.edge.sock = self.link
        self.edge.clear()
        self.edge.generation = None
        self.asked_at = None

    def _ask_edge_back(self, step: int, alone: TierSlice, job: Any) -> dict[str, Any] | None:
        """Between steps alone: take the edge's answer to our join without waiting, and
        send the join anew on a fresh socket when it went unanswered for a while.

        Returns the edge's job offer when it is back, else None.
        """
        try:
            while True:
                msg = self.link.recv(0.0, "the edge's answer")
                if msg["type"] == "abort":
                    log.warning("the edge refused this board: %s", msg["reason"])
                elif msg.get("attempt") != self.attempt:
                    continue  # step traffic or an answer to an older join
                elif msg["type"] == "job":
                    return msg  # the edge resumed without asking for our state
                elif msg["type"] == "handover_request":
                    return self._hand_over(step, alone, job)
        except PeerLostError:
            pass  # nothing (more) from the edge
        except HierTrainError as exc:  # e.g. the edge refused our key
            log.warning("asking the edge back: %s", exc)
        if self.asked_at is None or time.monotonic() - self.asked_at >= ALONE_JOIN_EVERY_S:
            if self.asked_at is not None:
                self._relink()
            self.attempt += 1
            self.asked_at = time.monotonic()
            self.link.send(self._join_message(int(self.train.y.max()) + 1, alone_step=step))
        return None

    def _hand_over(self, step: int, alone: TierSlice, job: Any) -> dict[str, Any] | None:
        """Give the edge every unit's weights and optimizer state before `step`; it makes
        them the job's checkpoint and answers with the job offer from that step."""
        every = range(alone.num_units)
        units, opt = _cloned(alone.unit_state(every)), _cloned(alone.optimizer_state(every))
        log.warning("the edge is back and asks for this board's state: handing over step %d", step)
        self.link.send(
            {"type": "handover", "step": step, "attempt": self.attempt, "units": units, "opt": opt}
        )
        deadline = Deadline(max(job.step_timeout_s, HANDOVER_TIMEOUT_S))
        try:
            while True:
                msg = self.link.recv(deadline.left(), "the edge's job offer")
                if msg["type"] == "abort":
                    log.warning("the edge refused this board's state: %s", msg["reason"])
                    break
                if msg["type"] == "job" and msg.get("attempt") == self.attempt:
                    if int(msg.get("start_step", 0)) == step:  # our state is the checkpoint
                        self.mirror = {"step": step, "units": units, "opt": opt}
                    return msg
        except PeerLostError as exc:
            log.warning("the edge did not take this board's state (%s); training on alone", exc)
        self.asked_at = 0.0  # ask again at once, on a fresh socket
        return None

    def _edge_back(
        self, offer: dict[str, Any], step: int, report: Report
    ) -> tuple[Any, TierSlice, int, int]:
        """Take the returning edge's offer: every tier trains again from its start step."""
        self.edge.clear()
        self.edge.generation = offer.get("gen")
        job, tier, steps, start = self._take_offer(offer)
        self.alone = False
        n, before = tier.num_units, self.before_alone
        self.cloud_ok = bool(offer.get("cloud_ok", True))
        if (
            not self.cloud_ok
            and before
            and before.uses_cloud(n)
            and not tier.schedule.uses_cloud(n)
        ):
            # The edge lost the cloud meanwhile: return to our schedule when it is back.
            self.preferred = self.preferred or before
            report.events.append({"step": start, "event": "tier_lost", "tier": "cloud"})
        if offer.get("plan"):
            self._get_table(tier.spec, job, steps, tier.schedule)
        self.edge.interrupts = ("rollback",)
        if start != step:
            report.rolled_back(start, f"the edge resumed at step {start}, not at step {step}")
            log.warning(
                "the edge did not take this board's state: it resumed the job at step %d, "
                "this board was at step %d",
                start,
                step,
            )
        report.events.append({"step": start, "event": "tier_returned", "tier": "edge"})
        log.warning(
            "the edge is back: every tier trains again from step %d with schedule %s",
            start,
            tier.schedule.describe(),
        )
        return job, tier, steps, start

    def _own_model(self, tier: TierSlice, steps: int) -> dict[str, Any]:
        """The model as trained here alone, when the edge did not return to gather it."""
        log.warning(
            "the edge did not come back: the model trained on this board alone is the "
            "result; the edge has no copy of its last steps"
        )
        state = full_state([tier.unit_state(range(tier.num_units))])
        meta = {"job_id": self.job_id, "steps": steps, "replicas_identical": True}
        return {"state": state, "meta": {**meta, "finished_without_edge": True}}


def _switch_reason(choice: Choice, back_to_cloud: bool) -> str:
    """Why the board switched schedule, for its log line."""
    if choice.schedule is None:
        return "the cloud is back" if back_to_cloud else "a switch asked for by the caller"

    def rate(mbps: float | None) -> str:
        return "unknown" if mbps is None else f"{mbps:.3g}"

    gain = "" if choice.gain_s is None else f", predicted gain {choice.gain_s:.3g} s per step"
    return f"links {rate(choice.bw_de_mbps)} / {rate(choice.bw_ec_mbps)} Mbit/s{gain}"


def _cloned(tensors: dict[str, Any]) -> dict[str, Any]:
    """A copy of per-unit weights ({name: tensor}) or optimizer state ([{name: tensor}])."""
    out: dict[str, Any] = {}
    for key, value in tensors.items():
        if isinstance(value, dict):
            out[key] = {n: t.clone() for n, t in value.items()}
        else:
            out[key] = [{n: t.clone() for n, t in p.items()} for p in value]
    return out
