"""Multi-task learning: how tasks share parameters and how their losses are weighed.

Sharing (Ruder, 2017, "An overview of multi-task learning in deep neural networks"):
    hard: one backbone, one head per task (the fusion model's ITC, ITM and MLM all read one text tower);
    soft: each task has its own tower, and an L2 penalty ``strength * sum ||theta_a - theta_b||^2`` keeps
          the towers close (Duong et al., 2015) -- see :func:`tie_penalty` and ``FusionConfig.text_sharing``.

Weighting of the task losses L_i:
    fixed: sum w_i L_i with weights from config;
    uncertainty (Kendall, Gal and Cipolla, 2018): sum 0.5 exp(-s_i) L_i + 0.5 s_i with s_i = log sigma_i^2
          learned alongside the model; a task whose loss stays large gets a larger sigma, hence less weight,
          and the 0.5 s_i term stops every sigma from growing without bound (the optimum is s_i = log L_i).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mumo.errors import ConfigError


def tie_penalty(a: nn.Module, b: nn.Module) -> Tensor:
    """sum over parameters of ||theta_a - theta_b||^2 for two modules of the same architecture.

    Zero when the modules are equal; its gradient, 2 (theta_a - theta_b) for ``a`` and the opposite for
    ``b``, pulls each toward the other.
    """
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    if pa.keys() != pb.keys():
        only = sorted(pa.keys() ^ pb.keys())[:5]
        raise ConfigError(f"soft sharing needs towers of the same architecture; parameters differ: {only}")
    total = next(iter(pa.values())).new_zeros(())
    for name, p in pa.items():
        q = pb[name]
        if p.shape != q.shape:
            raise ConfigError(
                f"soft sharing: {name} is {tuple(p.shape)} in one tower, {tuple(q.shape)} in the other"
            )
        total = total + (p - q).pow(2).sum()
    return total


class FixedWeighting(nn.Module):
    """sum_i w_i L_i; a loss without a weight counts once."""

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.weights = dict(weights or {})

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        """Named scalar losses -> their weighted sum (a scalar)."""
        return sum(self.weights.get(k, 1.0) * v for k, v in losses.items())  # type: ignore[return-value]

    def weights_now(self) -> dict[str, float]:
        """The weight of each named loss (those not listed are 1)."""
        return dict(self.weights)


class UncertaintyWeighting(nn.Module):
    """Kendall et al. (2018): sum_i 0.5 exp(-s_i) L_i + 0.5 s_i, one learned s_i = log sigma_i^2 per task.

    Args:
        names: the losses it weighs; any other loss (e.g. a soft-sharing penalty, which is a constraint and
            not a task) is added with weight 1.
        fixed: weights of losses outside ``names`` (default 1).
    """

    def __init__(self, names: Sequence[str], fixed: Mapping[str, float] | None = None) -> None:
        super().__init__()
        if not names:
            raise ConfigError("uncertainty weighting needs at least one task loss")
        self.names = list(names)
        self.log_vars = nn.Parameter(torch.zeros(len(self.names)))  # s_i = 0: every weight starts at 0.5
        self.fixed = dict(fixed or {})

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        """Named scalar losses -> the weighted sum plus the 0.5 s_i regularizer (a scalar)."""
        total = self.log_vars.new_zeros(())
        for k, v in losses.items():
            if k in self.names:
                s = self.log_vars[self.names.index(k)]
                total = total + 0.5 * torch.exp(-s) * v + 0.5 * s
            else:
                total = total + self.fixed.get(k, 1.0) * v
        return total

    def weights_now(self) -> dict[str, float]:
        """The current weight 0.5 exp(-s_i) of each task loss."""
        w = (0.5 * torch.exp(-self.log_vars.detach())).tolist()
        return {**self.fixed, **dict(zip(self.names, w, strict=True))}


def build_weighting(kind: str, names: Sequence[str], weights: Mapping[str, float]) -> nn.Module:
    """'fixed' -> :class:`FixedWeighting` (``weights``); 'uncertainty' -> :class:`UncertaintyWeighting` over
    ``names`` (``weights`` then applies to the other losses only)."""
    if kind == "fixed":
        return FixedWeighting(weights)
    if kind == "uncertainty":
        return UncertaintyWeighting(names, fixed=weights)
    raise ConfigError(f"loss_weighting must be 'fixed' or 'uncertainty', got {kind!r}")
