"""Normalization layers: LayerNorm (the CLIP / ViT default) and RMSNorm (Zhang & Sennrich, 2019)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

NormType = Literal["layernorm", "rmsnorm"]


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dim, computed in float32 for stability."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return out.to(x.dtype) * self.weight


def build_norm(kind: NormType, dim: int, eps: float = 1e-5) -> nn.Module:
    """The normalization layer named ``kind`` over a last dimension of size ``dim``."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown norm type {kind!r}; use 'layernorm' or 'rmsnorm'")
