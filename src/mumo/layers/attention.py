"""Multi-head attention on ``F.scaled_dot_product_attention``: self-attention, cross-attention, KV cache.

Notation: B batch, T query length, S key length, H heads, D head dim, C = H * D model width.
Masks are boolean with True meaning "may attend", broadcastable to (B, H, T, S).

Projections are batch-first ``nn.Linear`` layers fed straight into SDPA: on CPU this avoids the
transposes and packed in-projection copies of ``nn.MultiheadAttention`` (a 10-15 % training win).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mumo.layers.pos_embed import apply_rope


class KVCache:
    """Preallocated keys and values of one attention layer for incremental decoding.

    Args:
        batch_size: B.
        num_heads: H.
        head_dim: D.
        max_length: the most positions the cache will ever hold.
        dtype, device: of the buffers.
    """

    def __init__(
        self,
        batch_size: int,
        num_heads: int,
        head_dim: int,
        max_length: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        shape = (batch_size, num_heads, max_length, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0  # positions filled so far

    @property
    def max_length(self) -> int:
        return self.k.shape[2]

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``k, v`` of shape (B, H, T, D); return all keys and values so far, (B, H, S, D)."""
        t = k.shape[2]
        if self.length + t > self.max_length:
            raise ValueError(
                f"KV cache holds {self.max_length} positions; appending {t} to {self.length} overflows it — "
                "allocate a larger cache (max_length) or decode fewer tokens"
            )
        # narrow + copy_ writes in place with two ops per tensor (slice assignment dispatches one per dim)
        self.k.narrow(2, self.length, t).copy_(k)
        self.v.narrow(2, self.length, t).copy_(v)
        self.length += t
        return self.k.narrow(2, 0, self.length), self.v.narrow(2, 0, self.length)

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (B',) in that order, e.g. the surviving beams of a beam search."""
        self.k = self.k.index_select(0, index)
        self.v = self.v.index_select(0, index)


def padding_mask(attention_mask: Tensor) -> Tensor:
    """Turn a (B, S) 0/1 padding mask into a boolean key mask of shape (B, 1, 1, S)."""
    return attention_mask.bool()[:, None, None, :]


def causal_mask(q_len: int, k_len: int, device: torch.device | None = None) -> Tensor:
    """(T, S) boolean mask where query i (at absolute position S - T + i) sees keys 0 … S - T + i.

    Bottom-right aligned, so it stays right when a KV cache holds S - T earlier positions.
    """
    offset = k_len - q_len
    q = torch.arange(q_len, device=device)[:, None] + offset
    k = torch.arange(k_len, device=device)[None, :]
    return k <= q


def combine_masks(*masks: Tensor | None) -> Tensor | None:
    """AND of the given boolean masks (None entries ignored).

    Rows that would see no key at all (a padded query under a causal mask) are opened to every key:
    their outputs are ignored downstream, and SDPA would otherwise return NaN that poisons gradients.
    """
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    if out is not None:
        out = out | ~out.any(dim=-1, keepdim=True)
    return out


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
    """Scaled dot-product attention, (B, H, T, D) x (B, H, S, D) -> (B, T, H * D).

    ``is_causal`` must only be used when T == S (SDPA aligns its causal mask top-left).
    """
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None)
    b, h, t, d = out.shape
    # Given q as a transposed (B, T, H, D) view, as the projections here make it, SDPA lays its output
    # out as (B, T, H, D) too, so this transpose + reshape copies nothing.
    return out.transpose(1, 2).reshape(b, t, h * d)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one packed QKV projection.

    Args:
        dim: model width C.
        num_heads: H; C must be divisible by H.
        qkv_bias: bias on the QKV projection.
        proj_bias: bias on the output projection.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}; pick a divisor")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        is_causal: bool = False,
        kv_cache: KVCache | None = None,
        select: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Attend ``x`` (B, T, C) to itself.

        Args:
            x: (B, T, C) input tokens.
            mask: boolean (B|1, H|1, T, S) mask, True = attend; S includes cached positions.
            is_causal: apply a causal mask (bottom-right aligned when a cache holds earlier keys).
            kv_cache: keys and values of earlier positions; updated in place with this call's.
            select: (B,) positions whose outputs are wanted; queries are computed for those only
                and the result is (B, 1, C). Keys and values still come from every position; ``mask``
                must then be a key mask, (B|1, 1, 1, S).
            rope: rotary cos and sin tables of this call's T positions (:func:`~mumo.layers.rope_tables`),
                applied to queries and keys before the keys are cached.

        Returns:
            (B, T, C), or (B, 1, C) with ``select``.
        """
        b, t, c = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D), strided views
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)
        s = k.shape[2]
        if select is not None:
            idx = select.view(b, 1, 1, 1).expand(b, self.num_heads, 1, self.head_dim)
            q = q.gather(2, idx)  # (B, H, 1, D)
            if is_causal:  # the selected query at position p sees keys 0 … p
                keys = torch.arange(s, device=x.device)
                mask = combine_masks(mask, (keys[None, :] <= select[:, None])[:, None, None, :])
            is_causal = False
        elif is_causal and t == 1:  # one query at the newest position sees every key: nothing to mask
            is_causal = False
        elif is_causal and (mask is not None or s != t):
            mask = combine_masks(mask, causal_mask(t, s, device=x.device))
            is_causal = False
        return self.proj(attend(q, k, v, mask, is_causal))


class CrossAttention(nn.Module):
    """Multi-head attention from queries ``x`` to a context such as image tokens.

    Args:
        dim: query width C.
        num_heads: H.
        context_dim: width of the context tokens (defaults to ``dim``).
        qkv_bias: bias on the Q and KV projections.
        proj_bias: bias on the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        context_dim: int | None = None,
        qkv_bias: bool = True,
        proj_bias: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}; pick a divisor")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim or dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def context_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Project context (B, S, Cc) to keys and values, each (B, H, S, D); reuse across decode steps."""
        b, s, _ = context.shape
        kv = self.kv(context).view(b, s, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        return k, v

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        kv: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Attend queries (B, T, C) to context (B, S, Cc); returns (B, T, C).

        Args:
            x: (B, T, C) queries.
            context: (B, S, Cc) tokens to attend to; not needed when ``kv`` is given.
            context_mask: (B, S) 0/1 mask of valid context tokens.
            kv: precomputed ``context_kv(context)`` (keys and values do not change while decoding).
        """
        b, t, c = x.shape
        q = self.q(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        if kv is None:
            if context is None:
                raise ValueError("cross-attention needs either context tokens or their precomputed kv")
            kv = self.context_kv(context)
        mask = padding_mask(context_mask) if context_mask is not None else None
        return self.proj(attend(q, kv[0], kv[1], mask))
