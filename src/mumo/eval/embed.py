"""Moved to :mod:`mumo.inference` (embedding is used by evaluation, serving, interop and the CLI alike);
these names stay here for one release."""

from mumo.data.pairs import list_images
from mumo.inference import embed_image_files, embed_images, embed_texts, eval_mode, images_under, model_device

__all__ = [
    "embed_image_files",
    "embed_images",
    "embed_texts",
    "eval_mode",
    "images_under",
    "list_images",
    "model_device",
]
