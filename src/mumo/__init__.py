"""mumo: build, pretrain, fine-tune, evaluate and serve vision-language models in PyTorch.

The public API is what this module re-exports; the CLI and the server only call it.
"""

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
from mumo.version import __version__

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
