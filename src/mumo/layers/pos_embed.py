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


def rope_tables(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """Rotary position embedding (RoFormer, Su et al. 2021) of ``positions`` (T,) or (B, T): the cos and
    sin of each (position, frequency) angle, each (B|1, 1, T, head_dim / 2), for :func:`apply_rope`.

    Frequencies are base^(-2i / head_dim) as in RoFormer and LLaMA, computed in float64 so that long
    positions keep their precision, then cast to float32.
    """
    if head_dim % 2:
        raise ValueError(f"rotary embedding needs an even head width, got {head_dim}")
    inv_freq = base ** -(
        torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim
    )
    angles = positions.to(torch.float64)[..., None] * inv_freq  # (B|, T, D/2)
    if angles.dim() == 2:
        angles = angles[None]
    angles = angles[:, None]  # (B|1, 1, T, D/2): one table for every head
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, tables: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate queries or keys (B, H, T, D) by their positions' angles (:func:`rope_tables`).

    Dimension i is paired with i + D/2 (the "rotate half" layout of GPT-NeoX and Hugging Face LLaMA), so
    that the dot product of a query at m and a key at n depends on their positions only through m - n.
    """
    cos, sin = (t.to(x.dtype) for t in tables)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
