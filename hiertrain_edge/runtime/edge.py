"""The edge role: admit a board, set up the cloud, run the middle slices and own the
replicated units (sum their gradients, step them, send the new weights back)."""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import zmq

from hiertrain_edge.errors import ConfigError, HierTrainError, PeerLostError
from hiertrain_edge.planning.schedule import Group, Schedule
from hiertrain_edge.planning.table import profile_hash
from hiertrain_edge.runtime.bandwidth import LinkMeter
from hiertrain_edge.runtime.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_save,
    load_checkpoint,
    save_model,
)
from hiertrain_edge.runtime.job import Job, load_job
from hiertrain_edge.runtime.mailbox import Interrupt, Mailbox, RemoteAbort
from hiertrain_edge.runtime.observe import EdgeObserver
from hiertrain_edge.runtime.replan import START_PROBES, LinkProbe, every_due, probe
from hiertrain_edge.runtime.slices import TierSlice, full_state
from hiertrain_edge.wire.schema import JobBounds
from hiertrain_edge.wire.security import Security
from hiertrain_edge.wire.transport import Deadline, Link, Listener

log = logging.getLogger(__name__)

IDLE_POLL_S = 3600.0
CLOUD_SETUP_TIMEOUT_S = 60.0
CLOUD_PROBE_EVERY_S = 2.0  # how often a lost cloud is asked whether it is back
CLOUD_ANSWER_S = 10.0  # at job start: a cloud that does not answer a ping is not there
PROFILE_TIMEOUT_S = 300.0  # a quick profile takes seconds; a slow board, longer
CHECKPOINT_FILE = "checkpoint.pt"


