"""Transformer building blocks, one concept per file."""

from mumo.layers.attention import (
    CrossAttention,
    KVCache,
    SelfAttention,
    attend,
    causal_mask,
    combine_masks,
    padding_mask,
)
from mumo.layers.block import Block, Transformer
from mumo.layers.mlp import Mlp, QuickGELU, SwiGLU, build_mlp
from mumo.layers.norm import RMSNorm, build_norm
from mumo.layers.patch_embed import PatchEmbed
from mumo.layers.pos_embed import apply_rope, rope_tables, sincos_1d, sincos_2d

__all__ = [
    "Block",
    "CrossAttention",
    "KVCache",
    "Mlp",
    "PatchEmbed",
    "QuickGELU",
    "RMSNorm",
    "SelfAttention",
    "SwiGLU",
    "Transformer",
    "apply_rope",
    "attend",
    "build_mlp",
    "build_norm",
    "causal_mask",
    "combine_masks",
    "padding_mask",
    "rope_tables",
    "sincos_1d",
    "sincos_2d",
]
