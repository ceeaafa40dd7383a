"""Checkpoint folders: ``config.json`` + ``model.safetensors`` (+ ``tokenizer.json``). No pickle.

Every file is written to a temporary name, flushed and renamed into place, so a crash mid-save never
leaves a truncated file under the real name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import mumo
from mumo._io import atomic_write, atomic_write_json
from mumo.errors import CheckpointError
from mumo.layers.lora import merged_state_dict
from mumo.models._registry import build_model, config_from_dict

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
) -> Path:
    """Write ``model`` (and ``tokenizer``) to ``directory``, created if needed; returns the path.

    A model with LoRA adapters is written merged, as the plain model it adapts (``merge_lora``); training
    checkpoints pass False to keep the adapters apart, exactly as they train. ``state_dict`` gives the
    weights to write instead of the model's own (a sharded model's, gathered); ``weights=False`` writes
    the config and tokenizer alone (a sharded checkpoint keeps its weights elsewhere)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise CheckpointError(f"{type(model).__name__} has no mumo config; only mumo models can be saved")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if weights:
        if state_dict is None:
            state_dict = merged_state_dict(model) if merge_lora else model.state_dict()
        state = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    if tokenizer is not None:
        atomic_write(directory / TOKENIZER_NAME, tokenizer.save)
    meta = {**config.to_dict(), "mumo_version": mumo.__version__}
    atomic_write_json(directory / CONFIG_NAME, meta)
    return directory


def model_folder(path: str | Path) -> Path:
    """A training run folder stands for the model it saved at the end (``<run>/final``)."""
    path = Path(path)
    return path / "final" if (path / "final").is_dir() else path


def load_pretrained(directory: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved in ``directory`` and load its weights strictly (every key must match)."""
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory} has no {name}; is it a folder written by save_pretrained?")
    model = build_model(config_from_dict(json.loads((directory / CONFIG_NAME).read_text())))
    state = load_file(str(directory / WEIGHTS_NAME), device=str(map_location))
    load_state_dict_strict(model, state, str(directory / WEIGHTS_NAME))
    return model.to(map_location)


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` only if every key and shape matches; otherwise raise
    :class:`CheckpointError` naming each missing, unexpected and wrongly shaped key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        if shapes:
            parts.append(f"wrong shape {shapes}")
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(parts))
    model.load_state_dict(state)


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
        raise CheckpointError(f"{source} does not fit the model: wrong shape {wrong}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return sorted(set(own) - set(state)), sorted(set(state) - set(own))
