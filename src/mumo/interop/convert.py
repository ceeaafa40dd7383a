"""Load a CLIP model from any supported format and write it in another: what ``mumo convert`` runs.

Sources: a mumo model folder, an OpenCLIP folder (``open_clip_config.json`` + weights, the layout OpenCLIP
models have on the Hugging Face hub) or a weights file plus its config, and a Hugging Face CLIP folder.
A mumo source may also be a run folder (its ``final/``) or a training checkpoint, as everywhere else.
Targets: a mumo model folder, a Hugging Face CLIP folder, ONNX encoders.

Every written folder carries the model's tokenizer, so ``mumo embed``, ``zero-shot``, ``index`` and
``serve`` take it as it is: an OpenCLIP source has none of its own files, and gets CLIP's BPE
(:func:`source_tokenizer`). Every output is checked before it replaces the target: a mumo or Hugging Face
folder is read back with mumo's loaders and must give the source model's embeddings and token ids
(:func:`check_written`); ONNX encoders are run in onnxruntime against PyTorch (:func:`check_onnx`).

A folder is recognised by its files (:func:`folder_formats`), and one of another format than the one
named is refused by name: a mumo folder's ``config.json`` also says model_type "clip", and read as a
Hugging Face config it would load as a different model.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch

from mumo._io import read_json
from mumo.data.clip_tokenizer import ClipTokenizer
from mumo.data.sentencepiece_tokenizer import SentencePieceTokenizer
from mumo.data.tokenizer import TokenBatch, Tokenizer, load_tokenizer
from mumo.errors import ConfigError, ExportError
from mumo.inference import eval_mode
from mumo.interop.export import export_onnx
from mumo.interop.hf_clip import load_hf_clip, save_hf_clip
from mumo.interop.hf_siglip import is_hf_siglip_folder, is_siglip_model, load_hf_siglip, save_hf_siglip
from mumo.interop.open_clip import load_open_clip
from mumo.interop.open_clip_siglip import load_open_clip_folder
from mumo.models import CLIP, load_pretrained, save_pretrained
from mumo.models._pretrained import model_folder

AnyTokenizer = Tokenizer | ClipTokenizer | SentencePieceTokenizer
SOURCES = ("mumo", "open_clip", "hf")
TARGETS = ("mumo", "hf", "onnx")
_OPEN_CLIP_CONFIGS = ("open_clip_config.json", "config.json")
_OPEN_CLIP_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
_NAMES = {
    "mumo": "a mumo model folder",
    "hf": "a Hugging Face CLIP folder",
    "open_clip": "an OpenCLIP folder",
    "onnx": "an ONNX export",
}
# What each target writes: a folder holding these alone is a previous conversion, replaced whole.
_WRITES = {
    "mumo": {"config.json", "model.safetensors", "tokenizer.json", "manifest.json"},
    "hf": {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "spiece.model",  # SigLIP's tokenizer
    },
    "onnx": {"image_encoder.onnx", "text_encoder.onnx", "onnx_config.json", "tokenizer.json"},
}
_OPEN_CLIP_VOCAB = "bpe_simple_vocab_16e6.txt.gz"  # ships inside the open_clip package
_CHECK_TEXTS = ["a photo of a cat", "two red circles left of a blue square", ""]
ATOL = 1e-6  # a folder read back holds the same tensors: its embeddings agree to rounding, if not exactly


def folder_formats(folder: str | Path) -> set[str]:
    """The formats ``folder`` holds a model in, judged by its files: a subset of 'mumo', 'hf',
    'open_clip', 'onnx' (an OpenCLIP repository on the hub often holds an HF copy too); empty when none
    is recognised or the folder does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return set()
    found = set()
    if any((folder / n).is_file() for n in ("open_clip_config.json", *_OPEN_CLIP_WEIGHTS[:2])):
        found.add("open_clip")
    if (folder / "onnx_config.json").is_file() or any(folder.glob("*.onnx")):
        found.add("onnx")
    config = folder / "config.json"
    try:
        data = read_json(config) if config.is_file() else None
    except ConfigError:  # damaged: the format's own loader says so
        data = None
    if isinstance(data, dict):
        if "mumo_version" in data or ("model_type" in data and ("vision" in data or "text" in data)):
            found.add("mumo")
        elif "vision_config" in data or "text_config" in data:
            found.add("hf")
        elif "vision_cfg" in data or "model_cfg" in data:
            found.add("open_clip")
    return found


def _check_source(source: Path, kind: str) -> None:
    found = folder_formats(source)
    if found and kind not in found:
        what = " and ".join(_NAMES[f] for f in sorted(found))
        usable = [f"--from {f}" for f in sorted(found) if f in SOURCES]
        hint = f"use {' or '.join(usable)}" if usable else "it cannot be converted back"
        raise ConfigError(f"{source} is {what}, not {_NAMES[kind]}; {hint}")


def _find(folder: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"{folder} has no {what} (looked for {', '.join(names)})")


