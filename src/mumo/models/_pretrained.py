"""Model folders: ``config.json``, ``model.safetensors`` (+ ``tokenizer.json``), ``manifest.json``. No pickle.

Every file is written to a temporary name, flushed and renamed into place, so a crash mid-save never
leaves a truncated file under the real name. The manifest, written last, holds each file's size and
SHA-256: a folder damaged later (a truncated copy, flipped bytes) is refused on load instead of loading
as another model. A folder without a manifest (written by an older mumo) still loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mumo._config import Config
from mumo._io import (
    MANIFEST_NAME,
    atomic_write,
    atomic_write_json,
    read_json,
    verify_manifest,
    write_manifest,
)
from mumo.errors import CheckpointError, ConfigError
from mumo.layers.lora import merged_state_dict
from mumo.models._registry import build_model, config_from_dict
from mumo.version import __version__

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"


class _Saveable(Protocol):
    def save(self, path: str | Path) -> None: ...


def save_pretrained(
    model: nn.Module,
    directory: str | Path,
    tokenizer: _Saveable | None = None,
    merge_lora: bool = True,
    state_dict: dict[str, torch.Tensor] | None = None,
    weights: bool = True,
    manifest: bool = True,
) -> Path:
    """Write ``model`` (and ``tokenizer``) to ``directory``, created if needed; returns the path.

    A model with LoRA adapters is written merged, as the plain model it adapts (``merge_lora``); training
    checkpoints pass False to keep the adapters apart, exactly as they train. ``state_dict`` gives the
    weights to write instead of the model's own (a sharded model's, gathered); ``weights=False`` writes
    the config and tokenizer alone (a sharded checkpoint keeps its weights elsewhere). A ``manifest.json``
    of the files written, with their checksums, is written last; :func:`load_pretrained` checks it
    (``manifest=False``: the caller seals the folder itself, as a training checkpoint does)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise CheckpointError(f"{type(model).__name__} has no mumo config; only mumo models can be saved")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = [CONFIG_NAME]
    if weights:
        if state_dict is None:
            state_dict = merged_state_dict(model) if merge_lora else model.state_dict()
        state = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
        written.append(WEIGHTS_NAME)
    if tokenizer is not None:
        atomic_write(directory / TOKENIZER_NAME, tokenizer.save)
        written.append(TOKENIZER_NAME)
    meta = {**config.to_dict(), "mumo_version": __version__}
    atomic_write_json(directory / CONFIG_NAME, meta)
    if manifest:
        write_manifest(directory, written)
    return directory


def model_folder(path: str | Path) -> Path:
    """A training run folder stands for the model it saved at the end (``<run>/final``)."""
    path = Path(path)
    return path / "final" if (path / "final").is_dir() else path


def load_pretrained(
    directory: str | Path, map_location: str | torch.device = "cpu", verify: bool = True
) -> nn.Module:
    """Rebuild the model saved in ``directory`` and load its weights strictly (every key must match);
    ``verify``: check the folder's manifest first, when it has one (False: the caller just did).

    Raises:
        CheckpointError: a file is missing, fails the folder's manifest (truncated or altered), is not
            a readable safetensors file, or does not match the model its config describes.
        ConfigError: ``config.json`` is not JSON, not an object, or names no known ``model_type``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        what = "is a file" if directory.exists() else "does not exist"
        raise CheckpointError(f"{directory} {what}; give a model folder or a run folder")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory} has no {name}; is it a folder written by save_pretrained?")
    if verify and (directory / MANIFEST_NAME).is_file():
        verify_manifest(directory)
    model = build_model(read_config(directory / CONFIG_NAME))
    state = read_safetensors(directory / WEIGHTS_NAME, device=str(map_location))
    load_state_dict_strict(model, state, str(directory / WEIGHTS_NAME))
    return model.to(map_location)


def read_config(path: str | Path) -> Config:
    """The model config in a ``config.json``; a file that is not one is a one-line :class:`ConfigError`."""
    data = read_json(path)  # names the file when it is not JSON
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def read_safetensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; an empty, truncated or garbled one is a
    :class:`CheckpointError` in one line, not the parser's exception."""
    try:
        return load_file(str(path), device=device)
    except SafetensorError as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}); it is damaged or truncated: copy it again"
        ) from e


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` only if every key and shape matches; otherwise raise
    :class:`CheckpointError` saying how many keys are missing, unexpected or wrongly shaped, with the
    first few names of each."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [
            _few(what, keys)
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
            if keys
        ]
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(parts))
    model.load_state_dict(state)


def _few(what: str, keys: list[str], budget: int = 80) -> str:
    """``'3 missing (a, b ... and 1 more)'``: the count and the first names that fit in ``budget``
    characters (at least one), so that a checkpoint of another model is one readable line, not 3,000."""
    shown = [keys[0]]
    for key in keys[1:]:
        if sum(len(k) + 2 for k in shown) + len(key) > budget:
            break
        shown.append(key)
    rest = f" ... and {len(keys) - len(shown)} more" if len(keys) > len(shown) else ""
    return f"{len(keys)} {what} ({', '.join(shown)}{rest})"


def load_state_dict_matching(
    model: nn.Module, state: dict[str, torch.Tensor], source: str
) -> tuple[list[str], list[str]]:
    """Copy every tensor of ``state`` whose name is in ``model`` (a GPT's weights into a captioner of the
    same text shape, say); a shared name with another shape is a :class:`CheckpointError`.

    Returns:
        (names of ``model`` left at their current values, names of ``state`` not used).
    """
    own = model.state_dict()
    wrong = [
        f"{k}: {tuple(v.shape)} != {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if wrong:
        raise CheckpointError(f"{source} does not fit the model: {_few('wrong shape', wrong)}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return sorted(set(own) - set(state)), sorted(set(state) - set(own))
