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
from mumo.layers.attention_pool import AttentionPoolLatent
from mumo.layers.batch_norm import SyncBatchNorm, sync_batch_norm
from mumo.layers.block import Block, Transformer
from mumo.layers.lora import (
    LoRAConv2d,
    LoRALinear,
    apply_lora,
    load_lora_state_dict,
    lora_layers,
    lora_state_dict,
    merge_lora,
    merged_state_dict,
    unmerge_lora,
)
from mumo.layers.mlp import Mlp, QuickGELU, SwiGLU, build_mlp
from mumo.layers.norm import RMSNorm, build_norm
from mumo.layers.patch_embed import PatchEmbed
from mumo.layers.pos_embed import apply_rope, rope_tables, sincos_1d, sincos_2d

__all__ = [
    "AttentionPoolLatent",
    "Block",
    "CrossAttention",
    "KVCache",
    "LoRAConv2d",
    "LoRALinear",
    "Mlp",
    "PatchEmbed",
    "QuickGELU",
    "RMSNorm",
    "SelfAttention",
    "SwiGLU",
    "SyncBatchNorm",
    "Transformer",
    "apply_lora",
    "apply_rope",
    "attend",
    "build_mlp",
    "build_norm",
    "causal_mask",
    "combine_masks",
    "load_lora_state_dict",
    "lora_layers",
    "lora_state_dict",
    "merge_lora",
    "merged_state_dict",
    "padding_mask",
    "rope_tables",
    "sincos_1d",
    "sincos_2d",
    "sync_batch_norm",
    "unmerge_lora",
]
