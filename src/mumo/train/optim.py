"""AdamW with parameter groups and a cosine schedule with linear warmup."""

from __future__ import annotations

import math

import torch
from torch import nn

from mumo.train.config import OptimConfig
from mumo.train.finetune import layer_lr_scales

# Parameters that are scales, offsets or lookup tables: decaying them toward zero only hurts.
_NO_DECAY_NAMES = ("pos_embed", "cls_token", "token_embed", "logit_scale", "logit_bias")


def param_groups(
    model: nn.Module, weight_decay: float, lr: float | None = None, lr_scales: dict[str, float] | None = None
) -> list[dict]:
    """AdamW groups: weight matrices with ``weight_decay``; norms, biases, embeddings and the temperature
    without. Frozen parameters are left out.

    With ``lr_scales`` (parameter name -> factor, e.g. from layer-wise decay) each distinct factor gets its
    own pair of groups at ``lr * factor``; the schedule then scales every group alike.
    """
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.ndim < 2 or any(key in name for key in _NO_DECAY_NAMES))
        scale = (lr_scales or {}).get(name, 1.0)
        groups.setdefault((decay, scale), []).append(p)
    out = []
    for decay, scale in sorted(groups, key=lambda k: (-k[1], not k[0])):
        group: dict = {"params": groups[decay, scale], "weight_decay": weight_decay if decay else 0.0}
        if scale != 1.0:
            if lr is None:
                raise ValueError("lr_scales need the base lr")
            group["lr"] = lr * scale
        out.append(group)
    return out


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, with layer-wise lr decay when ``config.layer_decay`` < 1."""

    scales = layer_lr_scales(model, config.layer_decay)
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay, config.lr, scales),
        lr=config.lr,
        betas=tuple(config.betas),
        eps=config.eps,
    )


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Learning-rate factor at ``step``: linear 0 -> 1 over warmup, then cosine to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following :func:`cosine_with_warmup`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, config.warmup_steps, total_steps, config.min_lr_ratio)
    )
