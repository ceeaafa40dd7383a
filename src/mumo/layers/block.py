"""Pre-norm residual Transformer block and a stack of them.

x = x + attn(norm(x));  [x = x + cross_attn(norm(x), context)];  x = x + mlp(norm(x))
"""

from __future__ import annotations

from functools import partial
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mumo.layers.attention import CrossAttention, KVCache, SelfAttention
from mumo.layers.mlp import MlpType, build_mlp
from mumo.layers.norm import NormType, build_norm


class Block(nn.Module):
    """One pre-norm Transformer block with optional cross-attention to a context.

    Args:
        dim: width C.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / C.
        mlp_type: 'gelu', 'gelu_tanh', 'quick_gelu' or 'swiglu'.
        norm_type: 'layernorm' or 'rmsnorm'.
        norm_eps: epsilon of the norms.
        qkv_bias: bias on attention projections.
        context_dim: width of the cross-attention context; None means no cross-attention.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        mlp_type: MlpType = "gelu",
        norm_type: NormType = "layernorm",
        norm_eps: float = 1e-5,
        qkv_bias: bool = True,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = build_norm(norm_type, dim, norm_eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=qkv_bias)
        if context_dim is not None:
            self.norm_cross = build_norm(norm_type, dim, norm_eps)
            self.cross_attn = CrossAttention(dim, num_heads, context_dim=context_dim, qkv_bias=qkv_bias)
        else:
            self.cross_attn = None
        self.norm2 = build_norm(norm_type, dim, norm_eps)
        self.mlp = build_mlp(mlp_type, dim, mlp_ratio)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        is_causal: bool = False,
        kv_cache: KVCache | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        context_kv: tuple[Tensor, Tensor] | None = None,
        select: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """(B, T, C) -> (B, T, C), or (B, 1, C) for the positions in ``select`` (B,).

        ``select`` computes only the outputs that a pooled head reads: keys and values still come from
        every token, but the output projection and MLP run on one token per sample. Exact, and it
        removes most of the last block's work in a pooled encoder.
        """
        h = self.attn(self.norm1(x), mask, is_causal, kv_cache, select, rope)
        if select is not None:
            x = x.gather(1, select.view(-1, 1, 1).expand(-1, 1, x.shape[-1]))  # (B, 1, C)
        x = x + h
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x), context, context_mask, kv=context_kv)
        return x + self.mlp(self.norm2(x))


class TransformerSpec(Protocol):
    """What a tower config tells a :class:`Transformer` (vision and text configs both qualify)."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    mlp_type: MlpType
    norm_type: NormType
    norm_eps: float
    qkv_bias: bool


class Transformer(nn.Module):
    """A stack of ``depth`` identical :class:`Block` s (arguments as for Block)."""

    @classmethod
    def from_spec(cls, spec: TransformerSpec, **overrides: object) -> Transformer:
        """The stack a tower config describes; ``overrides`` replace its fields (``depth=2``,
        ``num_heads=4``) or add block arguments (``context_dim=…`` for cross-attention)."""
        fields = ("depth", "num_heads", "mlp_ratio", "mlp_type", "norm_type", "norm_eps", "qkv_bias")
        args = {f: overrides.pop(f, getattr(spec, f)) for f in fields}
        return cls(spec.embed_dim, **args, **overrides)  # type: ignore[arg-type]

    def __init__(self, dim: int, depth: int, num_heads: int, **block_kwargs: object) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, num_heads, **block_kwargs) for _ in range(depth))  # type: ignore[arg-type]
        # Activation checkpointing: in training, each block's activations are recomputed in the backward
        # pass instead of stored (about a third more compute for a fraction of the memory).
        self.grad_checkpointing = False

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        is_causal: bool = False,
        select: Tensor | None = None,
        kv_caches: list[KVCache] | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        context_kvs: list[tuple[Tensor, Tensor]] | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Run every block on (B, T, C).

        Args:
            mask, is_causal: as for :class:`Block`.
            select: (B,) positions to keep at the last block only, which then returns (B, 1, C).
            kv_caches: one :class:`KVCache` per block for incremental decoding.
            context, context_mask: cross-attention context (B, S, Cc) and its (B, S) mask.
            context_kvs: per block, the context's keys and values from :meth:`context_kvs`, computed once
                and reused at every decoding step instead of ``context``.
            rope: rotary tables of the T positions, shared by every block's self-attention.
        """
        for name, per_block in (("KV caches", kv_caches), ("context kvs", context_kvs)):
            if per_block is not None and len(per_block) != len(self.blocks):
                raise ValueError(
                    f"got {len(per_block)} {name} for {len(self.blocks)} blocks; pass one per block"
                )
        last = len(self.blocks) - 1
        recompute = self.grad_checkpointing and self.training and torch.is_grad_enabled() and not kv_caches
        for i, block in enumerate(self.blocks):
            run = partial(checkpoint, block, use_reentrant=False) if recompute else block
            x = run(
                x,
                mask=mask,
                is_causal=is_causal,
                kv_cache=kv_caches[i] if kv_caches is not None else None,
                context=context,
                context_mask=context_mask,
                context_kv=context_kvs[i] if context_kvs is not None else None,
                select=select if i == last else None,
                rope=rope,
            )
        return x

    def layer_of(self, name: str) -> int | None:
        """The block (0-based) a parameter named relative to this stack (``blocks.3.attn.qkv.weight``)
        belongs to; None for a name outside the blocks."""
        head, _, rest = name.partition(".")
        index = rest.partition(".")[0]
        return int(index) if head == "blocks" and index.isdigit() else None

    def context_kvs(self, context: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each block's cross-attention keys and values of ``context`` (B, S, Cc): they do not change
        while decoding, so a decoder computes them once per image instead of once per token."""
        out = []
        for block in self.blocks:
            if block.cross_attn is None:
                raise ValueError("these blocks have no cross-attention; build them with context_dim")
            out.append(block.cross_attn.context_kv(context))
        return out


class StackDepth:
    """``num_layers`` and ``layer_of`` (what layer-wise lr decay and partial locking read, see
    ``mumo.train.finetune``) for a tower laid out as embeddings -> ``transformer`` (a :class:`Transformer`)
    -> ``norm``: 0 for the embeddings, i + 1 for block i, ``num_layers + 1`` for the final norm."""

    transformer: Transformer

    @property
    def num_layers(self) -> int:
        return len(self.transformer.blocks)

    def layer_of(self, name: str) -> int:
        """Depth of the parameter ``name``, relative to the tower (``transformer.blocks.1.mlp.fc1.bias``)."""
        block = self.transformer.layer_of(name.removeprefix("transformer."))
        if name.startswith("transformer.") and block is not None:
            return block + 1
        return self.num_layers + 1 if name.startswith("norm.") else 0


def set_grad_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Turn activation checkpointing on (or off) in every :class:`Transformer` of ``model``; returns how
    many stacks it reached (0: the model has none, e.g. a CNN tower alone)."""
    stacks = [m for m in model.modules() if isinstance(m, Transformer)]
    for stack in stacks:
        stack.grad_checkpointing = enabled
    return len(stacks)
