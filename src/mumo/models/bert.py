"""BERT text encoder (Devlin et al., 2019), the architecture of pretrained sentence encoders such as MiniLM:
a text tower for CLIP that can start from Hugging Face BERT weights (see :mod:`mumo.interop.hf_bert`).

ids (B, T) -> token + position + segment embeddings -> LayerNorm
           -> N post-norm layers: x = LN(x + attn(x)); x = LN(x + mlp(x))
           -> mean of the real tokens (sentence-transformers' pooling) or the [CLS] token -> (B, C)

Unlike mumo's own text tower (pre-norm, causal, pooled at the end token), BERT normalises after each
residual sum and attends in both directions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mumo.errors import ConfigError
from mumo.layers import SelfAttention, padding_mask
from mumo.layers.mlp import Mlp
from mumo.models.text import TextConfig, check_tokens, is_right_padded, trim_padding


class BertLayer(nn.Module):
    """One post-norm encoder layer. (B, T, C) -> (B, T, C)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act="gelu")  # exact (erf) GELU, as BERT's "gelu"
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.norm1(x + self.attn(x, mask=mask))
        return self.norm2(x + self.mlp(x))


class BertEncoder(nn.Module):
    """BERT as a text tower: ``forward(input_ids, attention_mask) -> (B, C)`` like :class:`TextTransformer`.

    Args:
        config: a :class:`TextConfig` with ``arch='bert'`` (``context_length`` is the position table's
            size, ``type_vocab_size`` the segment table's; every token is segment 0 here).
    """

    is_text_tower = True  # for mumo.train.finetune: this tower locks with finetune.lock_text

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        c = self.config = config
        if c.arch != "bert" or c.causal or c.pool not in ("mean", "cls") or c.pos_embed != "learned":
            raise ConfigError(
                "a BERT text tower needs text.arch=bert, causal=false, pool mean or cls, pos_embed learned"
            )
        self.token_embed = nn.Embedding(c.vocab_size, c.embed_dim)
        self.pos_embed = nn.Embedding(c.context_length, c.embed_dim)
        self.type_embed = nn.Embedding(c.type_vocab_size, c.embed_dim)
        self.embed_norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.layers = nn.ModuleList(
            BertLayer(c.embed_dim, c.num_heads, c.mlp_ratio, c.norm_eps) for _ in range(c.depth)
        )

    @property
    def width(self) -> int:
        return self.config.embed_dim

    @property
    def num_layers(self) -> int:
        """Encoder layers, for layer-wise learning-rate decay and partial locking."""
        return self.config.depth

    def layer_of(self, name: str) -> int:
        """Depth of the parameter ``name`` (relative to this tower): 0 for embeddings, i + 1 for layer i."""
        head, _, rest = name.partition(".")
        return int(rest.partition(".")[0]) + 1 if head == "layers" else 0

    def forward_features(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) ids [+ (B, T) 0/1 mask] -> (B, T, C) token features."""
        c = self.config
        mask01 = check_tokens(input_ids, attention_mask, c.context_length, c.pad_id)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.token_embed(input_ids) + self.pos_embed(positions) + self.type_embed.weight[0]
        x = self.embed_norm(x)
        mask = padding_mask(mask01) if not bool(mask01.all()) else None
        for layer in self.layers:
            x = layer(x, mask=mask)
        return x

    def pool(self, tokens: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T, C) features and their (B, T) 0/1 mask -> (B, C)."""
        if self.config.pool == "cls":
            return tokens[:, 0]
        w = attention_mask.to(tokens.dtype).unsqueeze(-1)
        return (tokens * w).sum(1) / w.sum(1).clamp_min(1e-9)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) ids [+ (B, T) 0/1 mask] -> pooled features (B, C)."""
        mask01 = check_tokens(input_ids, attention_mask, self.config.context_length, self.config.pad_id)
        if is_right_padded(mask01):
            # texts padded to the tokenizer's 512 positions are often 10-20 tokens long
            input_ids, mask01 = trim_padding(input_ids, mask01)
        return self.pool(self.forward_features(input_ids, mask01), mask01)
