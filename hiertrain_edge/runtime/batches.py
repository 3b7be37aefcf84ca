"""The order in which the board draws training samples: one seeded shuffle per epoch."""

from __future__ import annotations

import torch

from hiertrain_edge.runtime.job import steps_per_epoch


class BatchOrder:
    """Sample indices of step s; the same on the board and in the single-process reference."""

    def __init__(self, n_train: int, batch_size: int, seed: int) -> None:
        self.n_train = n_train
        self.batch_size = batch_size
        self.seed = seed
        self.per_epoch = steps_per_epoch(n_train, batch_size)
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.int64)

    def indices(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perm = torch.randperm(self.n_train, generator=gen)
            self._epoch = epoch
        return self._perm[k * self.batch_size : (k + 1) * self.batch_size]
