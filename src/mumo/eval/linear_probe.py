"""Linear probe (Radford et al., 2021, section 3.2): logistic regression on frozen image features.

Notation: N samples, E feature width, C classes.

As in CLIP's evaluation, the L2 penalty is chosen on a validation split, then the classifier is refit on
train + validation with it and scored once on the test split. The solver is full-batch L-BFGS in float64
on standardized features: the objective is smooth and strictly convex, so it converges to the one optimum
and the result does not depend on a learning rate or a batch order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mumo.errors import ConfigError
from mumo.inference import embed_images

# Penalties swept on the validation split: CLIP sweeps sklearn's C over 1e-6 … 1e6; with our objective
# (mean cross-entropy + l2 * ||W||^2) these cover the same range for a few thousand samples.
DEFAULT_L2_GRID: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass
class LogisticRegression:
    """A fitted multinomial logistic regression: ``logits = ((x - mean) / std) @ weight.T + bias``.

    ``weight`` (C, E), ``bias`` (C,), ``mean`` and ``std`` (E,) float64 tensors.
    """

    weight: Tensor
    bias: Tensor
    mean: Tensor
    std: Tensor

    def logits(self, features: Tensor) -> Tensor:
        """(N, E) features -> (N, C) float64 logits."""
        x = (features.to(torch.float64) - self.mean) / self.std
        return x @ self.weight.T + self.bias

    def predict(self, features: Tensor) -> Tensor:
        """(N, E) -> (N,) predicted class indices."""
        return self.logits(features).argmax(dim=1)

    def accuracy(self, features: Tensor, labels: Tensor) -> float:
        """Fraction of (N, E) features whose predicted class equals ``labels`` (N,)."""
        return float((self.predict(features) == labels).double().mean())


def _check(features: Tensor, labels: Tensor, what: str) -> None:
    if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
        raise ConfigError(
            f"{what}: features must be (N, E) and labels (N,) with the same N, "
            f"got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    if features.shape[0] == 0:
        raise ConfigError(f"{what}: no samples")


def fit_logistic_regression(
    features: Tensor, labels: Tensor, num_classes: int, l2: float, max_iter: int = 500
) -> LogisticRegression:
    """Minimise ``mean_i CE(W x_i + b, y_i) + l2 * ||W||^2`` over W (C, E) and b (C,) by L-BFGS.

    Features (N, E) are standardized with their own mean and std first (kept in the result), so that one
    penalty grid suits any feature scale. The bias is not penalised.
    """
    _check(features, labels, "fit_logistic_regression")
    if l2 < 0:
        raise ConfigError(f"l2 must be >= 0, got {l2}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        lo, hi = int(labels.min()), int(labels.max())
        raise ConfigError(f"labels must lie in [0, {num_classes}), got {lo}..{hi}; pass num_classes")
    x = features.detach().to(torch.float64)
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-8)
    x = (x - mean) / std
    y = labels.to(torch.long)
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def objective() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(objective)
    return LogisticRegression(weight.detach(), bias.detach(), mean, std)


def sweep_l2(
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    num_classes: int,
    l2_grid: Sequence[float],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, dict[float, float], LogisticRegression]:
    """Fit on ``train`` at every penalty of ``l2_grid`` and score on ``val`` (pairs of features (N, E) and
    labels (N,)); returns (the best penalty, ties going to the stronger one, the safer choice on few samples;
    validation accuracy per penalty; the best penalty's fit). ``progress`` is called with (fits done, fits
    in all) after each fit."""
    fits = {}
    for i, l2 in enumerate(l2_grid):
        fits[float(l2)] = fit_logistic_regression(*train, num_classes, l2)
        if progress is not None:
            progress(i + 1, len(l2_grid))
    scores = {l2: fit.accuracy(*val) for l2, fit in fits.items()}
    best = max(scores, key=lambda l2: (scores[l2], l2))
    return best, scores, fits[best]


@dataclass
class ProbeResult:
    """Outcome of :func:`linear_probe`: test accuracy with the chosen penalty, and the sweep behind it."""

    accuracy: float  # on the test split, after refitting on train + validation
    l2: float  # the penalty with the best validation accuracy (the larger one on ties)
    val_accuracy: dict[float, float] = field(default_factory=dict)  # penalty -> validation accuracy
    classifier: LogisticRegression | None = None

    def to_dict(self) -> dict[str, object]:
        return {"accuracy": self.accuracy, "l2": self.l2, "val_accuracy": dict(self.val_accuracy)}


def linear_probe(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int | None = None,
    val: tuple[Tensor, Tensor] | None = None,
    val_fraction: float = 0.2,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> ProbeResult:
    """Logistic-regression probe of frozen features with the L2 penalty chosen on validation.

    Args:
        train, test: (features (N, E), labels (N,)) pairs.
        num_classes: C; defaults to 1 + the largest label seen.
        val: a validation pair; when None, ``val_fraction`` of ``train`` is held out (seeded shuffle).
        l2_grid: penalties to try; ties go to the stronger penalty, the safer choice on few samples.
        seed: the shuffle of the held-out validation samples.
        progress: called with (fits done, fits in all: one per penalty and the final refit) after each.
    """
    _check(*train, "linear_probe train")
    _check(*test, "linear_probe test")
    if not l2_grid:
        raise ConfigError("l2_grid is empty; give at least one penalty")
    c = num_classes if num_classes is not None else 1 + int(max(train[1].max(), test[1].max()))
    if val is None:
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
        n = train[0].shape[0]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        n_val = max(1, int(round(n * val_fraction)))
        if n_val >= n:
            raise ConfigError(f"{n} training samples are too few to hold out a validation split")
        fit, held = order[n_val:], order[:n_val]
        fit_pair, val = (train[0][fit], train[1][fit]), (train[0][held], train[1][held])
        full = train
    else:
        _check(*val, "linear_probe val")
        fit_pair = train
        full = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
    total = len(l2_grid) + 1
    sweep_progress = (lambda done, _: progress(done, total)) if progress is not None else None
    best, scores, _ = sweep_l2(fit_pair, val, c, l2_grid, sweep_progress)
    final = fit_logistic_regression(*full, c, best)
    if progress is not None:
        progress(total, total)
    return ProbeResult(final.accuracy(*test), best, scores, final)


def probe_images(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor] | None = None,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> ProbeResult:
    """:func:`linear_probe` on a model's frozen image embeddings of (images (N, 3, H, W), labels (N,))
    pairs; the model is only read (eval mode, no gradients). ``progress`` is called with (steps done, steps
    in all) after each step: embedding a split, then each fit of :func:`linear_probe`."""
    splits = 2 if val is None else 3
    total = splits + len(l2_grid) + 1
    done = 0

    def embed(pair: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        nonlocal done
        embedded = embed_images(model, pair[0], batch_size=batch_size).cpu(), pair[1]
        done += 1
        if progress is not None:
            progress(done, total)
        return embedded

    held = embed(val) if val is not None else None
    fits = (lambda n, _: progress(splits + n, total)) if progress is not None else None
    return linear_probe(embed(train), embed(test), val=held, l2_grid=l2_grid, progress=fits)
