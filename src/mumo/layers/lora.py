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


class _LoRA(nn.Module):
    """What every LoRA layer shares: a frozen ``base`` layer, ``lora_a`` / ``lora_b``, the alpha / r scale,
    and exact merge / unmerge of the update ``delta()`` into the base weight."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.rank, self.scale = rank, alpha / rank
        for p in base.parameters():
            p.requires_grad_(False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def weight(self) -> Tensor:  # so that code reading .weight (e.g. tied heads) still works
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def delta(self) -> Tensor:
        """The update, shaped like the base weight, that merging adds to it."""
        raise NotImplementedError

    def update(self, x: Tensor) -> Tensor:
        """The low-rank path's output for input ``x`` (before scaling)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + self.update(self.dropout(x)) * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the frozen weight: one layer at inference, same outputs."""
        if not self.merged:
            self.base.weight += self.delta().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update back out of the weight (to train on, or to save the adapter alone)."""
        if self.merged:
            self.base.weight -= self.delta().to(self.base.weight.dtype)
            self.merged = False


class LoRALinear(_LoRA):
    """Wrap ``base`` (an ``nn.Linear``, frozen here) with a rank-``rank`` update scaled by ``alpha / rank``.

    Args:
        base: the linear layer to adapt; its weight and bias stop requiring gradients.
        rank: r, the update's rank.
        alpha: the update is scaled by alpha / r, so that changing r does not change the step size.
        dropout: dropout on the update's input only (the frozen path sees x as is).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__(base, rank, alpha, dropout)
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear and the reference code

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta(self) -> Tensor:
        """(out, in)."""
        return (self.lora_b @ self.lora_a) * self.scale

    def update(self, x: Tensor) -> Tensor:
        """(…, in) -> (…, out)."""
        return F.linear(F.linear(x, self.lora_a), self.lora_b)


class LoRAConv2d(_LoRA):
    """LoRA on a convolution (as in the authors' ``loralib``): ``A`` is a rank-r convolution with the base's
    kernel, stride and padding, ``B`` a 1×1 convolution back to the output channels, so the update is the
    (out, in, kh, kw) kernel ``B @ A`` and merges exactly. Arguments as :class:`LoRALinear`."""

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float, dropout: float = 0.0) -> None:
        if base.groups != 1 or base.padding_mode != "zeros":
            raise ValueError("LoRA supports plain convolutions only (groups=1, zero padding)")
        super().__init__(base, rank, alpha, dropout)
        w = base.weight  # (out, in, kh, kw)
        self.lora_a = nn.Parameter(torch.empty(rank, *w.shape[1:], dtype=w.dtype, device=w.device))
        self.lora_b = nn.Parameter(torch.zeros(w.shape[0], rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def delta(self) -> Tensor:
        """(out, in, kh, kw)."""
        a = self.lora_a
        return (self.lora_b @ a.flatten(1)).view(-1, *a.shape[1:]) * self.scale

    def update(self, x: Tensor) -> Tensor:
        """(B, in, H, W) -> (B, out, H', W')."""
        c = self.base
        low = F.conv2d(x, self.lora_a, None, c.stride, c.padding, c.dilation)
        return F.conv2d(low, self.lora_b[:, :, None, None])


_WRAPPERS: dict[type[nn.Module], type[_LoRA]] = {nn.Linear: LoRALinear, nn.Conv2d: LoRAConv2d}


def apply_lora(
    model: nn.Module,
    targets: Sequence[str],
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
) -> list[str]:
    """Replace every ``nn.Linear`` (:class:`LoRALinear`) and ``nn.Conv2d`` (:class:`LoRAConv2d`) of
    ``model`` whose qualified name matches one of ``targets`` (regular expressions searched in the name,
    e.g. ``"attn.qkv"``, ``"mlp"``, ``r"visual\\.stages"``), then freeze everything but the adapters.
    Returns the adapted names, sorted.

    Raises ValueError when no layer matches, so that a typo in a target is not a silent no-op.
    """
    patterns = [re.compile(t) for t in targets]
    adaptable = [(n, m) for n, m in model.named_modules() if type(m) in _WRAPPERS]
    chosen = [(n, m) for n, m in adaptable if any(p.search(n) for p in patterns)]
    if not chosen:
        raise ValueError(
            f"no linear or conv layer matches LoRA targets {list(targets)}; some of the model's are: "
            f"{', '.join(sorted(n for n, _ in adaptable)[:8])}"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _WRAPPERS[type(module)](module, rank, alpha, dropout))
    return sorted(n for n, _ in chosen)


def lora_layers(model: nn.Module) -> dict[str, _LoRA]:
    """Every LoRA layer of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _LoRA)}


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


def merged_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict of ``model`` with every adapter merged and the LoRA wrapping gone: the keys and values
    of the plain model it adapts (``….qkv.weight``, not ``….qkv.base.weight``), loadable without LoRA.
    The model itself is left as it was (merged or not)."""
    layers = lora_layers(model)
    state = dict(model.state_dict())
    for name, layer in layers.items():
        prefix = f"{name}." if name else ""
        del state[prefix + "lora_a"], state[prefix + "lora_b"]
        for key in [k for k in state if k.startswith(prefix + "base.")]:
            value = state.pop(key)
            plain = prefix + key[len(prefix + "base.") :]
            if plain == prefix + "weight" and not layer.merged:
                value = value + layer.delta().detach().to(value.dtype)
            state[plain] = value
    return state
