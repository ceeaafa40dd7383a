"""Batch norm whose statistics span every process: a step over ranks then equals one over the global batch.

Under DDP each rank sees only its share of the batch, so plain batch norm would normalise each share by
its own mean and variance: a different model than one process trains on the whole batch.
``torch.nn.SyncBatchNorm`` fixes that on GPUs only; :class:`SyncBatchNorm` here does it with any backend
(gloo on CPU included), with two all-reduces per layer that carry gradients (``torch.distributed.nn``), so
the backward pass is the global batch's too.

Notation: B samples on this rank, C channels, N samples x positions over all ranks.

    mean = sum_ranks(sum(x)) / N                          (C,)   first all-reduce: sums and counts
    var  = sum_ranks(sum((x - mean)^2)) / N               (C,)   second: centred, so no cancellation
    y    = (x - mean) / sqrt(var + eps) * weight + bias
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce(t: Tensor) -> Tensor:
    """Sum over ranks; its gradient is the sum of every rank's gradient (what makes the backward global)."""
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over (B, C, ...) inputs that, in training, takes its statistics over every rank's batch
    (inside a process group; over this process's batch without one), computed in two passes with
    PyTorch's pairwise sums. Evaluation is plain batch norm with the running statistics. Same parameters,
    buffers and state-dict keys as ``nn.BatchNorm{1,2,3}d``; make one with :func:`sync_batch_norm`.

    (Also more exact than PyTorch's CPU kernel on channels-last activations, which sums each channel's
    statistics sequentially in float32: over 131,072 values it misses a batch mean by ~1e-3, where these
    sums stay within ~1e-7. It is slower, so one process keeps ``nn.BatchNorm2d``.)"""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected (B, C, ...) input, got {input.dim()} dimensions")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        self._check_input_dim(x)
        reduce = _all_reduce if _world_size() > 1 else (lambda t: t)
        shape = (1, -1) + (1,) * (x.dim() - 2)  # broadcast (C,) over (B, C, ...)
        dims = [0, *range(2, x.dim())]
        count = x.new_full((1,), x.numel() / x.shape[1])
        totals = reduce(torch.cat([x.sum(dims), count]))  # (C + 1,)
        n = totals[-1]
        mean = totals[:-1] / n
        centred = x - mean.view(shape)
        var = reduce(centred.pow(2).sum(dims)) / n  # (C,) biased, as batch norm normalises
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
                )
                unbiased = var * (n / (n - 1).clamp(min=1))  # the running variance is unbiased
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(unbiased.detach(), momentum)
        return y


def sync_batch_norm(module: nn.Module) -> int:
    """Replace every batch-norm layer inside ``module`` by a :class:`SyncBatchNorm` that takes over its very
    parameters and buffers (trainable or frozen, on their device), in place; returns how many."""
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SyncBatchNorm):
            sync = SyncBatchNorm(child.num_features, child.eps, child.momentum, False, False)
            sync.affine, sync.track_running_stats = child.affine, child.track_running_stats
            for key, value in [*child.named_parameters(recurse=False), *child.named_buffers(recurse=False)]:
                setattr(sync, key, value)
            sync.train(child.training)
            setattr(module, name, sync)
            replaced += 1
        else:
            replaced += sync_batch_norm(child)
    return replaced
