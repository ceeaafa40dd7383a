"""SigLIP's SentencePiece tokenizer, read from a folder holding ``spiece.model`` (Hugging Face's and
OpenCLIP's SigLIP folders on the hub both carry one), without transformers.

    text -> clean: [OpenCLIP: ftfy, HTML unescaped twice, '_' -> ' '] lower case, punctuation removed,
            whitespace collapsed                                     (SiglipTokenizer.canonicalize_text)
         -> SentencePiece ids                                        (the ``sentencepiece`` package)
         -> ``ids </s>``, cut to ``context_length`` keeping ``</s>`` last, right-padded with ``pad_id``

No start token: SigLIP's text tower pools at the last of its ``context_length`` positions and attends to the
padding, so texts are always padded to the full length (``padding='longest'`` is padded by the model).

Saved (``save``) as one ``tokenizer.json`` holding the SentencePiece model (base64) and the settings, so a
mumo model folder stays the three files every folder has; :func:`~mumo.data.tokenizer.load_tokenizer` finds
it by its ``"mumo_tokenizer": "sentencepiece"`` key.

Where it differs from ``transformers.SiglipTokenizer`` on the same ``spiece.model``: special-token names
typed in the text (``"</s>"``) stay text here (their punctuation is removed); HF turns them into the token.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import ftfy
from torch import Tensor

from mumo._extras import require
from mumo.data.tokenizer import TokenBatch, assemble_batch
from mumo.errors import TokenizerError

logger = logging.getLogger(__name__)

FORMAT_KEY = "mumo_tokenizer"  # marks a tokenizer.json written by SentencePieceTokenizer.save
_PUNCTUATION = str.maketrans("", "", string.punctuation)
Clean = Literal["siglip", "open_clip"]


def _special(config: dict[str, Any], key: str, default: str) -> str:
    """A special token's text in a ``tokenizer_config.json``: a string or an AddedToken dict."""
    value = config.get(key, default)
    value = value.get("content", default) if isinstance(value, dict) else value
    if not isinstance(value, str):
        raise TokenizerError(f"tokenizer_config.json {key}={value!r} is not a token string")
    return value


