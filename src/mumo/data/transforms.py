"""Image transforms for contrastive training and evaluation, built from ``torchvision.transforms.v2``.

Both transforms take a PIL image (or a uint8 (3, H, W) tensor) and return a float32 (3, S, S) tensor
normalised with OpenAI CLIP's statistics by default. Geometry runs on the PIL image, before the tensor
conversion, so resampling is Pillow's bicubic, as in CLIP and OpenCLIP.

Randomness: the train transform draws its crop from torch's *global* generator (torchvision's
``RandomResizedCrop`` takes no ``torch.Generator``). It is therefore deterministic when the caller seeds
torch right before the call, e.g. ``torch.manual_seed(hash((seed, epoch, index)))``, or, to leave the
global stream untouched, inside ``with torch.random.fork_rng(): torch.manual_seed(...); x = t(img)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.transforms import v2

from mumo.errors import DataError

# OpenAI CLIP's per-channel statistics (RGB), which OpenCLIP and HF CLIP reuse for every CLIP model.
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)  # SigLIP (Zhai et al., 2023) scales pixels to [-1, 1]
SIGLIP_STD = (0.5, 0.5, 0.5)


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    # ToPureTensor last: downstream code (collate, torch.stack, the model) wants plain tensors, not
    # tv_tensors.Image subclasses that change how some ops dispatch.
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
        v2.ToPureTensor(),
    ]


def train_transform(
    image_size: int,
    scale: tuple[float, float] = (0.9, 1.0),
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> v2.Compose:
    """Random resized crop + normalisation: PIL image -> (3, image_size, image_size) float32.

    There is deliberately no horizontal flip: captions say "left" and "right", and a flip would make
    those words noise (or teach the opposite).

    Args:
        image_size: side S of the square output.
        scale: range of the crop's area as a fraction of the image; OpenCLIP's (0.9, 1.0) keeps most of
            the content the caption may mention.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by.

    Returns:
        A callable; random crops come from torch's global generator (see the module docstring).
    """
    _check_size(image_size)
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise DataError(f"scale must satisfy 0 < low <= high <= 1, got {tuple(scale)}")
    crop = v2.RandomResizedCrop(
        image_size, scale=scale, interpolation=v2.InterpolationMode.BICUBIC, antialias=True
    )
    return v2.Compose([crop, *_to_normalized_tensor(mean, std)])


def eval_transform(
    image_size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> v2.Compose:
    """Resize the shorter side to ``image_size``, centre-crop, normalise: -> (3, S, S) float32.

    Args:
        image_size: side S of the square output.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by.

    Returns:
        A deterministic callable.
    """
    _check_size(image_size)
    resize = v2.Resize(image_size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
    return v2.Compose([resize, v2.CenterCrop(image_size), *_to_normalized_tensor(mean, std)])


def normalize(
    images: Tensor,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> Tensor:
    """Normalise already-sized images for a model: uint8 in [0, 255] or float in [0, 1].

    Args:
        images: (..., 3, H, W); uint8 is divided by 255 first, floating point is taken to be in [0, 1].
        mean: per-channel mean.
        std: per-channel standard deviation.

    Returns:
        (..., 3, H, W) float tensor ``(x - mean) / std`` (float32 for uint8 input, else the input dtype).
    """
    if images.ndim < 3 or images.shape[-3] != 3:
        raise DataError(f"expected images shaped (..., 3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        x = images.to(torch.float32) / 255.0
    elif images.is_floating_point():
        x = images
    else:
        raise DataError(f"expected uint8 or floating-point images, got {images.dtype}")
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - m) / s


def _check_size(image_size: int) -> None:
    if image_size <= 0:
        raise DataError(f"image_size must be positive, got {image_size}")
