"""Load a CLIP model from any supported format and write it in another: what ``mumo convert`` runs.

Sources: a mumo model folder, an OpenCLIP folder (``open_clip_config.json`` + weights, the layout OpenCLIP
models have on the Hugging Face hub) or a weights file plus its config, and a Hugging Face CLIP folder.
Targets: a mumo model folder, a Hugging Face CLIP folder, ONNX encoders.

A folder is recognised by its files (:func:`folder_formats`), and one of another format than the one
named is refused by name: a mumo folder's ``config.json`` also says model_type "clip", and read as a
Hugging Face config it would load as a different model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from mumo._io import read_json
from mumo.data.clip_tokenizer import ClipTokenizer
from mumo.data.sentencepiece_tokenizer import SentencePieceTokenizer
from mumo.data.tokenizer import Tokenizer, load_tokenizer
from mumo.errors import ConfigError
from mumo.interop.export import export_onnx
from mumo.interop.hf_clip import load_hf_clip, save_hf_clip
from mumo.interop.hf_siglip import is_hf_siglip_folder, is_siglip_model, load_hf_siglip, save_hf_siglip
from mumo.interop.open_clip import load_open_clip
from mumo.interop.open_clip_siglip import load_open_clip_folder
from mumo.models import CLIP, load_pretrained, save_pretrained

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
    "onnx": {"image_encoder.onnx", "text_encoder.onnx", "onnx_config.json"},
}


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


def load_any(source: str | Path, kind: str, config: str | Path | None = None) -> tuple[CLIP, Any]:
    """(model, tokenizer or None) from ``source`` of ``kind`` 'mumo', 'open_clip' or 'hf'.

    Raises:
        ConfigError: ``kind`` is unknown, or ``source`` is a folder of another format (named).
    """
    source = Path(source)
    if kind not in SOURCES:
        raise ConfigError(f"unknown source format {kind!r}; use one of {', '.join(SOURCES)}")
    _check_source(source, kind)
    if kind == "mumo":
        model = load_pretrained(source)
        has_tok = (source / "tokenizer.json").is_file()
        tok = load_tokenizer(source, model.context_length) if has_tok else None
        return model, tok
    if kind == "hf" and is_hf_siglip_folder(source):
        return load_hf_siglip(source)
    if kind == "hf":
        model = load_hf_clip(source)
        has_tok = any((source / n).is_file() for n in ("tokenizer.json", "vocab.json"))
        return model, ClipTokenizer.from_hf_folder(
            source, model.config.text.context_length
        ) if has_tok else None
    if source.is_dir():
        cfg = Path(config) if config is not None else _find(source, _OPEN_CLIP_CONFIGS, "OpenCLIP config")
        return load_open_clip_folder(source, cfg, _find(source, _OPEN_CLIP_WEIGHTS, "OpenCLIP weights"))
    if config is None:
        raise ConfigError("an OpenCLIP weights file needs its model config: pass --config FILE.json")
    return load_open_clip(config, source), None


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
    source: str | Path, target: str | Path, from_: str, to: str, config: str | Path | None = None
) -> Path:
    """Convert ``source`` (format ``from_``) to ``target`` (format ``to``); returns the target folder.

    The target must be a new or empty folder, or one a previous conversion to the same format wrote
    (holding only that format's files), which is then replaced whole; anything else is refused before
    the source is read, so nothing of the user's is overwritten or mixed with the new files. The new
    folder is written beside the target and renamed into place, so a conversion that fails half-way
    leaves the target as it was.

    Raises:
        ConfigError: an unknown format, a source of another format, or a target that is refused.
    """
    if to not in TARGETS:
        raise ConfigError(f"unknown target format {to!r}; use one of {', '.join(TARGETS)}")
    if from_ not in SOURCES:
        raise ConfigError(f"unknown source format {from_!r}; use one of {', '.join(SOURCES)}")
    target = Path(target)
    _check_target(target, to)
    model, tokenizer = load_any(source, from_, config)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if to == "mumo":
            save_pretrained(model, tmp, tokenizer=tokenizer)
        elif to == "hf" and is_siglip_model(model):
            save_hf_siglip(model, tmp, tokenizer if isinstance(tokenizer, SentencePieceTokenizer) else None)
        elif to == "hf":
            save_hf_clip(model, tmp, tokenizer=tokenizer if isinstance(tokenizer, Tokenizer) else None)
        else:
            export_onnx(model, tmp)
        _replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _replace(new: Path, target: Path) -> None:
    """Put folder ``new`` where ``target`` is (if anywhere). The old folder is renamed aside, then
    deleted: between the two renames an interruption leaves it whole as ``.NAME.old-PID``."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)  # left by an interrupted run
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