def load_any(
    source: str | Path, kind: str, config: str | Path | None = None, tokenizer: str | Path | None = None
) -> tuple[CLIP, AnyTokenizer | None]:
    """(model, tokenizer) from ``source`` of ``kind`` 'mumo', 'open_clip' or 'hf'; see
    :func:`source_tokenizer` for where the tokenizer comes from (None: a mumo folder saved without one).

    Raises:
        ConfigError: ``kind`` is unknown, or ``source`` is a folder of another format (named).
    """
    source = Path(source)
    if kind not in SOURCES:
        raise ConfigError(f"unknown source format {kind!r}; use one of {', '.join(SOURCES)}")
    source = model_folder(source)  # a run folder stands for its final model, as in every command
    _check_source(source, kind)
    if kind == "mumo":
        model = load_pretrained(source)
    elif kind == "hf" and is_hf_siglip_folder(source):
        model, own = load_hf_siglip(source)  # its spiece.model, when the folder has one
        return model, source_tokenizer(source, kind, model, config, tokenizer) if tokenizer else own
    elif kind == "hf":
        model = load_hf_clip(source)
    elif source.is_dir():
        config = Path(config) if config is not None else _find(source, _OPEN_CLIP_CONFIGS, "OpenCLIP config")
        weights = _find(source, _OPEN_CLIP_WEIGHTS, "OpenCLIP weights")
        model, own = load_open_clip_folder(source, config, weights)
        if own is not None and tokenizer is None:  # SigLIP: the SentencePiece model the folder holds
            return model, own
    elif config is None:
        raise ConfigError("an OpenCLIP weights file needs its model config: pass --config FILE.json")
    else:
        model = load_open_clip(config, source)
    return model, source_tokenizer(source, kind, model, config, tokenizer)


def _open_clip_vocab() -> Path | None:
    """OpenCLIP's BPE vocabulary inside the installed ``open_clip`` package, found without importing it."""
    spec = importlib.util.find_spec("open_clip")
    vocab = Path(spec.origin).parent / _OPEN_CLIP_VOCAB if spec is not None and spec.origin else None
    return vocab if vocab is not None and vocab.is_file() else None


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()


def source_tokenizer(
    source: Path,
    kind: str,
    model: CLIP,
    config: str | Path | None = None,
    tokenizer: str | Path | None = None,
) -> AnyTokenizer | None:
    """The tokenizer to write beside a converted model, cut to its context length.

    Tried in order: ``tokenizer`` (a ``tokenizer.json``, a folder holding one, or OpenCLIP's
    ``bpe_simple_vocab_16e6.txt.gz``); the source folder's own files (mumo's BPE or CLIP's, also a
    Hugging Face ``vocab.json`` + ``merges.txt``); for an OpenCLIP model without either, CLIP's BPE from
    the installed ``open_clip`` package, which is what OpenCLIP itself tokenizes with.

    Raises:
        ConfigError: an OpenCLIP model names another tokenizer (``hf_tokenizer_name``), or none is found.
    """
    n = model.context_length
    if tokenizer is not None:
        path = Path(tokenizer)
        if path.name.endswith(".gz"):
            return ClipTokenizer.from_open_clip_vocab(path, context_length=n)
        return load_tokenizer(path, context_length=n)
    folder = source if source.is_dir() else source.parent
    if kind != "open_clip" or _has_tokenizer(folder):
        return load_tokenizer(folder, context_length=n) if _has_tokenizer(folder) else None
    # A model that names another tokenizer (SigLIP's, e.g. timm/ViT-B-16-SigLIP) is not given CLIP's.
    cfg_path = (
        Path(config)
        if config is not None
        else next((folder / c for c in _OPEN_CLIP_CONFIGS if (folder / c).is_file()), None)
    )
    cfg = read_json(cfg_path) if cfg_path is not None else {}
    cfg = cfg.get("model_cfg", cfg) if isinstance(cfg, dict) else {}
    named = (cfg.get("text_cfg") or {}).get("hf_tokenizer_name") if isinstance(cfg, dict) else None
    if named:  # SigLIP's SentencePiece model, which OpenCLIP would download: load_open_clip_folder reads it
        raise ConfigError(
            f"the OpenCLIP model tokenizes with {named!r}, which is not in {folder}: put that repository's "
            "spiece.model (and tokenizer_config.json) there, or pass --tokenizer; CLIP's would be wrong"
        )
    vocab = _open_clip_vocab()
    if vocab is None:
        raise ConfigError(
            f"{source} holds no tokenizer and open_clip is not installed; pass --tokenizer "
            f"{_OPEN_CLIP_VOCAB} (from the open_clip package) or pip install open_clip_torch"
        )
    return ClipTokenizer.from_open_clip_vocab(vocab, context_length=n)


def _check_target(target: Path, to: str) -> None:
    if target.exists() and not target.is_dir():
        raise ConfigError(f"target {target} is an existing file; give the path of a folder to write")
    if not target.is_dir():
        return
    names = {p.name for p in target.iterdir()}
    if names and not (to in folder_formats(target) and names <= _WRITES[to]):
        raise ConfigError(
            f"target {target} is not empty and is not {_NAMES[to]} written by mumo convert; "
            "give a new or empty folder"
        )


