"""Adapting a pretrained model: which parameters train, and how fast.

- **Chosen parameters** (``train_only``): only those whose names match train, e.g. ``^head\\.`` for a
  linear probe through the trainer (the first stage of LP-FT, Kumar et al., 2022).
- **Locked towers** (LiT, Zhai et al., 2022): a locked tower gets no gradient and keeps its batch-norm
  statistics; ``unlocked_layers`` lets its last N layers (blocks, conv stages) and what follows them train
  again. The projections into the joint space are not part of a tower and keep training: a tower brought
  from elsewhere (a pretrained text encoder) needs a learned map into the joint space.
- **LoRA** (see :mod:`mumo.layers.lora`): adapters on the layers the targets name, everything else frozen
  except what ``lora_also_train`` names (by default a classifier's head, which is new to the task).
- **Layer-wise learning-rate decay** (ELECTRA, BEiT): in every tower, layer k below the top learns at
  ``lr * decay**k``, so the early, general layers move least; everything outside the towers (projections,
  head, temperature) learns at ``lr``.

Towers are found by what they can say about themselves: every module with ``num_layers`` and
``layer_of(name)`` (the image and text towers of :mod:`mumo.models`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor, nn

from mumo._io import (
    MANIFEST_NAME,
    atomic_write,
    atomic_write_json,
    read_json,
    verify_manifest,
    write_manifest,
)
from mumo.errors import CheckpointError, ConfigError
from mumo.layers.lora import apply_lora, lora_layers
from mumo.models._pretrained import read_safetensors
from mumo.models.text import TextTransformer
from mumo.train.config import FinetuneConfig

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"


def towers(model: nn.Module) -> dict[str, nn.Module]:
    """The image and text towers of ``model`` by qualified name (``visual``, ``clip.text``, …)."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if hasattr(module, "num_layers") and hasattr(module, "layer_of") and name:
            if not any(name.startswith(f"{outer}.") for outer in found):
                found[name] = module
    return found


def _is_text(tower: nn.Module) -> bool:
    return isinstance(tower, TextTransformer) or getattr(tower, "is_text_tower", False)


def lock_towers(model: nn.Module, image: bool, text: bool, unlocked_layers: int = 0) -> list[str]:
    """Freeze the image and / or text towers of ``model``, all but their last ``unlocked_layers`` layers.

    Returns:
        The locked towers' names.

    Raises:
        ConfigError: a tower to lock does not exist, or ``unlocked_layers`` exceeds its depth.
    """
    locked = []
    for name, tower in towers(model).items():
        if not (text if _is_text(tower) else image):
            continue
        if unlocked_layers > tower.num_layers:
            raise ConfigError(
                f"{name} has {tower.num_layers} layers; finetune.unlocked_layers={unlocked_layers} is more"
            )
        first_trained = tower.num_layers + 1 - unlocked_layers if unlocked_layers else tower.num_layers + 2
        for pname, p in tower.named_parameters():
            p.requires_grad_(tower.layer_of(pname) >= first_trained)
        locked.append(name)
    wanted = [side for side, on in (("image", image), ("text", text)) if on]
    if wanted and not locked:
        raise ConfigError(f"finetune asks to lock the {' and '.join(wanted)} tower, but the model has none")
    return locked


