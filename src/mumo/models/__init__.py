"""Models: configs, towers, the registry and checkpoint folders."""

from mumo.models._pretrained import load_pretrained, save_pretrained
from mumo.models._registry import (
    build_model,
    capabilities,
    create_model,
    get_model_config,
    list_models,
    register_architecture,
    register_model,
)
from mumo.models.captioner import Captioner, CaptionerConfig, CaptionerOutput, DecodeState
from mumo.models.classifier import ImageClassifier, ImageClassifierConfig
from mumo.models.clip import CLIP, CLIPConfig, CLIPOutput
from mumo.models.describe import ModelSummary, describe_model, num_params
from mumo.models.fusion import FusionConfig, FusionModel
from mumo.models.single_stream import SingleStream, SingleStreamConfig
from mumo.models.text import TextConfig, TextTransformer
from mumo.models.vision import ConvEncoder, VisionConfig, VisionTransformer, build_vision_tower

__all__ = [
    "CLIP",
    "Captioner",
    "CaptionerConfig",
    "CaptionerOutput",
    "DecodeState",
    "CLIPConfig",
    "CLIPOutput",
    "ConvEncoder",
    "FusionConfig",
    "FusionModel",
    "ImageClassifier",
    "ImageClassifierConfig",
    "ModelSummary",
    "SingleStream",
    "SingleStreamConfig",
    "TextConfig",
    "TextTransformer",
    "VisionConfig",
    "VisionTransformer",
    "build_model",
    "build_vision_tower",
    "capabilities",
    "create_model",
    "describe_model",
    "get_model_config",
    "list_models",
    "load_pretrained",
    "num_params",
    "register_architecture",
    "register_model",
    "save_pretrained",
]
