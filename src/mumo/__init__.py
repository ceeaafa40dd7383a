"""mumo: build, pretrain, fine-tune, evaluate and serve vision-language models in PyTorch.

The public API is what this module re-exports; the CLI and the server only call it.

The names load on first use (PEP 562): ``import mumo.errors`` or ``mumo --help`` must not pay for importing
torch (seconds), so this module imports nothing heavy itself. ``mumo.create_model`` imports
:mod:`mumo.models` the first time it is read, and every later read is an ordinary attribute.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from mumo.version import __version__

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ below imports these
    from mumo.data.tokenizer import TokenBatch, Tokenizer
    from mumo.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        MissingExtraError,
        MumoError,
        TokenizerError,
        UnknownModelError,
    )
    from mumo.inference import load
    from mumo.losses import ClipLoss, SigLipLoss, clip_loss, info_nce, siglip_loss
    from mumo.models import (
        CLIP,
        CLIPConfig,
        CLIPOutput,
        TextConfig,
        VisionConfig,
        create_model,
        get_model_config,
        list_models,
        load_pretrained,
        save_pretrained,
    )

# Each public name and the module it is imported from (the room's public surface that defines it).
_EXPORTS: dict[str, str] = {
    "TokenBatch": "mumo.data.tokenizer",
    "Tokenizer": "mumo.data.tokenizer",
    **dict.fromkeys(
        [
            "CheckpointError",
            "ConfigError",
            "DataError",
            "MissingExtraError",
            "MumoError",
            "TokenizerError",
            "UnknownModelError",
        ],
        "mumo.errors",
    ),
    "load": "mumo.inference",
    **dict.fromkeys(["ClipLoss", "SigLipLoss", "clip_loss", "info_nce", "siglip_loss"], "mumo.losses"),
    **dict.fromkeys(
        [
            "CLIP",
            "CLIPConfig",
            "CLIPOutput",
            "TextConfig",
            "VisionConfig",
            "create_model",
            "get_model_config",
            "list_models",
            "load_pretrained",
            "save_pretrained",
        ],
        "mumo.models",
    ),
}

__all__ = [
    "CLIP",
    "CLIPConfig",
    "CLIPOutput",
    "CheckpointError",
    "ClipLoss",
    "ConfigError",
    "DataError",
    "MissingExtraError",
    "MumoError",
    "SigLipLoss",
    "TextConfig",
    "TokenBatch",
    "Tokenizer",
    "TokenizerError",
    "UnknownModelError",
    "VisionConfig",
    "__version__",
    "clip_loss",
    "create_model",
    "get_model_config",
    "info_nce",
    "list_models",
    "load",
    "load_pretrained",
    "save_pretrained",
    "siglip_loss",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use; a subpackage (``mumo.train``) on first access."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later reads skip this function
        return value
    # `import mumo; mumo.models.Captioner` worked while this module imported its rooms eagerly; keep it.
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names too, before their first use has imported them (for tab completion and help())."""
    return sorted({*globals(), *_EXPORTS})
