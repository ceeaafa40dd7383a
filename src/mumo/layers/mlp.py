"""Feed-forward blocks: the classic two-layer MLP (GELU / its tanh approximation / QuickGELU) and SwiGLU
(Shazeer, 2020)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MlpType = Literal["gelu", "gelu_tanh", "quick_gelu", "swiglu"]
# gelu_tanh: GELU's tanh approximation, which Hugging Face's SigLIP towers use (gelu_pytorch_tanh); timm's
# SigLIP ViT and OpenCLIP's text tower use the exact erf form ("gelu"). The two differ by up to ~1e-3.


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI's CLIP weights were trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class Mlp(nn.Module):
    """Linear -> activation -> linear. (B, T, C) -> (B, T, C)."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        act: Literal["gelu", "gelu_tanh", "quick_gelu"] = "gelu",
        bias: bool = True,
    ):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act: nn.Module
        if act == "quick_gelu":
            self.act = QuickGELU()
        else:
            self.act = nn.GELU(approximate="tanh" if act == "gelu_tanh" else "none")
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """SiLU(x W1) * (x W3), then W2. One fused W1|W3 projection keeps it to two GEMMs forward.

    ``hidden_dim`` is the width of the gated product; pass ``2/3`` of an MLP's hidden width to keep the
    parameter count of a GELU MLP, as LLaMA does.
    """

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * up)


def build_mlp(kind: MlpType, dim: int, mlp_ratio: float, bias: bool = True) -> nn.Module:
    """The feed-forward block named ``kind`` with hidden width ``dim * mlp_ratio``."""
    hidden = int(dim * mlp_ratio)
    if kind == "swiglu":
        return SwiGLU(dim, int(hidden * 2 / 3), bias=bias)
    if kind in ("gelu", "gelu_tanh", "quick_gelu"):
        return Mlp(dim, hidden, act=kind, bias=bias)
    raise ValueError(f"unknown mlp type {kind!r}; use 'gelu', 'gelu_tanh', 'quick_gelu' or 'swiglu'")
