"""Reading foreign weight files without pickle: safetensors, or ``torch.load(weights_only=True)``."""

from __future__ import annotations

from pathlib import Path

import torch

from mumo.errors import CheckpointError, ConfigError
from mumo.models._pretrained import read_safetensors


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from ``.safetensors`` or ``.bin`` / ``.pt`` / ``.pth``.

    PyTorch files are read with ``weights_only=True`` (no code runs); a training checkpoint's
    ``state_dict`` entry and DDP's ``module.`` prefixes are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad or unsafe files
        # their messages run to paragraphs; the first sentence says what failed
        why = str(e).strip().split("\n")[0].split(". ")[0][:160]
        raise CheckpointError(
            f"cannot read {path} as PyTorch weights (weights_only=True): {why}; is it damaged or truncated?"
        ) from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def hf_weights_file(folder: Path) -> Path:
    """The weights of a Hugging Face ``save_pretrained`` folder: ``model.safetensors``, else
    ``pytorch_model.bin``."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"{folder} has neither model.safetensors nor pytorch_model.bin")
