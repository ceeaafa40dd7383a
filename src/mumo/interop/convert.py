"""Load a CLIP model from any supported format and write it in another: what ``mumo convert`` runs.

Sources: a mumo model folder, an OpenCLIP folder (``open_clip_config.json`` + weights, the layout OpenCLIP
models have on the Hugging Face hub) or a weights file plus its config, and a Hugging Face CLIP folder.
Targets: a mumo model folder, a Hugging Face CLIP folder, ONNX encoders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mumo.data.tokenizer import Tokenizer
from mumo.errors import ConfigError, TokenizerError
from mumo.interop.clip_tokenizer import ClipTokenizer
from mumo.interop.export import export_onnx
from mumo.interop.hf_clip import load_hf_clip, save_hf_clip
from mumo.interop.open_clip import load_open_clip
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


def load_tokenizer(folder: str | Path, context_length: int = 77) -> Tokenizer | ClipTokenizer:
    """The tokenizer saved in a model folder: mumo's own BPE, or the CLIP BPE of an imported model."""
    try:
        return Tokenizer.load(folder, context_length=context_length)
    except TokenizerError:
        return ClipTokenizer.load(folder, context_length=context_length)


def _find(folder: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"{folder} has no {what} (looked for {', '.join(names)})")


def load_any(source: str | Path, kind: str, config: str | Path | None = None) -> tuple[CLIP, Any]:
    """(model, tokenizer or None) from ``source`` of ``kind`` 'mumo', 'open_clip' or 'hf'."""
    source = Path(source)
    if kind not in SOURCES:
        raise ConfigError(f"unknown source format {kind!r}; use one of {', '.join(SOURCES)}")
    if kind == "mumo":
        model = load_pretrained(source)
        has_tok = (source / "tokenizer.json").is_file()
        tok = load_tokenizer(source, model.context_length) if has_tok else None
        return model, tok
    if kind == "hf":
        model = load_hf_clip(source)
        has_tok = any((source / n).is_file() for n in ("tokenizer.json", "vocab.json"))
        return model, ClipTokenizer.from_hf_folder(
            source, model.config.text.context_length
        ) if has_tok else None
    if source.is_dir():
        cfg = Path(config) if config is not None else _find(source, _OPEN_CLIP_CONFIGS, "OpenCLIP config")
        return load_open_clip(cfg, _find(source, _OPEN_CLIP_WEIGHTS, "OpenCLIP weights")), None
    if config is None:
        raise ConfigError("an OpenCLIP weights file needs its model config: pass --config FILE.json")
    return load_open_clip(config, source), None


def convert(
    source: str | Path, target: str | Path, from_: str, to: str, config: str | Path | None = None
) -> Path:
    """Convert ``source`` (format ``from_``) to ``target`` (format ``to``); returns the target folder."""
    if to not in TARGETS:
        raise ConfigError(f"unknown target format {to!r}; use one of {', '.join(TARGETS)}")
    model, tokenizer = load_any(source, from_, config)
    target = Path(target)
    if to == "mumo":
        return save_pretrained(model, target, tokenizer=tokenizer)
    if to == "hf":
        return save_hf_clip(model, target, tokenizer=tokenizer if isinstance(tokenizer, Tokenizer) else None)
    export_onnx(model, target)
    return target
