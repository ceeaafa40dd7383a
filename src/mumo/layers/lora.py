"""LoRA (Hu et al., 2021): a frozen linear layer plus a trainable low-rank update.

    y = W x + b + (alpha / r) * B A dropout(x),   A (r, in) random, B (out, r) zero

B starts at zero, so a freshly wrapped model computes exactly what it did before. Only A and B train; the
update can be merged into W for inference (no extra cost) and unmerged again, and saved on its own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_ADAPTER_KEYS = (".lora_a", ".lora_b")  # state-dict suffixes of the adapter tensors


class LoRALinear(nn.Module):
    """Wrap ``base`` (an ``nn.Linear``, frozen here) with a rank-``rank`` update scaled by ``alpha / rank``.

    Args:
        base: the linear layer to adapt; its weight and bias stop requiring gradients.
        rank: r, the update's rank.
        alpha: the update is scaled by alpha / r, so that changing r does not change the step size.
        dropout: dropout on the update's input only (the frozen path sees x as is).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.rank, self.scale = rank, alpha / rank
        for p in base.parameters():
            p.requires_grad_(False)
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear and the reference code
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> Tensor:  # so that code reading .weight (e.g. tied heads) still works
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def delta(self) -> Tensor:
        """The update (out, in) that merging adds to the frozen weight."""
        return (self.lora_b @ self.lora_a) * self.scale

    def forward(self, x: Tensor) -> Tensor:
        """(…, in) -> (…, out)."""
        out = self.base(x)
        if self.merged:
            return out
        return out + F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b) * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the frozen weight: one matmul at inference, same outputs."""
        if not self.merged:
            self.base.weight += self.delta().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update back out of the weight (to train on, or to save the adapter alone)."""
        if self.merged:
            self.base.weight -= self.delta().to(self.base.weight.dtype)
            self.merged = False


def apply_lora(
    model: nn.Module,
    targets: Sequence[str],
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
) -> list[str]:
    """Replace every ``nn.Linear`` of ``model`` whose qualified name matches one of ``targets`` (regular
    expressions searched in the name, e.g. ``"attn.qkv"``, ``"mlp"``, ``r"visual\\..*proj"``) by a
    :class:`LoRALinear`, then freeze everything but the adapters. Returns the adapted names, sorted.

    Raises ValueError when no linear layer matches, so that a typo in a target is not a silent no-op.
    """
    patterns = [re.compile(t) for t in targets]
    chosen = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(p.search(name) for p in patterns)
    ]
    if not chosen:
        linears = sorted(n for n, m in model.named_modules() if isinstance(m, nn.Linear))
        raise ValueError(
            f"no linear layer matches LoRA targets {list(targets)}; some of the model's are: "
            f"{', '.join(linears[:8])}"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    return sorted(chosen)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every :class:`LoRALinear` of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> None:
    """Merge every adapter of ``model`` into its frozen weight."""
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Take every merged adapter of ``model`` back out of its weight."""
    for layer in lora_layers(model).values():
        layer.unmerge()


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapters alone (``….lora_a`` and ``….lora_b`` tensors): a few hundred KB to save, not the model."""
    return {
        k: v.detach().clone() for k, v in model.state_dict().items() if k.endswith((".lora_a", ".lora_b"))
    }


def load_lora_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load adapters saved by :func:`lora_state_dict` into a model wrapped with the same targets and rank.

    Every adapter tensor of the model must be given and every given tensor must be used; shapes must agree.
    """
    own = {k: v for k, v in model.state_dict().items() if k.endswith(_ADAPTER_KEYS)}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"LoRA adapter does not fit this model: missing {missing[:4]}, unexpected {unexpected[:4]}, "
            f"wrong shape {wrong[:4]}; wrap the model with the adapter's targets and rank (apply_lora) first"
        )
    merged = [layer for layer in lora_layers(model).values() if layer.merged]
    for layer in merged:
        layer.unmerge()
    model.load_state_dict(state, strict=False)
    for layer in merged:
        layer.merge()
