"""mumo: build, pretrain, fine-tune, evaluate and serve vision-language models in PyTorch.

The public API is what this module re-exports; the CLI and the server only call it.
"""

__version__ = "0.1.0"

from mumo.data.tokenizer import TokenBatch, Tokenizer  # noqa: E402
from mumo.errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    DataError,
    MumoError,
    TokenizerError,
    UnknownModelError,
)
from mumo.losses import ClipLoss, SigLipLoss, clip_loss, info_nce, siglip_loss  # noqa: E402
from mumo.models import (  # noqa: E402
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

__all__ = [
    "CLIP",
    "CLIPConfig",
    "CLIPOutput",
    "CheckpointError",
    "ClipLoss",
    "ConfigError",
    "DataError",
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
    "load_pretrained",
    "save_pretrained",
    "siglip_loss",
]