def without_cloud(schedule: Schedule, num_units: int) -> Schedule:
    """The same groups with the cloud's units moved to the edge."""
    return Schedule(tuple(Group(g.n, g.c1, num_units) for g in schedule.groups))


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
        self.security = security
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
            "planned when a board joins" if self.auto_plan else self.schedule.describe(),
        )

    def _configure(self, job: Job) -> None:
        spec = job.spec()
        schedule = (self.schedule_override or job.the_schedule(spec)).validate(
            spec.num_units, job.batch_size
        )
        if schedule.uses_cloud(spec.num_units) and not self.cloud_address:
            if job.schedule is not None or self.schedule_override is not None:
                raise ConfigError(
                    f"schedule {schedule.describe()} runs units on the cloud; give --cloud HOST"
                )
            schedule = without_cloud(schedule, spec.num_units)  # planned: no cloud to plan on
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
        job, spec = self.job, self.spec
        n = spec.num_units
        steps = self._check_board(join)
        self.board_id = str(join["board_id"])
        self.board_session = join.get("session")
        self.board_attempt = int(join.get("attempt", 0))
        bounds = JobBounds(spec, self.schedule, job.batch_size, steps, "edge", job.seed)
        self.listener.bounds = bounds
        if self.cloud_link is not None:
            self.cloud_link.bounds = bounds
        self.job_dict = job.model_dump(mode="json")
        self.steps = steps
        self.bw_ec = LinkMeter()  # the link to the cloud: real transfers, probes when idle
        self.link_probe = LinkProbe()
        board.notes = lambda: {"bw_ec_mbps": self.bw_ec.bandwidth_mbps}  # for the board
        self.cloud_lost_at: float | None = None
        self.with_cloud: Schedule | None = None  # what the cloud's loss replaced
        self.mirror_ok = job.device_fallback  # whether the board may train alone
        board.adopt = self._same_board
        board.ours = lambda m: str(m.get("board_id")) == self.board_id
        resumed = self._checkpoint_for(join)
        if resumed is not None:
            self.job_id = resumed["job_id"]
            self.snapshot = resumed
            log.warning(
                "board %s rejoined job %s: resuming from the checkpoint at step %d",
                self.board_id,
                self.job_id,
                resumed["step"],
            )
            self.schedule = Schedule.from_dict(resumed["schedule"])
            tier, cloud = self._rejoin_or_wait(board, join)
        else:
            self.job_id = uuid.uuid4().hex[:8]
            self.snapshot = None
            while True:
                try:
                    tier, cloud = self._start(board)
                    break
                except Interrupt as exc:  # the board asked again before we answered
                    board.peer = exc.peer
                    board.clear()
        log.info(
            "job %s started with %s: %d steps of %d samples",
            self.job_id,
            board.name,
            steps,
            job.batch_size,
        )
        address = getattr(self.listener, "last_peer_address", None)
        self.observe.job_started(
            self.job_id, self.board_id, address, steps, job.model, self.schedule, n
        )
        try:
            while True:
                try:
                    msg = board.expect(("step", "finish", "probe"), None, job.step_timeout_s)
                    if msg["type"] == "probe":  # the board measures its link: answer at once
                        board.send({"type": "probe_ack", "step": msg["step"]})
                        continue
                    if msg["type"] == "finish":
                        break
                    step = msg["step"]
                    every = every_due(step, job.probe_every_steps)
                    idle = not self.schedule.uses_cloud(n)  # no training traffic to time
                    news = False
                    if cloud is not None and self.auto_plan:
                        news = self.link_probe.measure(cloud, self.bw_ec, step, idle, every)
                    if news:
                        board.send(
                            {
                                "type": "tiers",
                                "step": step,
                                "cloud_ok": True,
                                "bw_ec_mbps": self.bw_ec.bandwidth_mbps,
                            }
                        )
                    if cloud is not None and self.bw_ec.bandwidth_mbps is not None:
                        # Measured from the cloud's traffic every step, not only by probes.
                        self.observe.set_bandwidth("edge_cloud", self.bw_ec.bandwidth_mbps)
                    self.observe.step_started(step)
                    cloud = self._probe_cloud(board, cloud, step)
                    if "schedule" in msg:
                        new = Schedule.from_dict(msg["schedule"]).validate(n, job.batch_size)
                        cloud = self._switch(step, new, tier, board, cloud)
                    elif cloud is not None:
                        cloud.send({"type": "step", "step": step})
                    if step % max(1, job.checkpoint_every) == 0:
                        self._take_snapshot(step, tier, board, cloud)
                    self._step(step, tier, board, cloud)
                    self.observe.step_done(msg)
                except Interrupt as exc:  # the board restarted and joined again
                    board.peer = exc.peer
                    log.warning(
                        "board %s rejoined; rolling back to step %d",
                        self.board_id,
                        self._snapshot_step(),
                    )
                    tier, cloud = self._rejoin_or_wait(board, exc.msg)
                except (PeerLostError, RemoteAbort) as exc:
                    tier, cloud = self._recover(exc, board, cloud)
            self._finish(msg, tier, board, cloud, self.job_id, self.job_dict)
            self.observe.job_finished(msg)
        except BaseException as exc:
            if cloud is not None:
                with contextlib.suppress(HierTrainError):
                    cloud.send({"type": "abort", "reason": f"edge: {exc}"})
            raise

    def _new_generation(self, board: Mailbox) -> None:
        """Start a new pass over the steps: whatever the tiers sent before is stale."""
        self.generation = random.randrange(2**31)
        board.generation = self.generation

    def _start(self, board: Mailbox) -> tuple[TierSlice, Mailbox | None]:
        """Build the edge's slice, set up the cloud, offer the job, plan if asked."""
        n = self.spec.num_units
        self._new_generation(board)
        self.schedule = self.start_schedule
        cloud_profile, cloud = None, None
        wants_cloud = self.auto_plan or self.schedule.uses_cloud(n)
        if self.cloud_link is not None and wants_cloud and self.cloud_lost_at is None:
            try:
                self._ping_cloud(CLOUD_ANSWER_S)
                if self.auto_plan:
                    cloud_profile = self._once("cloud", self._cloud_profile)
            except PeerLostError as exc:  # not there (yet): start without it, ask it back later
                self._without_cloud(exc)
                if self.auto_plan:  # the start schedule is a placeholder, not one to return to
                    self.with_cloud = None
        if self.cloud_lost_at is not None:  # also when the board asked again meanwhile
            self.schedule = without_cloud(self.start_schedule, n)
        tier = TierSlice("edge", self.spec, self.job, self.schedule)
        if self.schedule.uses_cloud(n):  # the cloud answered a moment ago
            cloud = self._setup_cloud(
                0, self.schedule, tier.unit_state(self.schedule.replicated("cloud", n)), {}
            )
        offer = self._offer(0, tier.unit_state(self.schedule.replicated("device", n)), {})
        board.send({**offer, "plan": self.auto_plan})
        if self.auto_plan:
            self._plan(board, cloud_profile)
        return tier, cloud

    # --- planning ----------------------------------------------------------------

    @property
    def auto_plan(self) -> bool:
        """Plan from fresh profiles unless the job file or --schedule fixes the schedule."""
        return self.job.schedule is None and self.schedule_override is None

    def _once(self, name: str, measure: Callable[[], Any]) -> Any:
        """A profile measured once per job. A board whose join goes unanswered asks again
        (device.py JOIN_RETRY_S) and we start over; profiling anew each time, a host that
        profiles slower than the retry would never get its offer out."""
        cache = getattr(self, "_profiles", None)
        if cache is None or cache[0] != self.job_id:
            cache = self._profiles = (self.job_id, {})
        if name not in cache[1]:
            cache[1][name] = measure()
        return cache[1][name]

    def _cloud_profile(self) -> Any:
        """Ask the cloud to profile itself for this job; measure the link to it."""
        from hiertrain_edge.profiling.profile import parse_profile

        if self.cloud_link is None:
            return None
        cloud = Mailbox(self.cloud_link, name="the cloud", meter=self.bw_ec)
        cloud.send({"type": "profile_request", "step": 0, "job": self.job_dict})
        profile = parse_profile(
            cloud.expect("profile", 0, PROFILE_TIMEOUT_S)["profile"], "the cloud's profile"
        )
        for _ in range(START_PROBES):
            probe(cloud, self.bw_ec, 0)
        return profile

    def _plan(self, board: Mailbox, cloud_profile: Any) -> None:
        """Profile the edge, take the board's profile, build the schedule table and give it
        to the board, which looks up each step's schedule in it."""
        from hiertrain_edge.planning.table import build_table
        from hiertrain_edge.profiling.measure import quick_profile
        from hiertrain_edge.profiling.profile import parse_profile

        t0 = time.perf_counter()
        profiles = {
            "edge": self._once(
                "edge",
                lambda: quick_profile(
                    self.spec, self.job.batch_size, torch.get_num_threads(), name="edge"
                ),
            )
        }
        while True:
            msg = board.expect(("profile", "probe"), 0, PROFILE_TIMEOUT_S)
            if msg["type"] == "probe":
                board.send({"type": "probe_ack", "step": 0})
                continue
            break
        profiles["device"] = parse_profile(msg["profile"], "the board's profile")
        # No cloud: a profile that cannot run anything keeps every schedule off it.
        profiles["cloud"] = cloud_profile or profiles["edge"].model_copy(
            update={"memory_budget_bytes": 1}
        )
        latency = (float(msg.get("latency_s") or 0.0), float(self.bw_ec.latency_s or 0.0))
        # Priced with the mirror the job asks for; a model too big for the board turns the
        # mirror off below, and its steps then cost a little less than the table says.
        table = build_table(
            self.spec,
            profiles,
            self.job.batch_size,
            latency_s=latency,
            checkpoints=self.job.checkpoint_costs(),
        )
        blob = table.to_bytes()
        if self.mirror_ok and table.slot_index[table.edge_down_slot] < 0:
            self.mirror_ok = False
            log.warning(
                "job %s: the model does not fit the board's memory alone; the board will "
                "wait for this edge when it loses it instead of training on alone",
                self.job_id,
            )
        if self.out_dir is not None:  # for `hiertrain-edge table show`, and for tests
            table.save(self.out_dir / "table.htab")
        log.info(
            "job %s: schedule table of %d schedules built in %.1f s (%d bytes); "
            "board link %.3g Mbit/s, cloud link %s",
            self.job_id,
            len(table.schedules),
            time.perf_counter() - t0,
            len(blob),
            msg.get("bw_de_mbps") or 0.0,
            "none" if cloud_profile is None else f"{self.bw_ec.bandwidth_mbps or 0.0:.3g} Mbit/s",
        )
        board.send(
            {
                "type": "table",
                "step": 0,
                "table": torch.frombuffer(bytearray(blob), dtype=torch.uint8),
                "profiles": {t: profile_hash(p) for t, p in profiles.items()},
                "cloud_ok": cloud_profile is not None,
                "bw_ec_mbps": self.bw_ec.bandwidth_mbps,
            }
        )

    # --- recovery ----------------------------------------------------------------

    def _same_board(self, peer: bytes, msg: dict[str, Any]) -> bool:
        """A join from our board's restarted process, or a newer attempt of this one."""
        if msg.get("type") != "join" or str(msg.get("board_id")) != self.board_id:
            return False
        session, attempt = msg.get("session"), int(msg.get("attempt", 0))
        if session == self.board_session and attempt <= self.board_attempt:
            return False  # an older join, queued while we were away: already answered
        self.board_session, self.board_attempt = session, attempt
        return True

    def _offer(self, step: int, units: dict[str, Any], opt: dict[str, Any]) -> dict[str, Any]:
        offer = {
            "type": "job",
            "job_id": self.job_id,
            "job": self.job_dict,
            "schedule": self.schedule.to_dict(),
            "steps": self.steps,
            "start_step": step,
            "units": units,
            "opt": opt,
            "attempt": self.board_attempt,
            "cloud_ok": self.cloud_lost_at is None,
        }
        if self.cloud_lost_at is not None and self.with_cloud is not None:
            offer["preferred"] = self.with_cloud.to_dict()  # the board returns to it
        return offer

    def _snapshot_step(self) -> int:
        return 0 if self.snapshot is None else int(self.snapshot["step"])

    def _checkpoint_for(self, join: dict[str, Any]) -> dict[str, Any] | None:
        """The checkpoint of an unfinished job of this board, if the out folder has one."""
        if self.out_dir is None:
            return None
        path = self.out_dir / CHECKPOINT_FILE
        if not path.is_file():
            return None
        try:
            blob = load_checkpoint(path)
        except ConfigError as exc:  # written atomically, so a disk fault or a foreign file
            raise ConfigError(
                f"{exc}; move it away to start this board's job afresh (the steps since the "
                "job began are then trained again)"
            ) from exc
        # A checkpoint at the last step is a board's handover after it trained alone to the
        # end: the model is still to be gathered from it.
        if (
            blob["board_id"] != self.board_id
            or blob["job"] != self.job_dict
            or blob["step"] > self.steps
        ):
            log.info("checkpoint %s belongs to another or a finished job; starting afresh", path)
            return None
        return blob

    def _take_snapshot(
        self, step: int, tier: TierSlice, board: Mailbox, cloud: Mailbox | None
    ) -> None:
        """Gather every owner's units (weights and optimizer state) before `step`.

        The board and the cloud send theirs unasked at every checkpoint step; a tier that
        dies later is brought back from here, so no step is lost and none applied twice.
        """
        units = {
            k: {n: t.clone() for n, t in v.items()} for k, v in tier.unit_state(tier.owns).items()
        }
        opt = {
            k: [{n: t.clone() for n, t in p.items()} for p in v]
            for k, v in tier.optimizer_state(tier.owns).items()
        }
        for peer in (board, cloud):
            if peer is not None and self._owns_any(peer is board):
                part = peer.expect("snapshot", step, self.job.step_timeout_s)
                units.update(part["units"])
                opt.update(part["opt"])
        self._checkpoint(step, units, opt)
        self._send_mirror(board)

    def _checkpoint(self, step: int, units: dict[str, Any], opt: dict[str, Any]) -> None:
        """Make every unit's weights and optimizer state at `step` the job's snapshot and
        write it atomically (with --out)."""
        self.snapshot = {
            "format": CHECKPOINT_FORMAT,
            "job_id": self.job_id,
            "board_id": self.board_id,
            "job": self.job_dict,
            "step": step,
            "data_position": step,
            "schedule": self.schedule.to_dict(),
            "units": units,
            "opt": opt,
            "rng": torch.random.get_rng_state(),
        }
        if self.out_dir is not None:
            atomic_save(self.snapshot, self.out_dir / CHECKPOINT_FILE)

    def _owns_any(self, device: bool) -> bool:
        n = self.spec.num_units
        tier = "device" if device else "cloud"
        return any(self.schedule.owner(u, n) == tier for u in range(n))

    def _restore(
        self,
        board: Mailbox,
        snapshot: dict[str, Any] | None,
        schedule: Schedule,
        rejoin: bool = False,
    ) -> tuple[TierSlice, Mailbox | None]:
        """Put every tier back to the snapshot's step under `schedule`."""
        self._new_generation(board)
        n, job = self.spec.num_units, self.job
        board.clear()
        if snapshot is None:  # nothing gathered yet: start the job over from its seeds
            step, units, opt = 0, None, None
        else:
            step, units, opt = int(snapshot["step"]), snapshot["units"], snapshot["opt"]

        def share(tier_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
            if units is None:
                return {}, {}
            held = schedule.units_on(tier_name, n) | {
                u for u in range(n) if schedule.owner(u, n) == tier_name
            }
            return (
                {str(u): units[str(u)] for u in held if str(u) in units},
                {
                    str(u): opt[str(u)]
                    for u in held
                    if schedule.owner(u, n) == tier_name and str(u) in opt
                },
            )

        self.schedule = schedule
        for link in (self.listener, self.cloud_link):
            if link is not None and link.bounds is not None:
                link.bounds = link.bounds.with_schedule(schedule)
        tier = TierSlice("edge", self.spec, job, schedule, *share("edge"))
        if units is None:  # fresh start: replicas take the edge's initial weights
            board_units = tier.unit_state(schedule.replicated("device", n))
            board_opt: dict[str, Any] = {}
            cloud_units = tier.unit_state(schedule.replicated("cloud", n))
            cloud_opt: dict[str, Any] = {}
        else:
            board_units, board_opt = share("device")
            cloud_units, cloud_opt = share("cloud")
        cloud = None
        if schedule.uses_cloud(n):
            cloud = self._setup_cloud(step, schedule, cloud_units, cloud_opt)
        if rejoin:
            board.send(self._offer(step, board_units, board_opt))
        else:
            board.send(
                {
                    "type": "rollback",
                    "step": step,
                    "schedule": schedule.to_dict(),
                    "units": board_units,
                    "opt": board_opt,
                    "cloud_ok": self.cloud_lost_at is None,
                }
            )
        self.observe.schedule_changed(step, schedule, n)
        return tier, cloud

    def _await_rejoin(self, exc: Exception, board: Mailbox) -> tuple[TierSlice, Mailbox | None]:
        """The board fell silent: keep the job and wait for it to join again."""
        log.warning(
            "lost board %s (%s); waiting up to %g s for it to join again",
            self.board_id,
            exc,
            self.job.rejoin_patience_s,
        )
        deadline = Deadline(self.job.rejoin_patience_s)
        while deadline.left() > 0:
            try:
                peer, msg = self.listener.recv(deadline.left(), "join")
            except PeerLostError:
                continue  # a dropped connection (the old board's) or the wait ran out
            if self._same_board(peer, msg):
                board.peer = peer
                log.warning(
                    "board %s is back; resuming from step %d", self.board_id, self._snapshot_step()
                )
                try:
                    return self._rejoin(board, msg)
                except PeerLostError as again:  # it went away again: keep waiting
                    log.warning("board %s left again (%s); still waiting", self.board_id, again)
                    continue
            if msg.get("type") == "join":
                with contextlib.suppress(HierTrainError):
                    self.listener.send(
                        peer, {"type": "abort", "reason": "this edge is busy with another board"}
                    )
        raise PeerLostError(
            f"board {self.board_id} did not come back within {self.job.rejoin_patience_s:g} s"
        ) from exc

    def _recover(
        self, exc: Exception, board: Mailbox, cloud: Mailbox | None
    ) -> tuple[TierSlice, Mailbox | None]:
        """A tier fell silent: go on without the cloud, or wait for the board to rejoin."""
        if getattr(exc, "mailbox", None) is cloud and cloud is not None:
            try:
                return self._cloud_lost(exc, board)
            except PeerLostError as lost:  # the board went away meanwhile
                exc = lost
        return self._await_rejoin(exc, board)

    def _rejoin_or_wait(
        self, board: Mailbox, join: dict[str, Any]
    ) -> tuple[TierSlice, Mailbox | None]:
        try:
            return self._rejoin(board, join)
        except PeerLostError as exc:  # the board vanished again before it was back
            return self._await_rejoin(exc, board)

    def _rejoin(self, board: Mailbox, join: dict[str, Any]) -> tuple[TierSlice, Mailbox | None]:
        """Bring the board that joined again back into the job at the last snapshot; a
        board that trained alone meanwhile first hands over its state, the newer snapshot."""
        handed, cloud_failed = False, False
        while True:
            try:
                if join.get("alone_step") is not None and not handed:
                    self._take_handover(board, join)
                    handed = True
                return self._restore(board, self.snapshot, self.schedule, rejoin=True)
            except Interrupt as exc:  # it asked again meanwhile: answer the newer join
                board.peer, join, handed = exc.peer, exc.msg, False
            except PeerLostError as exc:
                mailbox = getattr(exc, "mailbox", None)
                if mailbox is None or mailbox.sock is not self.cloud_link:
                    raise
                if not cloud_failed:  # e.g. a drop of the cloud link while this edge was away
                    cloud_failed = True
                    log.warning("setting up the cloud again failed (%s); trying once more", exc)
                    continue
                self._without_cloud(exc)

    def _take_handover(self, board: Mailbox, join: dict[str, Any]) -> None:
        """Take a board's state after it trained alone as the job's snapshot (and checkpoint).

        The board went on from our last checkpoint with the same data order, so its state
        at its step is a state of this very run: every tier resumes there and no step is
        lost or applied twice.
        """
        n = self.spec.num_units
        log.warning(
            "board %s trained alone without this edge and is at step %d (this edge's "
            "snapshot: step %d); asking for its state",
            self.board_id,
            join["alone_step"],
            self._snapshot_step(),
        )
        board.clear()
        board.send({"type": "handover_request", "attempt": self.board_attempt})
        deadline = Deadline(self.job.step_timeout_s)
        while True:
            try:
                msg = board.expect("handover", None, deadline.left())
            except PeerLostError:
                if deadline.left() <= 0:
                    raise
                continue  # a connection dropped: the board's old sockets, closed as it retried
            if msg["attempt"] == self.board_attempt:
                break
        units, opt, step = msg["units"], msg["opt"], int(msg["step"])
        # Copies: the snapshot is kept until the next one, never tied to a received frame.
        units = {k: {n: t.clone() for n, t in v.items()} for k, v in units.items()}
        opt = {k: [{n: t.clone() for n, t in p.items()} for p in v] for k, v in opt.items()}
        every = {str(u) for u in range(n)}
        if set(units) != every or set(opt) != every:
            log.warning(
                "board %s handed over units %s and optimizer state of %s, expected all of "
                "0..%d; resuming from step %d instead",
                self.board_id,
                sorted(units, key=int),
                sorted(opt, key=int),
                n - 1,
                self._snapshot_step(),
            )
            return
        if step <= self._snapshot_step():
            # Older than ours (the join that asked may have waited in a queue; or a second
            # process runs under this board's id): taking it would undo steps.
            log.warning(
                "board %s handed over its state at step %d, not newer than this edge's "
                "snapshot at step %d; resuming from step %d",
                self.board_id,
                step,
                self._snapshot_step(),
                self._snapshot_step(),
            )
            return
        self._checkpoint(step, units, opt)
        log.warning(
            "took board %s's state at step %d as the job's checkpoint; every tier resumes "
            "there with schedule %s",
            self.board_id,
            step,
            self.schedule.describe(),
        )

    def _send_mirror(self, board: Mailbox) -> None:
        """Mirror the snapshot's units the board does not own to it (weights and optimizer
        state), so the board holds the whole model at this step and can train alone from
        here if it loses this edge. Costs their size on the downlink every checkpoint."""
        if not self.mirror_ok or self.snapshot is None:
            return
        n = self.spec.num_units
        keep = {str(u) for u in range(n) if self.schedule.owner(u, n) != "device"}
        board.send(
            {
                "type": "mirror",
                "step": self.snapshot["step"],
                "units": {k: v for k, v in self.snapshot["units"].items() if k in keep},
                "opt": {k: v for k, v in self.snapshot["opt"].items() if k in keep},
            }
        )

    def _cloud_lost(self, exc: Exception, board: Mailbox) -> tuple[TierSlice, Mailbox | None]:
        """Go on without the cloud: roll back to the last snapshot with the cloud's units
        on the edge; the cloud is asked back between steps (see `_probe_cloud`)."""
        self.cloud_lost_at = time.monotonic()
        self.with_cloud = self.with_cloud or self.schedule
        fallback = without_cloud(self.schedule, self.spec.num_units)
        log.warning(
            "lost the cloud (%s); going on without it from step %d with schedule %s",
            exc,
            self._snapshot_step(),
            fallback.describe(),
        )
        self.observe.tier_lost("cloud", str(exc))
        if self.cloud_link is not None:  # a fresh socket drops whatever the old one queued
            self.cloud_link.close(linger_s=0)
            self.cloud_link = Link(self.ctx, self.cloud_address, security=self.security)
            self.cloud_link.bounds = self.listener.bounds
        return self._restore(board, self.snapshot, fallback)

    def _without_cloud(self, exc: Exception) -> None:
        """The cloud did not answer (at job start, or while the board was being brought
        back): its units move to this edge, and it is asked back between steps (see
        `_probe_cloud`)."""
        self.cloud_lost_at = time.monotonic()
        if self.schedule.uses_cloud(self.spec.num_units):
            self.with_cloud = self.with_cloud or self.schedule
        self.schedule = without_cloud(self.schedule, self.spec.num_units)
        log.warning(
            "lost the cloud (%s); going on without it with schedule %s; check the cloud "
            "host and the link to it",
            exc,
            self.schedule.describe(),
        )
        self.observe.tier_lost("cloud", str(exc))
        if self.listener.bounds is not None:
            self.listener.bounds = self.listener.bounds.with_schedule(self.schedule)
        if self.cloud_link is not None:  # a fresh socket drops whatever the old one queued
            self.cloud_link.close(linger_s=0)
            self.cloud_link = Link(self.ctx, self.cloud_address, security=self.security)
            self.cloud_link.bounds = self.listener.bounds

    def _probe_cloud(self, board: Mailbox, cloud: Mailbox | None, step: int) -> Mailbox | None:
        """While the cloud is lost, ping it between steps; tell the board when it answers."""
        if self.cloud_lost_at is None or self.cloud_link is None:
            return cloud
        if time.monotonic() - self.cloud_lost_at < CLOUD_PROBE_EVERY_S:
            return cloud
        self.cloud_lost_at = time.monotonic()
        try:
            self._ping_cloud(0.05)
        except PeerLostError:
            return cloud
        self.cloud_lost_at, self.with_cloud = None, None
        self.observe.tier_returned("cloud")
        log.warning("the cloud answers again; telling board %s it may use it", self.board_id)
        board.send({"type": "tiers", "step": step, "cloud_ok": True})
        return cloud

    def _ping_cloud(self, timeout_s: float) -> None:
        """Ask the cloud whether it is there; PeerLostError when no pong comes in time."""
        assert self.cloud_link is not None
        self.cloud_link.send({"type": "ping", "step": 0})
        deadline, wait = Deadline(timeout_s), timeout_s
        while self.cloud_link.recv(wait, "pong")["type"] != "pong":
            wait = max(0.0, deadline.left())  # that was a late reply of an earlier job

    def _setup_cloud(
        self, step: int, schedule: Schedule, units: dict[str, Any], opt: dict[str, Any]
    ) -> Mailbox:
        """Give the cloud the job, the schedule and its units; wait until it is ready."""
        if self.cloud_link is None:
            raise ConfigError(
                f"schedule {schedule.describe()} runs units on the cloud; give --cloud HOST"
            )
        cloud = Mailbox(self.cloud_link, name="the cloud", meter=self.bw_ec)
        cloud.generation = self.generation
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
        # Wait until the board has the model: over a slow uplink it may take a while to
        # arrive, and an edge run with --once must not exit before.
        try:
            board.expect("done", step, self.job.step_timeout_s)
        except (PeerLostError, RemoteAbort) as exc:
            log.warning(
                "job %s: board %s did not confirm the final model (%s)", job_id, self.board_id, exc
            )
        log.info("job %s finished after %d steps; model gathered from all tiers", job_id, step)
