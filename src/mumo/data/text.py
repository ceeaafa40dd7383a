"""A plain UTF-8 text file as a language-modelling data set (GPT pretraining on text alone).

Every non-empty line is a document, framed ``<bos> text <eot>``. Documents are packed whole, in file
order, into windows of ``context_length`` tokens: a window starts at a document boundary and holds as
many whole documents as fit, so short lines cost little padding; a document longer than a window is split
across consecutive windows, so no text is ever cut. The last ``val_windows`` windows are held out.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mumo.data.tokenizer import Tokenizer
from mumo.errors import DataError


def read_documents(path: str | Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped; a clear error for a missing or binary file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"text corpus {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e}); convert it, e.g. with iconv") from e
    docs = [line.strip() for line in text.splitlines() if line.strip()]
    if not docs:
        raise DataError(f"text corpus {path} has no non-empty lines")
    return docs


def pack_documents(docs: list[list[int]], context_length: int, pad_id: int) -> np.ndarray:
    """Framed documents (token lists) -> (N, context_length) int64 windows, right-padded with ``pad_id``."""
    windows: list[list[int]] = []
    current: list[int] = []
    for doc in docs:
        if len(current) + len(doc) > context_length and current:
            windows.append(current)
            current = []
        while len(doc) > context_length:  # longer than a window: split, never cut
            windows.append(doc[:context_length])
            doc = doc[context_length:]
        current = current + doc
    if current:
        windows.append(current)
    out = np.full((len(windows), context_length), pad_id, dtype=np.int64)
    for i, w in enumerate(windows):
        out[i, : len(w)] = w
    return out


class TextCorpus(Dataset):
    """Packed windows of a text file; tokenized once :meth:`bind` gives the tokenizer.

    Args:
        path: a UTF-8 text file, one document per line.
        split: 'train' (all windows but the held-out ones) or 'val' (the last ``val_windows``).
        val_windows: windows held out, at most a tenth of the corpus.
    """

    def __init__(self, path: str | Path, split: str = "train", val_windows: int = 100) -> None:
        if split not in ("train", "val"):
            raise DataError(f"text corpus split must be 'train' or 'val', got {split!r}")
        self.path, self.split, self.val_windows = Path(path), split, val_windows
        self.documents = read_documents(path)
        self.windows: np.ndarray | None = None
        self.pad_id = 0

    def bind(self, tokenizer: Tokenizer, context_length: int) -> TextCorpus:
        """Tokenize and pack the corpus for a model of ``context_length`` positions; returns self."""
        framed = [[tokenizer.bos_id, *ids, tokenizer.eot_id] for ids in tokenizer.encode_ids(self.documents)]
        self._packed = pack_documents(framed, context_length, tokenizer.pad_id)
        self._train_end = len(self._packed) - min(self.val_windows, len(self._packed) // 10)
        self.windows = self._split_windows(self.split)
        self.pad_id = tokenizer.pad_id
        return self

    def _split_windows(self, split: str) -> np.ndarray:
        return self._packed[self._train_end :] if split == "val" else self._packed[: self._train_end]

    def held_out(self) -> TextCorpus:
        """The held-out ('val') windows of this bound corpus, without reading or tokenizing it again."""
        if self.windows is None:
            raise DataError("call TextCorpus.bind(tokenizer, context_length) before reading it")
        view = copy.copy(self)
        view.split, view.windows = "val", self._split_windows("val")
        return view

    def __len__(self) -> int:
        if self.windows is None:
            raise DataError("call TextCorpus.bind(tokenizer, context_length) before reading it")
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.windows is None:
            raise DataError("call TextCorpus.bind(tokenizer, context_length) before reading it")
        return {"input_ids": torch.from_numpy(self.windows[index]), "index": int(index)}


class TokenCollate:
    """Stack packed windows: ``input_ids`` (B, T) and ``attention_mask`` (B, T), 0 on padding."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        ids = torch.stack([s["input_ids"] for s in samples])
        # Padding only ever ends a window, so the mask is "before the first padding position".
        real = (ids != self.pad_id).long()
        mask = real.flip(1).cummax(dim=1).values.flip(1)
        return {"input_ids": ids, "attention_mask": mask, "skipped": [], "num_truncated": 0}
