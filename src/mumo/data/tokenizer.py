"""Byte-level BPE tokenizer on the ``tokenizers`` library: train on captions, save, load, encode.

Every encoded sequence is ``<bos> tokens… <eot>`` and fits ``context_length``: long texts are cut so
that the end-of-text token always survives (the text tower pools there), and every cut is counted and
returned; a tokenizer logs its first cuts once, with their count, and keeps counting (``total_truncated``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch import Tensor

from mumo.errors import TokenizerError

if TYPE_CHECKING:
    from mumo.data.clip_tokenizer import ClipTokenizer
    from mumo.data.sentencepiece_tokenizer import SentencePieceTokenizer

logger = logging.getLogger(__name__)

PAD, BOS, EOT, MASK = "<pad>", "<bos>", "<eot>", "<mask>"
# ids 0, 1, 2, 3 in a trained tokenizer. The end token is 1, not 2: Hugging Face's CLIP text model reads
# eos_token_id == 2 as "pool at the largest id" (a legacy rule), which would break exported models.
SPECIAL_TOKENS = [PAD, EOT, BOS, MASK]
# The roles of the special tokens in the vocabularies a Tokenizer reads: mumo's own BPE, and BERT's
# WordPiece (a Hugging Face BERT tokenizer.json), whose "[CLS] text [SEP]" is the same framing.
SPECIAL_TOKEN_ROLES = {
    "mumo": {"pad": PAD, "bos": BOS, "eot": EOT, "mask": MASK},
    "bert": {"pad": "[PAD]", "bos": "[CLS]", "eot": "[SEP]", "mask": "[MASK]"},
}


@dataclass
class TokenBatch:
    """Encoded texts, right-padded.

    Attributes:
        input_ids: (B, T) token ids.
        attention_mask: (B, T) 1 for real tokens (end token included), 0 for padding.
        truncated: (B,) True where the text was cut to fit.
    """

    input_ids: Tensor
    attention_mask: Tensor
    truncated: Tensor

    @property
    def num_truncated(self) -> int:
        return int(self.truncated.sum())


def assemble_batch(
    token_ids: Sequence[Sequence[int]],
    texts: Sequence[str],
    context_length: int,
    padding: str,
    bos_id: int | None,
    eot_id: int,
    pad_id: int,
    warn: bool = True,
) -> TokenBatch:
    """Frame each text's ids as ``<bos> ids <eot>`` (``ids <eot>`` when ``bos_id`` is None, as SigLIP's
    SentencePiece tokenizer does), cut to ``context_length`` keeping the end token, right-pad, and count the
    texts cut (in ``truncated``). ``warn``: log this batch's cuts; a tokenizer passes it for its first cut
    only and counts the rest (``total_truncated``): a training run encodes every batch, and the same line
    each batch would bury the rest of the log."""
    start = [] if bos_id is None else [bos_id]
    if context_length < len(start) + 2:
        least, frame = len(start) + 2, "<bos> x <eot>" if start else "x <eot>"
        raise TokenizerError(f"context_length must be at least {least} ({frame}), got {context_length}")
    if padding not in ("max_length", "longest"):
        raise TokenizerError(f"padding must be 'max_length' or 'longest', got {padding!r}")
    room = context_length - len(start) - 1
    rows = [[*start, *ids[:room], eot_id] for ids in token_ids]
    truncated = torch.tensor([len(ids) > room for ids in token_ids], dtype=torch.bool)
    shortest = len(start) + 1
    width = context_length if padding == "max_length" else max((len(r) for r in rows), default=shortest)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
    ids = ids.reshape(len(rows), width)  # (B, T), also when B == 0
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    mask = (torch.arange(width) < lengths[:, None]).long()  # (B, T)
    count = int(truncated.sum())
    if warn and count:
        logger.warning(
            "%d of %d texts were longer than %d tokens and were cut (end token kept); first: %.60r; later "
            "cuts by this tokenizer are counted (total_truncated), not logged again",
            count,
            len(rows),
            context_length,
            texts[int(truncated.nonzero()[0])],
        )
    return TokenBatch(input_ids=ids, attention_mask=mask, truncated=truncated)


class Tokenizer:
    """A byte-level BPE tokenizer with ``<pad> <bos> <eot> <mask>`` special tokens (or a BERT WordPiece
    tokenizer, whose ``[PAD] [CLS] [SEP] [MASK]`` take those roles).

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` whose vocabulary holds one set of :data:`SPECIAL_TOKEN_ROLES`.
        context_length: default longest encoded sequence, end token included.
    """

    def __init__(self, tokenizer: _HFTokenizer, context_length: int = 77) -> None:
        roles = next(
            (
                r
                for r in SPECIAL_TOKEN_ROLES.values()
                if all(tokenizer.token_to_id(t) is not None for t in r.values())
            ),
            None,
        )
        if roles is None:
            raise TokenizerError(
                f"tokenizer lacks the special tokens {SPECIAL_TOKENS} (or BERT's "
                f"{list(SPECIAL_TOKEN_ROLES['bert'].values())}); train it with Tokenizer.train"
            )
        # A Hugging Face tokenizer.json may carry its own padding and truncation; framing, cutting and
        # padding happen here (assemble_batch), where cuts are counted.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        if context_length < 3:
            raise TokenizerError(f"context_length must be at least 3 (<bos> x <eot>), got {context_length}")
        self._tok = tokenizer
        # User text that happens to read "<eot>" must stay text, never become a control token.
        self._tok.encode_special_tokens = True
        self.context_length = context_length
        self.pad_id, self.bos_id = tokenizer.token_to_id(roles["pad"]), tokenizer.token_to_id(roles["bos"])
        self.eot_id, self.mask_id = tokenizer.token_to_id(roles["eot"]), tokenizer.token_to_id(roles["mask"])
        self.total_truncated = 0  # running count over this tokenizer's life, for end-of-epoch reports

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 1000,
        min_frequency: int = 2,
        lowercase: bool = True,
        context_length: int = 77,
    ) -> Tokenizer:
        """Learn a byte-level BPE vocabulary of at most ``vocab_size`` ids from ``texts``.

        Byte-level means any string encodes (no unknown token); the 256 byte symbols plus the special
        tokens are always in the vocabulary, so ``vocab_size`` must be above 260.
        """
        base = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIAL_TOKENS)
        if vocab_size < base:
            raise TokenizerError(f"vocab_size {vocab_size} is below the {base} byte and special symbols")
        tok = _HFTokenizer(models.BPE())
        norms = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
        tok.normalizer = normalizers.Sequence(norms)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok, context_length=context_length)

    @classmethod
    def load(cls, path: str | Path, context_length: int = 77) -> Tokenizer:
        """Load a ``tokenizer.json`` file, or the one inside a checkpoint folder."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"no tokenizer file at {path}")
        return cls(_HFTokenizer.from_file(str(path)), context_length=context_length)

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` (the ``tokenizers`` format) to ``path``.

        The file frames text as :meth:`encode` does (``<bos> … <eot>``, a post-processor), so that plain
        ``tokenizers`` and ``transformers.AutoTokenizer`` give mumo's ids; mumo itself encodes without it.
        """
        tok = self._tok
        if tok.post_processor is None:  # a BERT tokenizer.json brings its own "[CLS] $A [SEP]"
            tok = _HFTokenizer.from_str(tok.to_str())
            bos, eot = tok.id_to_token(self.bos_id), tok.id_to_token(self.eot_id)
            tok.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A {eot}", special_tokens=[(bos, self.bos_id), (eot, self.eot_id)]
            )
        tok.save(str(path))

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary entry of ``token_id`` (e.g. ``"<eot>"``), None outside the vocabulary."""
        return self._tok.id_to_token(token_id)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(
        self,
        texts: str | Sequence[str],
        context_length: int | None = None,
        padding: str = "max_length",
    ) -> TokenBatch:
        """Encode texts as ``<bos> … <eot>``, cut to ``context_length`` and right-padded.

        Args:
            texts: one string or a list.
            context_length: longest sequence; defaults to the tokenizer's.
            padding: 'max_length' pads to ``context_length``; 'longest' to the longest in the batch.
        """
        if isinstance(texts, str):
            texts = [texts]
        n = context_length or self.context_length
        encoded = self._tok.encode_batch(list(texts), add_special_tokens=False)
        ids = [e.ids for e in encoded]
        first = self.total_truncated == 0
        batch = assemble_batch(ids, texts, n, padding, self.bos_id, self.eot_id, self.pad_id, warn=first)
        self.total_truncated += batch.num_truncated
        return batch

    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text alone: no ``<bos>``/``<eot>`` framing, no padding, no cut (prompts)."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int] | Tensor, skip_special_tokens: bool = True) -> str:
        """Token ids (T,) back to text; padding and special tokens dropped unless asked."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)


def load_tokenizer(
    folder: str | Path, context_length: int = 77
) -> Tokenizer | ClipTokenizer | SentencePieceTokenizer:
    """The tokenizer saved in a model folder: mumo's own BPE, the CLIP BPE of an imported model, or the
    SentencePiece model of an imported SigLIP."""
    # Both build on this module's TokenBatch: imported here, not at the top, to break the cycle.
    from mumo.data.clip_tokenizer import ClipTokenizer
    from mumo.data.sentencepiece_tokenizer import SentencePieceTokenizer, read_saved

    path = Path(folder)
    if read_saved(path / "tokenizer.json" if path.is_dir() else path) is not None:
        return SentencePieceTokenizer.load(path, context_length=context_length)
    try:
        return Tokenizer.load(folder, context_length=context_length)
    except TokenizerError:
        return ClipTokenizer.load(folder, context_length=context_length)
