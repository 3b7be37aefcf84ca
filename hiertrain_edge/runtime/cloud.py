"""The cloud role: serve edges one job at a time, running the tail slices it is given."""

from __future__ import annotations

import logging
from pathlib import Path

import zmq

from hiertrain_edge.errors import HierTrainError, PeerLostError
from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.runtime.checkpoint import save_model
from hiertrain_edge.runtime.job import job_from_dict
from hiertrain_edge.runtime.logstep import set_step
from hiertrain_edge.runtime.mailbox import Interrupt, Mailbox, RemoteAbort
from hiertrain_edge.runtime.slices import TierSlice
from hiertrain_edge.wire.schema import JobBounds
from hiertrain_edge.wire.security import Security
from hiertrain_edge.wire.transport import Listener

log = logging.getLogger(__name__)

IDLE_POLL_S = 3600.0
# Messages from an edge that end the current job: the edge restarted or rolled back.
_RESTART = ("setup", "ping", "profile_request")


class CloudServer:
    """Waits for an edge's `setup`, then runs the job's cloud slices step by step."""

    def __init__(
        self,
        listen: str,
        out_dir: str | Path | None = None,
        once: bool = False,
        security: Security | None = None,
    ) -> None:
        self.ctx = zmq.Context.instance()
        self.listener = Listener(self.ctx, listen, security=security)
        self.out_dir = Path(out_dir) if out_dir else None
        self.once = once
        log.info("cloud listening for edges on %s", listen)

    def serve(self) -> None:
        pending: tuple[bytes, dict] | None = None
        try:
            while True:
                if pending is None:
                    try:
                        pending = self.listener.recv(IDLE_POLL_S, "setup")
                    except PeerLostError:
                        continue
                peer, msg = pending
                pending = None
                if msg["type"] == "ping":  # an edge asks whether we are back
                    self.listener.send(peer, {"type": "pong", "step": 0})
                    continue
                if msg["type"] == "probe":  # an edge measures its link to us
                    self.listener.send(peer, {"type": "probe_ack", "step": msg["step"]})
                    continue
                if msg["type"] == "profile_request":
                    self._profile(peer, msg)
                    continue
                if msg["type"] != "setup":
                    log.info("ignored %s from edge %s outside a job", msg["type"], peer.hex())
                    continue
                # A setup or ping from any edge ends the current job: the edge restarted
                # or rolled back, and the job goes on from what the new setup carries.
                edge = Mailbox(
                    self.listener,
                    peer,
                    "the edge",
                    interrupts=_RESTART,
                    adopt=lambda _p, m: m.get("type") in _RESTART,
                )
                try:
                    self.run_job(edge, msg)
                except Interrupt as exc:
                    log.warning("the edge sent a new %s: leaving the current job", exc.msg["type"])
                    pending = (exc.peer or peer, exc.msg)
                    continue
                except (HierTrainError, KeyError, TypeError) as exc:
                    log.error("job ended with an error: %s; waiting for the next job", exc)
                if self.once:
                    return
        finally:
            self.listener.close()

    def _profile(self, peer: bytes, msg: dict) -> None:
        """Profile this host for the edge's job (seconds) and send it back."""
        import torch

        from hiertrain_edge.profiling.measure import quick_profile

        job = job_from_dict(msg["job"], "job from the edge")
        profile = quick_profile(job.spec(), job.batch_size, torch.get_num_threads(), "cloud")
        self.listener.send(
            peer, {"type": "profile", "step": 0, "profile": profile.model_dump(mode="json")}
        )
        log.info("cloud profiled itself for %s at batch size %d", job.model, job.batch_size)

    def _switch(
        self, step: int, new: Schedule, tier: TierSlice, edge: Mailbox, timeout: float
    ) -> None:
        """Hand the units we stop owning to the edge; take ours (see EdgeServer._switch)."""
        n = tier.num_units
        leaving = sorted(u for u in tier.owns if new.owner(u, n) != "cloud")
        if leaving:
            edge.send(
                {
                    "type": "moving",
                    "step": step,
                    "units": tier.unit_state(leaving),
                    "opt": tier.optimizer_state(leaving),
                }
            )
        arriving = edge.expect("units", step, timeout)
        tier.reconfigure(new, arriving["units"], arriving["opt"])
        if self.listener.bounds is not None:
            self.listener.bounds = self.listener.bounds.with_schedule(new)
        log.info("step %d: cloud now runs units %s", step, sorted(tier.runs))

    def run_job(self, edge: Mailbox, setup: dict) -> None:
        edge.generation = setup.get("gen")
        job = job_from_dict(setup["job"], "job from the edge")
        spec = job.spec()
        schedule = Schedule.from_dict(setup["schedule"]).validate(spec.num_units, job.batch_size)
        n = spec.num_units
        self.listener.bounds = bounds = JobBounds(
            spec, schedule, job.batch_size, None, "cloud", job.seed
        )
        bounds.check(setup)  # the replicated units' weights must fit the model
        tier = TierSlice("cloud", spec, job, schedule, setup["units"], setup.get("opt", {}))
        edge.send({"type": "ready", "step": setup.get("step", 0)})
        log.info(
            "cloud joined job %s: schedule %s, units %s",
            setup["job_id"],
            schedule.describe(),
            sorted(tier.runs),
        )
        try:
            while True:
                msg = edge.expect(("step", "finish", "probe"), None, job.step_timeout_s * 10)
                if msg["type"] == "probe":  # the edge measures its link to us
                    edge.send({"type": "probe_ack", "step": msg["step"]})
                    continue
                if msg["type"] == "finish":
                    break
                step = msg["step"]
                set_step(step)
                if "schedule" in msg:
                    new = Schedule.from_dict(msg["schedule"]).validate(n, job.batch_size)
                    self._switch(step, new, tier, edge, job.step_timeout_s)
                if step % job.checkpoint_every == 0 and tier.owns:
                    edge.send(
                        {
                            "type": "snapshot",
                            "step": step,
                            "units": tier.unit_state(tier.owns),
                            "opt": tier.optimizer_state(tier.owns),
                        }
                    )
                schedule = tier.schedule
                order = [
                    i
                    for i in schedule.dispatch_order(n)
                    if schedule.groups[i].loss_tier(n) == "cloud"
                ]
                tier.begin_step()
                for gid in order:
                    fwd = edge.expect("fwd", step, job.step_timeout_s, gid)
                    g = schedule.groups[gid]
                    loss, grad = tier.forward_loss(g.c2, n, fwd["x"], fwd["y"], job.batch_size)
                    edge.send(
                        {"type": "bwd", "step": step, "gid": gid, "grad": grad, "loss": loss}
                    )
                if tier.replicated:
                    edge.send({"type": "grads", "step": step, "units": tier.replica_grads()})
                tier.step_optimizer()
                if tier.replicated:
                    tier.load_unit_state(edge.expect("weights", step, job.step_timeout_s)["units"])
            edge.send(
                {
                    "type": "state",
                    "step": msg["step"],
                    "units": tier.unit_state(tier.owns),
                    "replicas": tier.unit_state(tier.replicated),
                }
            )
            final = edge.expect("model", None, job.step_timeout_s)
        except RemoteAbort as exc:
            log.error("%s", exc)
            return
        if self.out_dir is not None:
            path = self.out_dir / "model.pt"
            save_model(path, setup["job"], final["state"], final["meta"])
            log.info("cloud saved the trained model to %s", path)
        log.info("cloud finished job %s after %d steps", setup["job_id"], final["step"])
