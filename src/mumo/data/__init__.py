"""Data: the tokenizer, the built-in shapes set, the data config and the data sets a run reads."""

from mumo.data.config import LABELLED_KINDS, DataConfig
from mumo.data.shapes import (
    COLOURS,
    SHAPES,
    SIZES,
    SPLITS,
    Scene,
    ShapeObject,
    ShapesConfig,
    ShapesDataset,
    canonical_caption,
    captions,
    class_index,
    class_names,
    generate_scene,
    hard_negatives,
    held_out_combinations,
    render,
    write_shapes,
)
from mumo.data.tokenizer import SPECIAL_TOKENS, TokenBatch, Tokenizer

__all__ = [
    "COLOURS",
    "LABELLED_KINDS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "SPECIAL_TOKENS",
    "DataConfig",
    "Scene",
    "ShapeObject",
    "ShapesConfig",
    "ShapesDataset",
    "TokenBatch",
    "Tokenizer",
    "canonical_caption",
    "captions",
    "class_index",
    "class_names",
    "generate_scene",
    "hard_negatives",
    "held_out_combinations",
    "render",
    "write_shapes",
]
