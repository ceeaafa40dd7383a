"""Multi-head attention pooling (MAP; Lee et al., 2019, Set Transformer's PMA; Zhai et al., 2022 for ViTs):
a learned probe query attends over every token, then a pre-norm MLP adds a residual. SigLIP's image towers
pool this way instead of with a class token.

latent (1, 1, C) --q--\\
tokens (B, N, C) --kv--> attention -> proj -> x;   x = x + mlp(norm(x))   -> (B, C)

Parameter names follow timm's ``AttentionPoolLatent`` (``latent``, ``q``, ``kv``, ``proj``, ``norm``,
``mlp``), so timm / OpenCLIP weights load by prefix; Hugging Face's ``SiglipMultiheadAttentionPoolingHead``
is the same computation with q/k/v packed in one ``in_proj``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mumo.layers.attention import attend
from mumo.layers.mlp import MlpType, build_mlp
from mumo.layers.norm import NormType, build_norm


class AttentionPoolLatent(nn.Module):
    """One learned query attends over (B, N, C) tokens; returns (B, C).

    Args:
        dim: token width C.
        num_heads: attention heads (C must divide by it).
        mlp_ratio: MLP hidden width / C.
        mlp_type: the MLP's activation ('gelu', 'gelu_tanh', ...).
        norm_type, norm_eps: the norm before the MLP.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        mlp_type: MlpType = "gelu",
        norm_type: NormType = "layernorm",
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}; pick a divisor")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = build_norm(norm_type, dim, norm_eps)
        self.mlp = build_mlp(mlp_type, dim, mlp_ratio)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, N, C) tokens -> (B, C)."""
        b, n, _ = tokens.shape
        q = self.q(self.latent).view(1, 1, self.num_heads, self.head_dim).transpose(1, 2)  # (1, H, 1, D)
        q = q.expand(b, -1, -1, -1)  # (B, H, 1, D)
        k, v = self.kv(tokens).view(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = self.proj(attend(q, k, v))  # (B, 1, C)
        x = x + self.mlp(self.norm(x))
        return x[:, 0]
