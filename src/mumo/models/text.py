"""Text tower: a Transformer over token ids, causal with end-of-text pooling (CLIP), bidirectional
with a class token (BERT-like), or bidirectional over a fixed-length padded text pooled at its last
position (SigLIP).

Notation: B batch, T tokens, C width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mumo._config import Config, check
from mumo.errors import ConfigError
from mumo.layers import Transformer, build_norm, padding_mask, rope_tables, sincos_1d
from mumo.layers.block import StackDepth
from mumo.layers.mlp import MlpType
from mumo.layers.norm import NormType


@dataclass
class TextConfig(Config):
    vocab_size: int = 49408  # token ids are in [0, vocab_size)
    context_length: int = 77  # longest token sequence, end token included
    embed_dim: int = 512  # width of the tokens
    depth: int = 12  # Transformer blocks
    num_heads: int = 8  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / embed_dim
    mlp_type: MlpType = "gelu"  # 'gelu', 'gelu_tanh' (tanh approximation), 'quick_gelu' or 'swiglu'
    norm_type: NormType = "layernorm"  # 'layernorm' or 'rmsnorm'
    norm_eps: float = 1e-5  # epsilon of the norms
    qkv_bias: bool = True  # bias on attention projections
    causal: bool = True  # each token sees only earlier ones (CLIP); False for bidirectional
    # last real token, a prepended class token, the mean, or the last of context_length positions (SigLIP:
    # texts are padded with pad_id to the full length and every token, padding too, attends to all)
    pool: Literal["eot", "cls", "mean", "last"] = "eot"
    pos_embed: Literal["learned", "sincos", "rope"] = "learned"  # position code; rope rotates q and k instead
    rope_base: float = 10000.0  # rope: the base of its rotation frequencies
    pad_id: int = 0  # id of padding, used to infer the attention mask when none is given
    arch: Literal["mumo", "bert"] = "mumo"  # pre-norm tower (below), or post-norm BERT (models/bert.py)
    type_vocab_size: int = 2  # bert: rows of the segment-embedding table (every token is segment 0)

    def validate(self) -> None:
        check(
            self.vocab_size > 0 and self.context_length > 0, "text.vocab_size and context_length must be > 0"
        )
        check(
            self.embed_dim % self.num_heads == 0,
            f"text.embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}",
        )
        check(
            not (self.causal and self.pool == "cls"),
            "text.pool='cls' needs causal=False: under a causal mask a leading class token sees only itself",
        )
        check(0 <= self.pad_id < self.vocab_size, f"text.pad_id {self.pad_id} is outside the vocabulary")
        if self.pos_embed == "rope":
            check(
                (self.embed_dim // self.num_heads) % 2 == 0,
                f"text.pos_embed=rope needs an even head width, not {self.embed_dim} / {self.num_heads}",
            )
            check(self.rope_base > 1, f"text.rope_base must be > 1, got {self.rope_base}")


def check_tokens(
    input_ids: Tensor, attention_mask: Tensor | None, context_length: int, pad_id: int
) -> Tensor:
    """Refuse (B, T) ids longer than ``context_length``; return the (B, T) 0/1 mask, inferred from
    ``pad_id`` when none is given."""
    t = input_ids.shape[1]
    if t > context_length:
        raise ValueError(
            f"got {t} tokens but context_length is {context_length}; "
            "encode with the tokenizer's context_length so it truncates (and counts) long texts"
        )
    return attention_mask if attention_mask is not None else (input_ids != pad_id).long()


def trim_padding(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop the right-padding columns after the batch's longest text: (B, T) ids and 0/1 mask -> (B, T')
    each. Texts padded to a fixed context length are often half padding, and every column costs."""
    longest = max(int(attention_mask.sum(dim=1).max()), 1) if attention_mask.numel() else 1
    return input_ids[:, :longest], attention_mask[:, :longest]


