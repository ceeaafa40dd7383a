"""Weight-space ensembling (WiSE-FT, Wortsman et al., 2022): theta = (1 - alpha) theta_0 + alpha theta_1.

Fine-tuning a contrastive model on one task often costs zero-shot accuracy elsewhere; mixing the weights of
the pretrained (alpha = 0) and fine-tuned (alpha = 1) models of one architecture recovers much of it while
keeping most of the target-task gain, at no inference cost.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from mumo.errors import CheckpointError


def interpolate_state_dicts(
    pretrained: dict[str, Tensor], finetuned: dict[str, Tensor], alpha: float
) -> dict[str, Tensor]:
    """``(1 - alpha) * pretrained + alpha * finetuned`` for every floating-point tensor; other tensors
    (integer buffers, step counters) come from ``finetuned``. Both must hold the same keys and shapes."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0: pretrained, 1: fine-tuned), got {alpha}")
    missing, extra = sorted(set(finetuned) - set(pretrained)), sorted(set(pretrained) - set(finetuned))
    shapes = sorted(k for k in set(pretrained) & set(finetuned) if pretrained[k].shape != finetuned[k].shape)
    if missing or extra or shapes:
        raise CheckpointError(
            "the two models differ, so their weights cannot be mixed: only in the fine-tuned "
            f"{missing[:4]}, only in the pretrained {extra[:4]}, other shapes {shapes[:4]}; "
            "interpolate a model with its own fine-tuned copy (same config)"
        )
    out = {}
    for key, tuned in finetuned.items():
        base = pretrained[key]
        if tuned.is_floating_point():
            out[key] = torch.lerp(base.to(tuned.dtype), tuned, alpha)  # exact at alpha 0 and 1
        else:
            out[key] = tuned.clone()
    return out


def interpolate_models(pretrained: nn.Module, finetuned: nn.Module, alpha: float) -> nn.Module:
    """A copy of ``finetuned`` whose weights are mixed with ``pretrained``'s (see
    :func:`interpolate_state_dicts`); neither input is modified."""
    mixed = copy.deepcopy(finetuned)
    state = interpolate_state_dicts(pretrained.state_dict(), finetuned.state_dict(), alpha)
    mixed.load_state_dict(state, strict=True)
    return mixed
