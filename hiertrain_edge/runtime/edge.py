"""The edge role: admit a board, set up the cloud, run the middle slices and own the
replicated units (sum their gradients, step them, send the new weights back)."""

from __future__ import annotations

import contextlib
import logging
import uuid
from pathlib import Path
from typing import Any

import zmq

from hiertrain_edge.errors import ConfigError, HierTrainError, PeerLostError
from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.runtime.checkpoint import save_model
from hiertrain_edge.runtime.job import Job, load_job
from hiertrain_edge.runtime.mailbox import Mailbox, RemoteAbort
from hiertrain_edge.runtime.observe import EdgeObserver
from hiertrain_edge.runtime.slices import TierSlice, full_state
from hiertrain_edge.wire.schema import JobBounds
from hiertrain_edge.wire.security import Security
from hiertrain_edge.wire.transport import Link, Listener

log = logging.getLogger(__name__)

IDLE_POLL_S = 3600.0
CLOUD_SETUP_TIMEOUT_S = 60.0


class EdgeServer:
    """Serves boards one job at a time; `once` stops after the first job.

    Given a job file path, the edge re-reads it whenever a board joins, so an operator
    can change the next job without restarting the edge.
    """

    def __init__(
        self,
        job: Job | Path,
        listen: str,
        cloud: str | None,
        out_dir: str | Path | None = None,
        once: bool = False,
        schedule: Schedule | None = None,
        status_listen: str | None = None,
        metrics_port: int | None = None,
        security: Security | None = None,
    ) -> None:
        self.job_path = job if isinstance(job, Path) else None
        self.schedule_override = schedule
        self.cloud_address = cloud
        self._configure(load_job(job) if isinstance(job, Path) else job)
        self.ctx = zmq.Context.instance()
        self.listener = Listener(self.ctx, listen, security=security)
        self.cloud_link = Link(self.ctx, cloud, security=security) if cloud else None
        links = {"device_edge": self.listener, "edge_cloud": self.cloud_link}
        self.observe = EdgeObserver(
            listen, cloud, links, status_listen, metrics_port, configure=security
        )
        self.out_dir = Path(out_dir) if out_dir else None
        self.once = once
        log.info(
            "edge listening for boards on %s; job %s, schedule %s",
            listen,
            self.job.model,
            self.schedule.describe(),
        )

    def _configure(self, job: Job) -> None:
        spec = job.spec()
        schedule = (self.schedule_override or job.the_schedule(spec)).validate(
            spec.num_units, job.batch_size
        )
        if schedule.uses_cloud(spec.num_units) and not self.cloud_address:
            raise ConfigError(
                f"schedule {schedule.describe()} runs units on the cloud; give --cloud HOST"
            )
        self.job, self.spec, self.start_schedule = job, spec, schedule
        self.schedule = schedule

    def serve(self) -> None:
        try:
            while True:
                try:
                    peer, msg = self.listener.recv(IDLE_POLL_S, "join")
                except PeerLostError:
                    continue
                if msg["type"] != "join":
                    log.info("ignored %s from %s outside a job", msg["type"], peer.hex())
                    continue
                board = Mailbox(self.listener, peer, f"board {msg.get('board_id', peer.hex())}")
                try:
                    self.run_job(board, msg)
                except RemoteAbort as exc:
                    log.error("%s", exc)
                except (HierTrainError, KeyError, TypeError) as exc:
                    log.error("job with %s ended: %s", board.name, exc)
                    with contextlib.suppress(HierTrainError):
                        board.send({"type": "abort", "reason": str(exc)})
                self.observe.job_ended()
                if self.once:
                    return
        finally:
            self.listener.close()
            self.observe.close()
            if self.cloud_link is not None:
                self.cloud_link.close()

    # --- one job ----------------------------------------------------------------

    def _check_board(self, join: dict[str, Any]) -> int:
        shape = tuple(join["sample_shape"])
        if shape != self.spec.input_shape:
            raise ConfigError(
                f"the board's samples have shape {shape}, model {self.spec.name} takes "
                f"{self.spec.input_shape}"
            )
        if join["num_classes"] > self.spec.num_classes:
            raise ConfigError(
                f"the board's labels go up to {join['num_classes'] - 1}, model has "
                f"{self.spec.num_classes} classes"
            )
        return self.job.total_steps(int(join["n_train"]))

    def run_job(self, board: Mailbox, join: dict[str, Any]) -> None:
        if self.job_path is not None:
            self._configure(load_job(self.job_path))
        self.schedule = self.start_schedule
        job, spec, schedule = self.job, self.spec, self.schedule
        n = spec.num_units
        steps = self._check_board(join)
        bounds = JobBounds(spec, schedule, job.batch_size, steps, "edge", job.seed)
        self.listener.bounds = bounds
        if self.cloud_link is not None:
            self.cloud_link.bounds = bounds
        job_id = uuid.uuid4().hex[:8]
        tier = TierSlice("edge", spec, job, schedule)
        job_dict = job.model_dump(mode="json")
        self.job_id, self.job_dict = job_id, job_dict
        cloud: Mailbox | None = None
        if schedule.uses_cloud(n):
            cloud = self._setup_cloud(
                0, schedule, tier.unit_state(schedule.replicated("cloud", n)), {}
            )
        board.send(
            {
                "type": "job",
                "job_id": job_id,
                "job": job_dict,
                "schedule": schedule.to_dict(),
                "steps": steps,
                "units": tier.unit_state(schedule.replicated("device", n)),
            }
        )
        log.info(
            "job %s started with %s: %d steps of %d samples",
            job_id,
            board.name,
            steps,
            job.batch_size,
        )
        address = getattr(self.listener, "last_peer_address", None)
        board_id = str(join.get("board_id", board.name))
        self.observe.job_started(job_id, board_id, address, steps, job.model, schedule, n)
        try:
            while True:
                msg = board.expect(("step", "finish"), None, job.step_timeout_s)
                if msg["type"] == "finish":
                    break
                self.observe.step_started(msg["step"])
                if "schedule" in msg:
                    new = Schedule.from_dict(msg["schedule"]).validate(n, job.batch_size)
                    cloud = self._switch(msg["step"], new, tier, board, cloud)
                elif cloud is not None:
                    cloud.send({"type": "step", "step": msg["step"]})
                self._step(msg["step"], tier, board, cloud)
                self.observe.step_done(msg)
            self._finish(msg, tier, board, cloud, job_id, job_dict)
            self.observe.job_finished(msg)
        except BaseException as exc:
            if cloud is not None:
                cloud.send({"type": "abort", "reason": f"edge: {exc}"})
            raise

    def _setup_cloud(
        self, step: int, schedule: Schedule, units: dict[str, Any], opt: dict[str, Any]
    ) -> Mailbox:
        """Give the cloud the job, the schedule and its units; wait until it is ready."""
        if self.cloud_link is None:
            raise ConfigError(
                f"schedule {schedule.describe()} runs units on the cloud; give --cloud HOST"
            )
        cloud = Mailbox(self.cloud_link, name="the cloud")
        cloud.send(
            {
                "type": "setup",
                "job_id": self.job_id,
                "job": self.job_dict,
                "step": step,
                "schedule": schedule.to_dict(),
                "units": units,
                "opt": opt,
            }
        )
        cloud.expect("ready", step, CLOUD_SETUP_TIMEOUT_S)
        return cloud

    def _switch(
        self, step: int, new: Schedule, tier: TierSlice, board: Mailbox, cloud: Mailbox | None
    ) -> Mailbox | None:
        """Move every tier to `new` before `step`, units travelling with their optimizer state.

        Units whose owner changes come to the edge first (from the board and the cloud),
        then go out to their new owners; tiers that start replicating a unit get its
        weights. The edge stays the hub because it is the one tier linked to both others.
        """
        old, n = self.schedule, self.spec.num_units
        units = tier.unit_state(tier.owns)
        opt = tier.optimizer_state(tier.owns)
        if cloud is not None:
            cloud.send({"type": "step", "step": step, "schedule": new.to_dict()})
        for name, peer in (("device", board), ("cloud", cloud)):
            if peer is not None and any(
                old.owner(u, n) == name != new.owner(u, n) for u in range(n)
            ):
                moving = peer.expect("moving", step, self.job.step_timeout_s)
                units.update(moving["units"])
                opt.update(moving["opt"])

        def share(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
            owned = [u for u in range(n) if new.owner(u, n) == name != old.owner(u, n)]
            fresh = set(new.replicated(name, n)) - set(old.replicated(name, n))
            return (
                {str(u): units[str(u)] for u in sorted(set(owned) | fresh)},
                {str(u): opt[str(u)] for u in owned},
            )

        board_units, board_opt = share("device")
        board.send({"type": "units", "step": step, "units": board_units, "opt": board_opt})
        cloud_units, cloud_opt = share("cloud")
        if cloud is not None:
            cloud.send({"type": "units", "step": step, "units": cloud_units, "opt": cloud_opt})
        elif new.uses_cloud(n):
            cloud = self._setup_cloud(step, new, cloud_units, cloud_opt)
            cloud.send({"type": "step", "step": step})
        edge_units, edge_opt = share("edge")
        tier.reconfigure(new, edge_units, edge_opt)
        for link in (self.listener, self.cloud_link):
            if link is not None and link.bounds is not None:
                link.bounds = link.bounds.with_schedule(new)
        log.warning(
            "step %d: schedule switched from %s to %s", step, old.describe(), new.describe()
        )
        self.schedule = new
        self.observe.schedule_changed(step, new, n)
        return cloud

    def _step(self, step: int, tier: TierSlice, board: Mailbox, cloud: Mailbox | None) -> None:
        schedule, n, timeout = self.schedule, self.spec.num_units, self.job.step_timeout_s
        batch_size = self.job.batch_size
        tier.begin_step()

        # 1. Groups arrive from the board in dispatch order: pass cloud-bound ones on,
        #    train edge-terminal ones to the loss and answer them at once.
        cloud_bound = []
        for gid in schedule.dispatch_order(n):
            g = schedule.groups[gid]
            fwd = board.expect("fwd", step, timeout, gid)
            a, b = g.span("edge", n)
            if g.loss_tier(n) == "cloud":
                h = tier.forward(gid, a, b, fwd["x"])
                assert cloud is not None
                cloud.send({"type": "fwd", "step": step, "gid": gid, "x": h, "y": fwd["y"]})
                cloud_bound.append(gid)
            else:
                loss, grad = tier.forward_loss(a, b, fwd["x"], fwd["y"], batch_size)
                board.send({"type": "bwd", "step": step, "gid": gid, "grad": grad, "loss": loss})

        # 2. The cloud's gradients come back: finish the edge part, pass them down.
        for gid in cloud_bound:
            assert cloud is not None
            bwd = cloud.expect("bwd", step, timeout, gid)
            grad = tier.backward(gid, bwd["grad"])
            if schedule.groups[gid].c1 == 0:
                grad = None  # the board sent raw samples and ran nothing for this group
            board.send(
                {"type": "bwd", "step": step, "gid": gid, "grad": grad, "loss": bwd["loss"]}
            )

        # 3. Replicated units: sum every copy's gradient, step, send the weights back.
        replicas = []
        if schedule.replicated("device", n):
            replicas.append(board.expect("grads", step, timeout)["units"])
        if cloud is not None and schedule.replicated("cloud", n):
            replicas.append(cloud.expect("grads", step, timeout)["units"])
        tier.add_replica_grads(replicas)
        tier.step_optimizer()
        if schedule.replicated("device", n):
            board.send(
                {
                    "type": "weights",
                    "step": step,
                    "units": tier.unit_state(schedule.replicated("device", n)),
                }
            )
        if cloud is not None and schedule.replicated("cloud", n):
            cloud.send(
                {
                    "type": "weights",
                    "step": step,
                    "units": tier.unit_state(schedule.replicated("cloud", n)),
                }
            )

    def _finish(
        self,
        msg: dict[str, Any],
        tier: TierSlice,
        board: Mailbox,
        cloud: Mailbox | None,
        job_id: str,
        job_dict: dict[str, Any],
    ) -> None:
        """Gather every owner's units into one model and give it to every tier."""
        step = msg["step"]
        parts = [msg["units"], tier.unit_state(tier.owns)]
        replicas = [msg["replicas"]]
        if cloud is not None:
            cloud.send({"type": "finish", "step": step})
            state_msg = cloud.expect("state", step, self.job.step_timeout_s)
            parts.append(state_msg["units"])
            replicas.append(state_msg["replicas"])
        state = full_state(parts)
        identical = tier.same_as_owned(replicas)
        if not identical:
            log.error(
                "job %s: a replica differs from its owner's copy after step %d; "
                "the gathered model uses the owners' copies",
                job_id,
                step,
            )
        meta = {"job_id": job_id, "steps": step, "replicas_identical": identical}
        final = {"type": "model", "step": step, "state": state, "meta": meta}
        board.send(final)
        if cloud is not None:
            cloud.send(final)
        if self.out_dir is not None:
            save_model(self.out_dir / "model.pt", job_dict, state, meta)
        log.info("job %s finished after %d steps; model gathered from all tiers", job_id, step)