def length_groups(
    attention_mask: Tensor, min_rows: int = 128, min_saving: float = 0.15
) -> list[Tensor] | None:
    """Rows of a right-padded (B, T) 0/1 mask split into groups of similar length, each of at least
    ``min_rows`` rows: a list of (B_g,) row indices, shortest texts first; None when one batch wastes less
    than ``min_saving`` of its tokens on padding beyond what the groups would, or the mask is not right
    padded.

    A batch of captions and their generated negatives runs to its longest text, yet most texts are far
    shorter; each group trimmed to its own longest costs only the tokens it has. Rows of a Transformer do
    not mix, so grouping changes no result beyond float rounding; ``min_rows`` keeps the matrix products
    large enough to run at full speed.
    """
    groups = attention_mask.shape[0] // min_rows
    if groups < 2 or not is_right_padded(attention_mask):
        return None
    lengths, order = attention_mask.sum(dim=1).sort(stable=True)  # stable: the same groups every time
    chunks = order.tensor_split(groups)
    bounds = lengths.tensor_split(groups)
    grouped = sum(len(b) * int(b[-1]) for b in bounds)
    if grouped > (1.0 - min_saving) * len(lengths) * int(lengths[-1]):
        return None
    return list(chunks)


def pad_to_context(input_ids: Tensor, attention_mask: Tensor, context_length: int, pad_id: int) -> Tensor:
    """(B, T) ids with their (B, T) 0/1 mask -> (B, context_length) ids: masked-out positions and the
    columns up to ``context_length`` hold ``pad_id``. SigLIP's text tower was trained on texts padded so
    and attends to the padding, so its output depends on the pad tokens being exactly these."""
    ids = torch.where(attention_mask.bool(), input_ids, torch.full_like(input_ids, pad_id))
    return F.pad(ids, (0, context_length - ids.shape[1]), value=pad_id)