def convert(
    source: str | Path,
    target: str | Path,
    from_: str,
    to: str,
    config: str | Path | None = None,
    tokenizer: str | Path | None = None,
) -> Path:
    """Convert ``source`` (format ``from_``) to ``target`` (format ``to``); returns the target folder.

    The target must be a new or empty folder, or one a previous conversion to the same format wrote
    (holding only that format's files), which is then replaced whole; anything else is refused before
    the source is read, so nothing of the user's is overwritten or mixed with the new files. The new
    folder is written beside the target, checked (:func:`check_written`, or onnxruntime for ONNX) and
    renamed into place, so a conversion that fails half-way or checks wrong leaves the target as it was.

    Raises:
        ConfigError: an unknown format, a source of another format, or a target that is refused.
        ExportError: the written model does not give the source model's embeddings.
    """
    if to not in TARGETS:
        raise ConfigError(f"unknown target format {to!r}; use one of {', '.join(TARGETS)}")
    if from_ not in SOURCES:
        raise ConfigError(f"unknown source format {from_!r}; use one of {', '.join(SOURCES)}")
    target = Path(target)
    _check_target(target, to)
    model, tok = load_any(source, from_, config, tokenizer)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if to == "mumo":
            save_pretrained(model, tmp, tokenizer=tok)
            check_written(model, tok, *_read_back(tmp, to))
        elif to == "hf":
            if is_siglip_model(model):  # SiglipModel, with spiece.model for SiglipTokenizer
                save_hf_siglip(model, tmp, tok if isinstance(tok, SentencePieceTokenizer) else None)
            else:
                save_hf_clip(model, tmp, tokenizer=tok)
            check_written(model, tok, *_read_back(tmp, to))
        else:
            export_onnx(model, tmp)  # checked in onnxruntime against PyTorch (check_onnx)
            if tok is not None:  # the graphs take ids; plain `tokenizers` reads this file (<bos> … <eot>)
                tok.save(tmp / "tokenizer.json")
                _check_ids(tok, load_tokenizer(tmp, model.context_length))
        _replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _read_back(folder: Path, kind: str) -> tuple[CLIP, AnyTokenizer | None]:
    if kind == "hf" and is_hf_siglip_folder(folder):
        return load_hf_siglip(folder)
    model = load_pretrained(folder) if kind == "mumo" else load_hf_clip(folder)
    return model, load_tokenizer(folder, model.context_length) if _has_tokenizer(folder) else None


def _check_ids(tokenizer: AnyTokenizer, again: AnyTokenizer) -> TokenBatch:
    """The source tokenizer's encoding of a few texts, checked to equal the written one's."""
    tokens = tokenizer.encode(_CHECK_TEXTS)
    if not torch.equal(again.encode(_CHECK_TEXTS).input_ids, tokens.input_ids):
        raise ExportError("the written tokenizer encodes text differently from the source's")
    return tokens


def check_written(
    model: CLIP, tokenizer: AnyTokenizer | None, again: CLIP, again_tokenizer: AnyTokenizer | None
) -> float:
    """Check that a written model, read back (``again``), is the one converted: the same image and text
    embeddings (within :data:`ATOL`) and, with a tokenizer, the same token ids. Returns the largest
    embedding difference.

    Raises:
        ExportError: a difference, named, with what was compared.
    """
    if (tokenizer is None) != (again_tokenizer is None):
        raise ExportError(
            "the written folder lost its tokenizer"
            if again_tokenizer is None
            else "the written folder holds a tokenizer the source had not"
        )
    c = model.config
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, c.vision.in_chans, c.vision.image_size, c.vision.image_size, generator=gen)
    if tokenizer is not None:
        tokens = _check_ids(tokenizer, again_tokenizer)
        ids, mask = tokens.input_ids, tokens.attention_mask
    else:  # random ids, the last one of each row taken as the end token
        ids = torch.randint(0, c.text.vocab_size, (2, c.text.context_length), generator=gen)
        mask = torch.ones_like(ids)
    diff = 0.0
    with eval_mode(model), eval_mode(again), torch.no_grad():
        for name, ours, theirs in (
            ("image", model.encode_image(images), again.encode_image(images)),
            ("text", model.encode_text(ids, mask), again.encode_text(ids, mask)),
        ):
            d = float((ours - theirs).abs().max())
            if not d <= ATOL:  # also catches NaN
                raise ExportError(
                    f"the written model's {name} embeddings differ from the source's by {d:.3g} (max abs), "
                    f"above {ATOL:g}; the conversion is wrong: report it with the model config"
                )
            diff = max(diff, d)
    return diff


def _replace(new: Path, target: Path) -> None:
    """Put folder ``new`` where ``target`` is (if anywhere). The old folder is renamed aside, then
    deleted: between the two renames an interruption leaves it whole as ``.NAME.old-PID``."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)  # left by an interrupted run
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