class SentencePieceTokenizer:
    """``ids </s>`` from a SentencePiece model, padded with ``pad_id`` to ``context_length``.

    Build it with :meth:`from_folder` (an HF / OpenCLIP SigLIP folder) or :meth:`load`.

    Args:
        model_proto: the serialized SentencePiece model (the bytes of ``spiece.model``).
        context_length: default encoded length, end token included.
        eos_token, pad_token: their pieces in the vocabulary (SigLIP pads with its end token ``</s>``).
        lowercase: lower-case before encoding (SiglipTokenizer's ``do_lower_case``).
        clean: 'siglip' cleans as transformers' SiglipTokenizer; 'open_clip' first applies OpenCLIP's
            ``clean='canonicalize'`` (ftfy, HTML unescaping, '_' as a space), as its SigLIP models do.
    """

    bos_id = None  # no start token

    def __init__(
        self,
        model_proto: bytes,
        context_length: int = 64,
        eos_token: str = "</s>",
        pad_token: str = "</s>",
        lowercase: bool = True,
        clean: Clean = "siglip",
    ) -> None:
        spm = require("sentencepiece", "siglip", "SigLIP's SentencePiece tokenizer")
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_proto)
        except (RuntimeError, TypeError) as e:
            raise TokenizerError(f"not a SentencePiece model ({e}); pass the bytes of a spiece.model") from e
        ids = {name: self._sp.PieceToId(name) for name in (eos_token, pad_token)}
        # PieceToId answers the unknown id for a piece it lacks, so check the way back too.
        missing = [n for n, i in ids.items() if self._sp.IdToPiece(i) != n]
        if missing:
            raise TokenizerError(f"the SentencePiece model has no piece {missing[0]!r} (a special token)")
        if context_length < 2:
            raise TokenizerError(f"context_length must be at least 2 (x </s>), got {context_length}")
        if clean not in ("siglip", "open_clip"):
            raise TokenizerError(f"clean must be 'siglip' or 'open_clip', got {clean!r}")
        self._proto = model_proto
        self.context_length = context_length
        self.eos_token, self.pad_token = eos_token, pad_token
        self.eot_id, self.pad_id = ids[eos_token], ids[pad_token]
        self.lowercase, self.clean_mode = lowercase, clean
        self.total_truncated = 0  # running count over this tokenizer's life, for end-of-epoch reports

    @classmethod
    def from_folder(
        cls, folder: str | Path, context_length: int | None = None, clean: Clean = "siglip"
    ) -> SentencePieceTokenizer:
        """Read ``spiece.model`` and, when there, ``tokenizer_config.json`` (special tokens, lower case,
        ``model_max_length``) from a Hugging Face or OpenCLIP SigLIP folder."""
        folder = Path(folder)
        path = folder / "spiece.model"
        if not path.is_file():
            raise TokenizerError(
                f"{folder} has no spiece.model; SigLIP's tokenizer is a SentencePiece model: copy the "
                "spiece.model (and tokenizer_config.json) of the model's Hugging Face repository there"
            )
        config_path = folder / "tokenizer_config.json"
        config: dict[str, Any] = {}
        if config_path.is_file():
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise TokenizerError(f"{config_path} is not JSON ({e})") from e
        length = context_length or config.get("model_max_length", 64)
        if not isinstance(length, int) or length > 100_000:  # HF writes a huge number for "no limit"
            length = 64
        return cls(
            path.read_bytes(),
            context_length=length,
            eos_token=_special(config, "eos_token", "</s>"),
            pad_token=_special(config, "pad_token", "</s>"),
            lowercase=bool(config.get("do_lower_case", True)),
            clean=clean,
        )

    @classmethod
    def load(cls, path: str | Path, context_length: int | None = None) -> SentencePieceTokenizer:
        """Load a ``tokenizer.json`` written by :meth:`save`, or the one inside a model folder."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        data = read_saved(path)
        if data is None:
            raise TokenizerError(f"{path} is not a SentencePiece tokenizer written by mumo")
        try:
            return cls(
                base64.b64decode(data["model"]),
                context_length=context_length or data["context_length"],
                eos_token=data["eos_token"],
                pad_token=data["pad_token"],
                lowercase=data["lowercase"],
                clean=data["clean"],
            )
        except (KeyError, ValueError) as e:
            raise TokenizerError(f"{path} lacks or garbles a field ({e}); save the tokenizer again") from e

    def save(self, path: str | Path) -> None:
        """Write the tokenizer, SentencePiece model included, as one JSON file (into ``path`` if a folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        data = {
            FORMAT_KEY: "sentencepiece",
            "context_length": self.context_length,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "lowercase": self.lowercase,
            "clean": self.clean_mode,
            "model": base64.b64encode(self._proto).decode("ascii"),
        }
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model: the content of a ``spiece.model``."""
        return self._proto

    @property
    def unk_token(self) -> str:
        """The piece of the unknown id (SiglipTokenizer asks for it by name)."""
        return self._sp.IdToPiece(self._sp.unk_id())

    @property
    def vocab_size(self) -> int:
        return self._sp.GetPieceSize()

    def clean(self, text: str) -> str:
        """The text the SentencePiece model sees (see the module docstring)."""
        if self.clean_mode == "open_clip":
            text = html.unescape(html.unescape(ftfy.fix_text(text))).strip().replace("_", " ")
        if self.lowercase:
            text = text.lower()
        return re.sub(r"\s+", " ", text.translate(_PUNCTUATION)).strip()

    def encode(
        self, texts: str | Sequence[str], context_length: int | None = None, padding: str = "max_length"
    ) -> TokenBatch:
        """Encode texts as ``ids </s>``, cut to ``context_length`` (``</s>`` kept) and right-padded.

        Args:
            texts: one string or a list.
            context_length: longest sequence; defaults to the tokenizer's.
            padding: 'max_length' pads to ``context_length``; 'longest' to the longest in the batch.

        Returns:
            A TokenBatch: input_ids and attention_mask (B, T), truncated (B,).
        """
        if isinstance(texts, str):
            texts = [texts]
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TokenizerError(f"texts must be strings; item {bad} is a {type(texts[bad]).__name__}")
        n = context_length or self.context_length
        pieces = self._sp.EncodeAsIds([self.clean(t) for t in texts])
        first = self.total_truncated == 0  # one warning per tokenizer, as mumo's others
        batch = assemble_batch(pieces, texts, n, padding, None, self.eot_id, self.pad_id, warn=first)
        self.total_truncated += batch.num_truncated
        return batch

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Token ids (T,) back to text, stopping at the first ``</s>`` (what follows is padding)."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        ids = list(ids)
        if self.eot_id in ids:
            ids = ids[: ids.index(self.eot_id)]
        return self._sp.DecodeIds(ids)


def read_saved(path: str | Path) -> dict[str, Any] | None:
    """The content of a ``tokenizer.json`` written by :meth:`SentencePieceTokenizer.save`; None for any
    other file (a ``tokenizers`` JSON, a missing file)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8") as f:
            head = f.read(64)  # cheap check: a BPE tokenizer.json can be megabytes
        if FORMAT_KEY not in head:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get(FORMAT_KEY) == "sentencepiece" else None