def is_right_padded(mask: Tensor) -> bool:
    """True when every row is ones followed by zeros."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


class TextTransformer(StackDepth, nn.Module):
    """Token + position embedding -> pre-norm blocks -> norm -> pool."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.arch != "mumo":
            raise ConfigError(f"text.arch={c.arch!r} is for CLIP's text tower (build_text_tower), not here")
        self.token_embed = nn.Embedding(c.vocab_size, c.embed_dim)
        n = c.context_length + int(c.pool == "cls")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim)) if c.pool == "cls" else None
        self.pos_embed: Tensor | None
        if c.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, n, c.embed_dim))
        elif c.pos_embed == "sincos":
            self.register_buffer("pos_embed", sincos_1d(torch.arange(n), c.embed_dim)[None], persistent=False)
        else:  # rope: positions enter every self-attention as a rotation of queries and keys
            self.pos_embed = None
        self.transformer = Transformer.from_spec(c)
        self.norm = build_norm(c.norm_type, c.embed_dim, c.norm_eps)

    @property
    def width(self) -> int:
        return self.config.embed_dim

    def embed(self, input_ids: Tensor, position_ids: Tensor) -> Tensor:
        """Token ids (B, T) at positions (B, T) or (T,) -> (B, T, C), with the additive position code
        (none under rope). The class token, when there is one, is prepended by the caller."""
        x = self.token_embed(input_ids)
        return x if self.pos_embed is None else x + self.pos_embed[0, position_ids]

    def rope(self, position_ids: Tensor) -> tuple[Tensor, Tensor] | None:
        """Rotary tables for positions (B, T) or (T,) under ``pos_embed='rope'``, else None; pass them to
        the blocks as ``rope=``."""
        c = self.config
        if c.pos_embed != "rope":
            return None
        return rope_tables(position_ids, c.embed_dim // c.num_heads, c.rope_base)

    def _prepare(
        self, input_ids: Tensor, attention_mask: Tensor | None, trim: bool = False
    ) -> tuple[Tensor, Tensor, Tensor | None, tuple[Tensor, Tensor] | None]:
        """Embed tokens; return (x (B, T', C), full 0/1 mask (B, T'), boolean attention mask or None,
        rotary tables or None).

        With ``trim``, right-padding columns after the longest text of the batch are dropped first: no
        pooled output depends on them, and texts padded to a fixed 77 tokens are often 10-20 long.
        """
        c = self.config
        b, _ = input_ids.shape
        attention_mask = check_tokens(input_ids, attention_mask, c.context_length, c.pad_id)
        if c.pool == "last":
            input_ids = pad_to_context(input_ids, attention_mask, c.context_length, c.pad_id)
            attention_mask = torch.ones_like(input_ids)
        right_padded = is_right_padded(attention_mask)
        if trim and right_padded:
            input_ids, attention_mask = trim_padding(input_ids, attention_mask)
        x = self.token_embed(input_ids)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
            attention_mask = torch.cat([attention_mask.new_ones(b, 1), attention_mask], dim=1)
        positions = torch.arange(x.shape[1], device=x.device)
        if self.pos_embed is not None:
            x = x + self.pos_embed[:, : x.shape[1]]
        # Under a causal mask, right padding sits after every real token and cannot reach them, so the
        # padding mask is only needed otherwise; leaving it out keeps SDPA on its fastest kernel.
        padded = not bool(attention_mask.all())
        needs_mask = padded and not (c.causal and right_padded)
        mask = padding_mask(attention_mask) if needs_mask else None
        return x, attention_mask, mask, self.rope(positions)

    def forward_features(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) ids [+ (B, T) 0/1 mask] -> normalized tokens (B, T [+1], C); (B, context_length, C) under
        ``pool='last'``, which pads every text to the full length."""
        x, _, mask, rope = self._prepare(input_ids, attention_mask)
        return self.norm(self.transformer(x, mask=mask, is_causal=self.config.causal, rope=rope))

    def pool(self, tokens: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T [+1], C) tokens from :meth:`forward_features` and their (B, T) 0/1 mask -> (B, C), equal to
        :meth:`forward` (which computes only the pooled token in its last block)."""
        c = self.config
        if c.pool == "cls":
            return tokens[:, 0]
        if c.pool == "mean":
            w = attention_mask.to(tokens.dtype).unsqueeze(-1)
            return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)
        if c.pool == "last":
            return tokens[:, -1]
        last = attention_mask.shape[1] - 1 - attention_mask.flip(1).to(torch.long).argmax(dim=1)  # (B,)
        return tokens[torch.arange(tokens.shape[0], device=tokens.device), last]

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) ids [+ (B, T) 0/1 mask] -> pooled features (B, C).

        'eot' pools the last real token (the end-of-text token the tokenizer always appends); only that
        token is computed in the last block. A large batch of texts of mixed lengths runs in groups of
        similar length (:func:`length_groups`), each trimmed to its own longest text.
        """
        groups = None
        if attention_mask is not None and self.config.pool != "last":
            groups = length_groups(attention_mask)
        if groups is None:
            return self._pooled(input_ids, attention_mask)
        out = torch.cat([self._pooled(input_ids[g], attention_mask[g]) for g in groups])  # grouped order
        order = torch.cat(groups)
        return out[torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))]

    def _pooled(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        c = self.config
        x, full_mask, mask, rope = self._prepare(input_ids, attention_mask, trim=True)
        if c.pool == "mean":
            x = self.norm(self.transformer(x, mask=mask, is_causal=c.causal, rope=rope))
            w = full_mask.to(x.dtype).unsqueeze(-1)
            return (x * w).sum(1) / w.sum(1).clamp_min(1.0)
        if c.pool == "cls":
            select = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        elif c.pool == "last":
            select = torch.full((x.shape[0],), x.shape[1] - 1, dtype=torch.long, device=x.device)
        else:
            last = full_mask.shape[1] - 1 - full_mask.flip(1).to(torch.long).argmax(dim=1)
            select = last  # position of the last real token in each row
        return self.norm(self.transformer(x, mask=mask, is_causal=c.causal, select=select, rope=rope))[:, 0]
