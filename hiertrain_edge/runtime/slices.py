"""A tier's layer slice: the units it runs or owns, their forward and backward per group,
the gradient sum for replicated units, and the optimizer over the units it owns."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hiertrain_edge.models import ModelSpec, build_units
from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.runtime.job import Job

UnitTensors = dict[str, dict[str, torch.Tensor]]  # str(unit index) -> name -> tensor


def make_optimizer(job: Job, params: list[nn.Parameter]) -> torch.optim.Optimizer | None:
    """SGD with momentum or Adam; both are per-parameter, so splitting the parameters
    over one optimizer per tier gives exactly the updates of one optimizer over all."""
    if not params:
        return None
    if job.optimizer == "adam":
        return torch.optim.Adam(params, lr=job.lr, betas=job.betas, weight_decay=job.weight_decay)
    return torch.optim.SGD(params, lr=job.lr, momentum=job.momentum, weight_decay=job.weight_decay)


class TierSlice:
    """The units one tier holds for a schedule, and one step's work on them.

    A tier holds the units its groups run plus those it owns (the edge owns every
    replicated unit, even one it does not run itself).
    """

    def __init__(
        self,
        tier: str,
        spec: ModelSpec,
        job: Job,
        schedule: Schedule,
        units: UnitTensors | None = None,
        opt: dict[str, Any] | None = None,
    ) -> None:
        self.tier = tier
        self.spec = spec
        self.job = job
        self.num_units = spec.num_units
        self.units: dict[int, nn.Module] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self._place(schedule, units or {}, opt or {})
        self.loss_fn = nn.CrossEntropyLoss(reduction="sum")
        self._saved: dict[int, tuple[torch.Tensor, torch.Tensor] | None] = {}
        self.samples: dict[int, int] = {}  # unit -> samples it ran this step

    def _place(self, schedule: Schedule, units: UnitTensors, opt: dict[str, Any]) -> None:
        """Hold the units `schedule` gives this tier, taking received weights from `units`
        and received optimizer state (per unit, one dict per parameter) from `opt`.

        Units kept keep their weights and optimizer state unless received anew; units new
        here are built, then overwritten; units no longer needed are dropped.
        """
        n = self.num_units
        old_state = {}
        if self.optimizer is not None:
            old_state = {p: s for p, s in self.optimizer.state.items() if s}
        self.schedule = schedule
        self.runs = schedule.units_on(self.tier, n)
        self.owns = {u for u in range(n) if schedule.owner(u, n) == self.tier}
        self.replicated = schedule.replicated(self.tier, n)
        held = self.runs | self.owns
        new = held - set(self.units)
        self.units.update(build_units(self.spec, new, self.job.seed))
        for u in set(self.units) - held:
            del self.units[u]
        for unit in self.units.values():
            unit.train()
        self.load_unit_state(units)
        owned_params = [p for u in sorted(self.owns) for p in self.units[u].parameters()]
        self.optimizer = make_optimizer(self.job, owned_params)
        if self.optimizer is None:
            return
        for u in sorted(self.owns):
            moved = opt.get(str(u))
            for i, p in enumerate(self.units[u].parameters()):
                if moved is not None:
                    state = {k: v.clone() for k, v in moved[i].items()}
                else:
                    state = old_state.get(p, {})
                if state:
                    self.optimizer.state[p] = state

    def reconfigure(self, schedule: Schedule, units: UnitTensors, opt: dict[str, Any]) -> None:
        """Switch to `schedule` between steps (see `_place`)."""
        self._place(schedule, units, opt)

    def optimizer_state(self, units: list[int] | set[int]) -> dict[str, Any]:
        """Copies of the optimizer state of owned units: per unit, one dict of tensors per
        parameter (copies for the reason given in `unit_state`)."""
        out: dict[str, Any] = {}
        for u in sorted(units):
            per_param = []
            for p in self.units[u].parameters():
                state = self.optimizer.state.get(p, {}) if self.optimizer is not None else {}
                per_param.append(
                    {k: v.clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
                )
            out[str(u)] = per_param
        return out

    # --- one step ---------------------------------------------------------------

    def begin_step(self) -> None:
        for unit in self.units.values():
            for p in unit.parameters():
                p.grad = None
        self._saved.clear()
        self.samples = dict.fromkeys(self.units, 0)

    def _run(self, a: int, b: int, x: torch.Tensor, input_grad: bool):
        x_in = x.detach().requires_grad_(input_grad)
        h = x_in
        for u in range(a, b):
            h = self.units[u](h)
            self.samples[u] += x.shape[0]
        return x_in, h

    def forward(self, gid: int, a: int, b: int, x: torch.Tensor) -> torch.Tensor:
        """Run units [a, b) for group `gid`, keep the graph for `backward`."""
        if a == b:  # the group only passes through this tier
            self._saved[gid] = None
            return x
        x_in, h = self._run(a, b, x, input_grad=a > 0)
        self._saved[gid] = (x_in, h)
        return h.detach()

    def backward(self, gid: int, grad_out: torch.Tensor | None) -> torch.Tensor | None:
        """Back-propagate group `gid`'s output gradient; return the one w.r.t. its input."""
        saved = self._saved.pop(gid)
        if saved is None:
            return grad_out
        x_in, h = saved
        h.backward(grad_out)
        return x_in.grad if x_in.requires_grad else None

    def forward_loss(
        self, a: int, b: int, x: torch.Tensor, y: torch.Tensor, batch_size: int
    ) -> tuple[float, torch.Tensor | None]:
        """Run units [a, N), add the group's share of the batch-mean loss, back-propagate.

        The loss is summed over the group and divided by the whole batch size, so the
        groups' gradients add up to those of the mean loss over the batch.
        """
        x_in, logits = self._run(a, b, x, input_grad=a > 0)
        loss = self.loss_fn(logits, y) / batch_size
        loss.backward()
        return float(loss.detach()), (x_in.grad if a > 0 else None)

    # --- keeping replicated units identical -------------------------------------

    def replica_grads(self) -> dict[str, Any]:
        """Gradients (and batch-norm buffers) of the units this tier runs but does not own."""
        out: dict[str, Any] = {}
        for u in self.replicated:
            unit = self.units[u]
            out[str(u)] = {
                "grads": [
                    p.grad if p.grad is not None else torch.zeros_like(p)
                    for p in unit.parameters()
                ],
                "buffers": {k: v.clone() for k, v in unit.named_buffers()},
                "samples": self.samples[u],
            }
        return out

    def add_replica_grads(self, replicas: list[dict[str, Any]]) -> None:
        """Sum replicas' gradients into the owned units, and merge their buffers.

        Float buffers (batch-norm running statistics) become the sample-weighted mean of
        every copy that ran this step; integer buffers (batches tracked) the largest.
        """
        for u in sorted(self.owns):
            parts = [r[str(u)] for r in replicas if str(u) in r]
            if not parts:
                continue
            unit = self.units[u]
            for i, p in enumerate(unit.parameters()):
                total = p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                for part in parts:
                    total += part["grads"][i]
                p.grad = total
            weights = [self.samples.get(u, 0)] + [part["samples"] for part in parts]
            if sum(weights) == 0:
                continue
            for name, buf in unit.named_buffers():
                copies = [buf] + [part["buffers"][name] for part in parts]
                if buf.is_floating_point():
                    mixed = sum(w * c for w, c in zip(weights, copies, strict=True)) / sum(weights)
                    buf.copy_(mixed)
                else:
                    buf.copy_(max(copies, key=lambda c: int(c.max()) if c.numel() else 0))

    def same_as_owned(self, replicas: list[UnitTensors]) -> bool:
        """Whether every replica's tensors equal this tier's owned copies bit for bit."""
        for part in replicas:
            for key, tensors in part.items():
                owned = self.units[int(key)].state_dict()
                if any(not torch.equal(owned[name], t) for name, t in tensors.items()):
                    return False
        return True

    def step_optimizer(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()

    # --- moving weights ---------------------------------------------------------

    def unit_state(self, units: list[int] | set[int]) -> UnitTensors:
        """Copies of the units' weights and buffers, never views: the wire sends large
        tensors without copying them after `send` returns, while the next forward pass
        (batch-norm statistics) or optimizer step would change a view in place."""
        return {
            str(u): {k: v.clone() for k, v in self.units[u].state_dict().items()}
            for u in sorted(units)
        }

    def load_unit_state(self, state: UnitTensors) -> None:
        """Copy received weights in; received tensors are read-only frames, never aliased."""
        for key, tensors in state.items():
            unit = self.units[int(key)]
            with torch.no_grad():
                for name, value in unit.state_dict().items():
                    value.copy_(tensors[name])


def full_state(parts: list[UnitTensors]) -> dict[str, torch.Tensor]:
    """Join per-unit states into one `nn.Sequential` state dict ("unit.name" keys)."""
    out: dict[str, torch.Tensor] = {}
    for part in parts:
        for key, tensors in part.items():
            for name, value in tensors.items():
                out[f"{key}.{name}"] = value.clone()
    return out
