"""A batch sampler whose order depends only on (seed, epoch), so a run can resume at any batch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from mumo.errors import ConfigError


class ResumableBatchSampler(Sampler[list[int]]):
    """Yields lists of ``batch_size`` indices from a seeded permutation per epoch, forever.

    Batch ``g`` (counted from the start of training) is always the same indices, whatever happened
    before: epoch ``g // batches_per_epoch`` is a permutation of ``range(n)`` drawn from
    ``(seed, epoch)``, and the last incomplete batch of an epoch is dropped.

    Args:
        n: data set size.
        batch_size: indices per batch.
        seed: seed of every epoch's permutation.
        start: global index of the first batch to yield (resuming).
        rank, world_size: each of ``world_size`` processes takes every ``world_size``-th index of a batch
            of ``batch_size * world_size``.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1
    ):
        if n < batch_size * world_size:
            raise ConfigError(
                f"data set of {n} samples is smaller than one global batch ({batch_size * world_size}); "
                "lower batch_size or add data"
            )
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = n // (batch_size * world_size)

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[list[int]]:
        g = self.start
        perm, perm_epoch = None, -1
        global_batch = self.batch_size * self.world_size
        while True:
            epoch, j = divmod(g, self.batches_per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = self._permutation(epoch), epoch
            chunk = perm[j * global_batch : (j + 1) * global_batch]
            yield chunk[self.rank :: self.world_size].tolist()
            g += 1

    def __len__(self) -> int:
        return self.batches_per_epoch
