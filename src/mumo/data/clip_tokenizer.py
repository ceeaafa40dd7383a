"""The CLIP byte-level BPE tokenizer (49,408 ids), read from OpenCLIP's or Hugging Face's vocabulary files.

Models imported from OpenCLIP or Hugging Face must see the token ids they were trained on, so this
reproduces OpenCLIP's ``SimpleTokenizer`` / ``open_clip.tokenize`` without importing either library:

    text -> clean: ftfy.fix_text, html.unescape twice, whitespace collapsed, lower case     (Python)
         -> pieces: OpenCLIP's regex, run by the same ``regex`` module OpenCLIP uses        (Python)
         -> byte-level BPE, ``</w>`` marking word ends                                      (Rust)
         -> ``<sot> ids <eot>``, cut to ``context_length`` with ``<eot>`` kept last, padded with 0

The regex runs in Python rather than in ``tokenizers`` because the Rust side (Oniguruma) carries an older
Unicode table than ``regex``: letters added in recent Unicode versions would split differently.

Where Hugging Face's ``CLIPTokenizer`` (transformers 5, same vocab and merges) differs, this follows
OpenCLIP; the ids agree on text that the cleaning leaves unchanged apart from whitespace and case:

- no ftfy: curly quotes (``don’t``), ligatures (``ﬁ``), full-width letters, control characters and
  mojibake are kept by HF, fixed by OpenCLIP;
- no HTML unescaping: HF encodes ``&amp;`` as ``& amp ;``, OpenCLIP as ``&``;
- lower case: HF lowers character by character (``Σ`` -> ``σ`` always), Python applies the final-sigma rule;
- padding: HF pads with ``<|endoftext|>`` (49407), OpenCLIP with 0; the attention masks agree;
- special-token text: each library recognizes its own names in user text (``<end_of_text>`` in OpenCLIP,
  ``<|endoftext|>`` in HF). Here the names are those of the vocabulary that was loaded, found where
  OpenCLIP's regex finds them, so a caption reading ``<end_of_text>`` encodes as the end token.
"""

from __future__ import annotations

import gzip
import html
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import ftfy
import regex
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as _HFTokenizer
from torch import Tensor

from mumo.data.tokenizer import TokenBatch, assemble_batch
from mumo.errors import TokenizerError

logger = logging.getLogger(__name__)

# Special-token names: OpenCLIP's, then those of OpenAI's / Hugging Face's vocab.json. Ids 49406, 49407.
_SPECIAL_NAMES = (("<start_of_text>", "<end_of_text>"), ("<|startoftext|>", "<|endoftext|>"))
_PIECES = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# OpenCLIP keeps lines 1..48894 of the gz (line 0 is a header): 512 byte symbols + 48,894 merges + 2 specials
# make the 49,408 ids; the file's later lines were never part of the vocabulary.
_NUM_MERGES = 49152 - 256 - 2
_EOW = "</w>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, which CLIP's vocabulary is written in."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