def inference_only_modules(model: nn.Module, norm_stats: bool = False) -> list[nn.Module]:
    """The largest submodules none of whose parameters train: the trainer keeps them in eval mode, so a
    locked tower's batch norm keeps its statistics and its dropout stays off. With ``norm_stats``, every
    batch-norm layer too (its statistics stay, its scale and shift may train)."""
    out: list[tuple[str, nn.Module]] = []
    if norm_stats:
        out += [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for name, module in model.named_modules():
        if any(module is m or not outer or name.startswith(f"{outer}.") for outer, m in out):
            continue  # already listed, or inside a listed module
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            out.append((name, module))
    return [m for _, m in out]


def apply_finetune(model: nn.Module, config: FinetuneConfig) -> dict[str, Any]:
    """Lock towers or add LoRA adapters to ``model`` as ``config`` asks.

    Returns:
        A summary: trainable and total parameter counts, locked towers, LoRA layers.

    Raises:
        ConfigError: nothing would train, or a lock or LoRA target matches nothing.
    """
    summary: dict[str, Any] = {}
    if config.train_only:
        patterns = [re.compile(p) for p in config.train_only]
        for name, p in model.named_parameters():
            p.requires_grad_(any(pattern.search(name) for pattern in patterns))
    if config.lora_rank:
        try:
            names = apply_lora(
                model, config.lora_targets, config.lora_rank, config.lora_alpha, config.lora_dropout
            )
        except ValueError as e:
            raise ConfigError(f"finetune.lora_targets: {e}") from e
        patterns = [re.compile(p) for p in config.lora_also_train]
        for name, p in model.named_parameters():
            if any(pattern.search(name) for pattern in patterns):
                p.requires_grad_(True)
        summary["lora_layers"] = len(names)
    if config.lock_image or config.lock_text:
        summary["locked"] = lock_towers(model, config.lock_image, config.lock_text, config.unlocked_layers)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == 0:
        raise ConfigError("the finetune settings leave no parameter to train")
    summary["trainable_params"] = trainable
    summary["total_params"] = sum(p.numel() for p in model.parameters())
    return summary


def layer_lr_scales(model: nn.Module, decay: float) -> dict[str, float]:
    """Learning-rate factor per parameter name of ``model``: ``decay**(num_layers + 1 - layer)`` inside a
    tower (1 at its top), 1 elsewhere. Only parameters whose factor is not 1 are listed."""
    if decay == 1.0:
        return {}
    scales = {}
    for prefix, tower in towers(model).items():
        for name, _ in tower.named_parameters():
            scales[f"{prefix}.{name}"] = decay ** (tower.num_layers + 1 - tower.layer_of(name))
    return scales


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Every tensor that trains: LoRA adapters and whatever else is unfrozen (a classifier's head)."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(model: nn.Module, directory: str | Path, config: FinetuneConfig, base: str | None) -> Path:
    """Write the trained tensors of a LoRA model alone (``adapter.safetensors``, a few hundred KB) and how
    to rebuild them (``adapter.json``: the LoRA settings and the pretrained model they adapt)."""
    if not lora_layers(model):
        raise ConfigError("the model has no LoRA adapters to save")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = trainable_state_dict(model)
    atomic_write(directory / ADAPTER_WEIGHTS, lambda p: save_file(state, str(p)))
    meta = {
        "base": base,
        "lora_rank": config.lora_rank,
        "lora_alpha": config.lora_alpha,
        "lora_targets": list(config.lora_targets),
        "trained": sorted(state),
    }
    atomic_write_json(directory / ADAPTER_CONFIG, meta)
    write_manifest(directory)  # beside a saved model: its checksums now cover the adapter too
    return directory


def load_adapter(model: nn.Module, directory: str | Path) -> nn.Module:
    """Wrap ``model`` (the pretrained model, or a classifier made from it) with the LoRA layers an adapter
    folder describes and load its tensors; every saved tensor must find its place."""
    directory = Path(directory)
    for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory} has no {name}; is it a LoRA run's final/ folder?")
    if (directory / MANIFEST_NAME).is_file():
        verify_manifest(directory)
    meta = read_json(directory / ADAPTER_CONFIG)
    if not isinstance(meta, dict) or not {"lora_targets", "lora_rank", "lora_alpha"} <= meta.keys():
        raise CheckpointError(f"{directory / ADAPTER_CONFIG} does not describe a LoRA adapter")
    apply_lora(model, meta["lora_targets"], meta["lora_rank"], meta["lora_alpha"])
    state = read_safetensors(directory / ADAPTER_WEIGHTS)
    own = model.state_dict()
    bad = sorted(k for k in state if k not in own or own[k].shape != state[k].shape)
    if bad:
        raise CheckpointError(f"adapter {directory} does not fit the model: {bad[:4]}")
    model.load_state_dict(state, strict=False)
    return model
