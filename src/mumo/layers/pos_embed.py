"""Position embeddings: learned tables and fixed sin-cos codes (1-D, and 2-D for image grids)."""

from __future__ import annotations

import torch
from torch import Tensor


def sincos_1d(positions: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """Transformer sin-cos code of ``positions`` (N,) -> (N, dim): first half sin, second half cos."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even width, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2)
    omega = 1.0 / temperature**omega  # (dim/2,)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # (N, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """2-D sin-cos code for a (grid_h, grid_w) patch grid, row-major -> (grid_h * grid_w, dim).

    Half of the width encodes the row, half the column (MAE, Kaiming He et al. 2021).
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    emb_h = sincos_1d(rows.reshape(-1), dim // 2, temperature)
    emb_w = sincos_1d(cols.reshape(-1), dim // 2, temperature)
    return torch.cat([emb_h, emb_w], dim=1)