class ClipTokenizer:
    """CLIP's tokenizer: ``<sot> tokens… <eot>``, padded with 0 to ``context_length``.

    Build it with :meth:`from_open_clip_vocab`, :meth:`from_hf_folder` or :meth:`load`.

    Args:
        vocab: token string -> id, byte-level (GPT-2 byte table) with ``</w>`` word ends.
        merges: BPE merges, highest priority first.
        context_length: default longest encoded sequence, both special tokens included.
    """

    pad_id: int = 0  # OpenCLIP pads with id 0 ('!'); the attention mask tells padding from text

    def __init__(
        self, vocab: dict[str, int], merges: list[tuple[str, str]], context_length: int = 77
    ) -> None:
        names = next((pair for pair in _SPECIAL_NAMES if all(t in vocab for t in pair)), None)
        if names is None:
            raise TokenizerError(
                f"vocabulary has no start/end tokens {' / '.join(' and '.join(p) for p in _SPECIAL_NAMES)};"
                " pass a CLIP vocabulary (OpenCLIP's bpe_simple_vocab_16e6.txt.gz or an HF CLIP folder)"
            )
        symbols = list(_bytes_to_unicode().values())
        missing = [s for s in symbols + [s + _EOW for s in symbols] if s not in vocab]
        if missing:
            raise TokenizerError(
                f"vocabulary lacks {len(missing)} byte symbols (e.g. {missing[0]!r}); it is not a byte-level"
                " CLIP vocabulary with '</w>' word ends"
            )
        if context_length < 3:
            raise TokenizerError(f"context_length must be at least 3 (<sot> x <eot>), got {context_length}")
        self.context_length = context_length
        self.bos_token, self.eot_token = names
        self.bos_id, self.eot_id = vocab[names[0]], vocab[names[1]]
        self.total_truncated = 0  # running count over this tokenizer's life, for end-of-epoch reports
        self._vocab = dict(vocab)
        self._merges = list(merges)
        self._id_to_token = {i: t for t, i in vocab.items()}
        self._byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
        # Specials come first so that a caption reading "<end_of_text>" is one piece, as in OpenCLIP;
        # IGNORECASE as in OpenCLIP: it also lets "'ſ" (long s) match "'s" after lower-casing.
        specials = "|".join(regex.escape(t) for t in names)
        self._pattern = regex.compile(f"{specials}|{_PIECES}", regex.IGNORECASE)
        # The Rust side only maps bytes and runs BPE on pieces the regex already cut.
        try:
            bpe = models.BPE(
                vocab=self._vocab, merges=self._merges, continuing_subword_prefix="", end_of_word_suffix=_EOW
            )
        except Exception as e:  # tokenizers raises a bare Exception, e.g. for a merge of unknown symbols
            raise TokenizerError(
                f"vocabulary and merges do not fit together ({e}); load them from one folder"
            ) from e
        tok = _HFTokenizer(bpe)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.add_special_tokens(list(names))
        self._tok = tok

    @classmethod
    def from_open_clip_vocab(cls, path: str | Path, context_length: int = 77) -> ClipTokenizer:
        """Read OpenCLIP's ``bpe_simple_vocab_16e6.txt.gz`` (shipped inside the ``open_clip`` package)."""
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(
                f"no OpenCLIP vocabulary at {path}; pass the path of bpe_simple_vocab_16e6.txt.gz"
                " (it ships inside the open_clip package)"
            )
        try:
            with gzip.open(path) as f:
                lines = f.read().decode("utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise TokenizerError(f"{path} is not a gzipped UTF-8 BPE merges file ({e})") from e
        merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
        if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
            raise TokenizerError(
                f"{path} does not hold {_NUM_MERGES} merges of two symbols each; it is not OpenCLIP's"
                " bpe_simple_vocab_16e6.txt.gz"
            )
        # Ids in OpenCLIP's order: bytes, bytes + "</w>", one per merge, then the two specials.
        symbols = list(_bytes_to_unicode().values())
        tokens = (
            symbols + [s + _EOW for s in symbols] + ["".join(m) for m in merges] + list(_SPECIAL_NAMES[0])
        )
        return cls({t: i for i, t in enumerate(tokens)}, merges, context_length=context_length)

    @classmethod
    def from_hf_folder(cls, folder: str | Path, context_length: int = 77) -> ClipTokenizer:
        """Read a Hugging Face CLIP tokenizer folder: tokenizer.json, else vocab.json + merges.txt.

        Special-token names (``<|startoftext|>``...) are taken from the vocabulary, as HF names them.
        """
        folder = Path(folder)
        if (folder / "tokenizer.json").is_file():
            return cls._from_tokenizer_json(folder / "tokenizer.json", context_length)
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
            lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
            # The first line of an HF merges file is a "#version: 0.2" header.
            merges = [
                tuple(line.split()) for line in lines if line.strip() and not line.startswith("#version")
            ]
            if any(len(m) != 2 for m in merges):
                raise TokenizerError(
                    f"{folder / 'merges.txt'} has lines that are not two space-separated symbols"
                )
            return cls(vocab, merges, context_length=context_length)
        raise TokenizerError(
            f"{folder} holds neither tokenizer.json nor vocab.json + merges.txt; pass a Hugging Face CLIP"
            " tokenizer folder (e.g. a downloaded openai/clip-vit-base-patch32)"
        )

    @classmethod
    def _from_tokenizer_json(cls, path: Path, context_length: int) -> ClipTokenizer:
        try:
            model = json.loads(path.read_text(encoding="utf-8"))["model"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
            raise TokenizerError(f"{path} is not a tokenizers JSON file ({e})") from e
        if model.get("type") != "BPE" or model.get("end_of_word_suffix") != _EOW:
            raise TokenizerError(
                f"{path} is not a CLIP tokenizer: it needs a BPE model with end_of_word_suffix '</w>',"
                f" got type {model.get('type')!r} with suffix {model.get('end_of_word_suffix')!r}"
            )
        # tokenizers writes merges as "a b" strings (before 0.20) or as [a, b] pairs (since).
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        return cls(model["vocab"], merges, context_length=context_length)

    @classmethod
    def load(cls, path: str | Path, context_length: int = 77) -> ClipTokenizer:
        """Load a file written by :meth:`save`, or a folder holding one (or an HF CLIP folder)."""
        path = Path(path)
        if path.is_dir():
            return cls.from_hf_folder(path, context_length=context_length)
        if not path.is_file():
            raise TokenizerError(
                f"no tokenizer file at {path}; pass a tokenizer.json or a folder holding one"
            )
        return cls._from_tokenizer_json(path, context_length)

    def save(self, path: str | Path) -> None:
        """Write a ``tokenizer.json`` to ``path`` (into it, if a folder).

        The file also carries Hugging Face's CLIP normalizer and pre-tokenizer so that plain ``tokenizers``
        can use it; :meth:`load` reads only its vocabulary and merges, and cleans text as OpenCLIP does.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        tok = _HFTokenizer.from_str(self._tok.to_str())
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
        )
        specials = "|".join(regex.escape(t) for t in (self.bos_token, self.eot_token))
        split = pre_tokenizers.Split(Regex(f"{specials}|{_PIECES}"), behavior="removed", invert=True)
        tok.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False)])
        tok.post_processor = processors.TemplateProcessing(
            single=f"{self.bos_token} $A {self.eot_token}",
            special_tokens=[(self.bos_token, self.bos_id), (self.eot_token, self.eot_id)],
        )
        tok.decoder = decoders.ByteLevel()
        try:
            tok.save(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on I/O errors
            raise TokenizerError(f"cannot write the tokenizer to {path} ({e})") from e

    @staticmethod
    def clean(text: str) -> str:
        """OpenCLIP's ``clean='lower'``: ftfy, HTML unescaped twice (web captions are often escaped twice),
        whitespace collapsed, lower case."""
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return " ".join(text.split()).lower()

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included (49,408 for CLIP)."""
        return len(self._vocab)

    def encode(
        self,
        texts: str | Sequence[str],
        context_length: int | None = None,
        padding: str = "max_length",
    ) -> TokenBatch:
        """Encode texts as ``<sot> … <eot>``, cut to ``context_length`` and right-padded with 0.

        A text longer than ``context_length - 2`` tokens keeps its first tokens and ends in ``<eot>``, as in
        ``open_clip.tokenize``; the cut is flagged in ``truncated``, counted and logged.

        Args:
            texts: one string or a list.
            context_length: longest sequence; defaults to the tokenizer's.
            padding: 'max_length' pads to ``context_length``; 'longest' to the longest in the batch.

        Returns:
            A TokenBatch: input_ids and attention_mask (B, T), truncated (B,).
        """
        if isinstance(texts, str):
            texts = [texts]
        n = context_length or self.context_length
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TokenizerError(f"texts must be strings; item {bad} is a {type(texts[bad]).__name__}")
        pieces = [self._pattern.findall(self.clean(t)) for t in texts]
        # encode_batch_fast (tokenizers >= 0.20) skips the character offsets we do not use.
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        encoded = encode(pieces, is_pretokenized=True, add_special_tokens=False)
        ids = [e.ids for e in encoded]
        first = self.total_truncated == 0  # one warning per tokenizer, as mumo's own
        batch = assemble_batch(ids, texts, n, padding, self.bos_id, self.eot_id, self.pad_id, warn=first)
        self.total_truncated += batch.num_truncated
        return batch

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Token ids (T,) back to text as OpenCLIP's decode does: ``</w>`` becomes a space.

        ``<sot>`` is dropped and decoding stops at the first ``<eot>`` (what follows is padding). Pieces
        come back space-separated, so ``"don't stop."`` decodes as ``"don't stop ."``.
        """
        if isinstance(ids, Tensor):
            if ids.dim() != 1:
                raise TokenizerError(
                    f"decode takes one sequence (T,), got shape {tuple(ids.shape)}; loop over rows"
                )
            ids = ids.tolist()
        ids = list(ids)
        if self.eot_id in ids:
            ids = ids[: ids.index(self.eot_id)]
        unknown = [i for i in ids if i not in self._id_to_token]
        if unknown:
            raise TokenizerError(f"ids {unknown[:5]} are outside the vocabulary (0..{self.vocab_size - 1})")
        text = "".join(self._id_to_token[i] for i in ids if i != self.bos_id)
        # Invalid UTF-8 (a multi-byte character cut by truncation) becomes U+FFFD, as in OpenCLIP.
        data = bytearray(self._byte_decoder[c] for c in text)
        return data.decode("utf-8", errors="replace").replace(_EOW, " ").strip()
