"""Inference with a dual encoder: embed images, files and texts in batches without gradients, and turn free
text labels into zero-shot probabilities (the one zero-shot of the CLI, the server and evaluation).

The model only needs ``encode_image(images (B, 3, H, W)) -> (B, E)`` and
``encode_text(input_ids (B, T), attention_mask (B, T)) -> (B, E)``, as :class:`mumo.CLIP` has, and for
zero-shot probabilities ``scale_and_bias()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from mumo.data.clip_tokenizer import ClipTokenizer
from mumo.data.pairs import IMAGE_SUFFIXES, Skipped, list_images, load_rgb
from mumo.data.tokenizer import Tokenizer, load_tokenizer
from mumo.data.transforms import eval_transform
from mumo.errors import ConfigError, DataError
from mumo.layers.frozen_linear import (
    INT8_K_MULTIPLE,
    MIN_PACKED_SIZE,
    PRECISIONS,
    FrozenLinear,
    Precision,
    bf16_supported,
    freeze_linears,
)
from mumo.models import capabilities
from mumo.models._pretrained import load_pretrained, model_folder

logger = logging.getLogger(__name__)


def load(path: str | Path) -> tuple[nn.Module, Tokenizer | ClipTokenizer]:
    """A model, in eval mode, and its tokenizer (cut to the model's context length) from a model folder, a
    run folder (its ``final/``) or a training checkpoint: where every command using a trained model starts.

    Example:
        >>> model, tokenizer = mumo.load("runs/demo")
        >>> embed_texts(model, tokenizer, ["a red circle"]).shape  # (1, E)
    """
    folder = model_folder(path)
    model = load_pretrained(folder).eval()
    return model, load_tokenizer(folder, context_length=model.context_length)


def freeze(model: nn.Module, precision: Precision = "fp32", min_size: int = MIN_PACKED_SIZE) -> nn.Module:
    """Freeze ``model`` for inference, in place, and return it: eval mode, no gradients, and every linear
    layer (a captioner's output layer too) at ``precision``, in the layout the CPU's kernels read fastest
    (:mod:`mumo.layers.frozen_linear`). What decoding runs on: at batch 1 a token step reads every weight
    once, so a decoder of large matrices decodes ~1.5x faster frozen at fp32, ~2x at bf16 and ~3x at int8.

    Args:
        precision: ``fp32`` (results as unfrozen up to summation order), ``bf16`` (half the bytes; pays on
            CPUs with AVX-512 BF16 or AMX) or ``int8`` (weight-only, per output channel; CPU only).
        min_size: fp32 and bf16 layers of fewer weights (out x in) keep fp32 ``F.linear``, faster there.

    A frozen model cannot be saved or trained: freeze the model you serve, not the one you keep.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = model_device(model)
    if precision == "int8" and device.type != "cpu":
        raise ConfigError(f"int8 weights run on the CPU kernels; the model is on {device}: use bf16 there")
    if precision == "bf16" and device.type == "cpu" and not bf16_supported():
        logger.warning("this CPU has no bf16 instructions (AVX-512 BF16 or AMX): bf16 weights will be slow")
    model.eval().requires_grad_(False)
    freeze_linears(model, precision, min_size)
    if "generate" in capabilities(model):
        model.freeze_head(precision, min_size)
    if precision == "int8":
        layers = [m for m in model.modules() if isinstance(m, FrozenLinear)]
        kept = sum(m.dtype != torch.int8 for m in layers)
        if kept:  # faster and more exact than int8 would be, but not what was asked: say so
            logger.warning(
                "%d of %d linear layers stay fp32: int8 needs in_features divisible by %d",
                kept,
                len(layers),
                INT8_K_MULTIPLE,
            )
    return model


def image_transform(model: nn.Module) -> Callable[[Image.Image], Tensor]:
    """What an RGB image must become for ``model``: resized and centre-cropped to its ``image_size``, then
    normalised as its weights expect (``model.image_normalization``: CLIP's mean and std unless the vision
    config names others, e.g. SigLIP's 0.5). -> (3, S, S) float32."""
    normalization = getattr(model, "image_normalization", None) or ()
    return eval_transform(model.image_size, *normalization)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    # Restore each submodule's own flag, not just the root's: model.train(True) would also wake up
    # submodules the caller froze in eval mode (e.g. a frozen tower with dropout or batch norm).
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _batches(images: Tensor | Iterable[Tensor], batch_size: int) -> Iterable[Tensor]:
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise DataError(f"expected images shaped (N, 3, H, W), got {tuple(images.shape)}")
        return images.split(batch_size)
    return images


def embed_images(
    model: nn.Module,
    images: Tensor | Iterable[Tensor],
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> Tensor:
    """Image embeddings of every image, in order.

    Args:
        model: a dual encoder with ``encode_image``; put it on ``device`` first (it is not moved).
        images: one (N, 3, H, W) tensor, split into ``batch_size`` chunks, or an iterable of
            (B, 3, H, W) batches (e.g. a DataLoader yielding image tensors), used as they come.
        batch_size: rows per forward pass when ``images`` is a tensor.
        device: where the forward passes run; defaults to the device of the model's parameters.

    Returns:
        (N, E) float32 embeddings on ``device`` (unit norm for :class:`mumo.CLIP`).
    """
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device) if device is not None else model_device(model)
    out: list[Tensor] = []
    with eval_mode(model), torch.inference_mode():
        for batch in _batches(images, batch_size):
            out.append(model.encode_image(batch.to(device)).float())
    if not out:
        raise DataError("no images to embed")
    return torch.cat(out)


def embed_texts(
    model: nn.Module,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> Tensor:
    """Text embeddings of every text, in order.

    Texts are encoded with the tokenizer's own ``context_length`` and padding, so long texts are cut
    (end token kept) and counted by the tokenizer, exactly as in training.

    Args:
        model: a dual encoder with ``encode_text``; put it on ``device`` first (it is not moved).
        tokenizer: the model's tokenizer.
        texts: N strings.
        batch_size: texts per forward pass.
        device: where the forward passes run; defaults to the device of the model's parameters.

    Returns:
        (N, E) float32 embeddings on ``device`` (unit norm for :class:`mumo.CLIP`).
    """
    if isinstance(texts, str):
        raise DataError("texts must be a list of strings, not one string")
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    if len(texts) == 0:
        raise DataError("no texts to embed")
    device = torch.device(device) if device is not None else model_device(model)
    out: list[Tensor] = []
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer.encode(list(texts[start : start + batch_size]))
            ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
            out.append(model.encode_text(ids, mask).float())
    return torch.cat(out)


def images_under(folder: str | Path) -> list[Path]:
    """The image files under ``folder`` (recursively, by suffix, sorted), or a :class:`DataError` that
    says none were found and which suffixes count as images."""
    files = list_images(folder)
    if not files:
        raise DataError(f"no images found under {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def embed_image_files(
    model: nn.Module,
    paths: Sequence[str | Path],
    transform: Callable[[Image.Image], Tensor],
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, list[Path], list[Skipped]]:
    """Decode, transform and embed image files; unreadable ones are skipped, not fatal.

    Args:
        progress: called with (files done, read or skipped; all files) after each batch and at the end.

    Returns:
        (N, E) embeddings of the readable images, their N paths in order, and the skipped files with
        their reasons.
    """
    if len(paths) == 0:
        raise DataError("no image files to embed")
    kept: list[Path] = []
    skipped: list[Skipped] = []
    chunks: list[Tensor] = []
    visited = 0  # files decoded or skipped so far: the batch being embedded holds the last of them

    def images() -> Iterator[Tensor]:
        nonlocal visited
        batch: list[Tensor] = []
        for i, p in enumerate(paths):
            visited = i + 1
            image = load_rgb(p)
            if isinstance(image, str):
                skipped.append(Skipped(str(p), image, i))
                continue
            batch.append(transform(image))
            kept.append(Path(p))
            if len(batch) == batch_size:
                yield torch.stack(batch)
                batch = []
        if batch:
            yield torch.stack(batch)

    reported = 0
    for batch in images():
        chunks.append(embed_images(model, [batch], device=device))
        if progress is not None:
            progress(reported := visited, len(paths))
    if progress is not None and reported < len(paths):  # unreadable files after the last batch
        progress(len(paths), len(paths))
    if not chunks:
        reasons = ", ".join(f"{s.path} ({s.reason})" for s in skipped[:5])
        raise DataError(f"none of the {len(paths)} images could be read: {reasons}")
    return torch.cat(chunks), kept, skipped


# A small prompt ensemble; CLIP's paper reports ensembling several templates is worth ~3-5 points on
# ImageNet over the bare class name.
ZERO_SHOT_TEMPLATES: tuple[str, ...] = ("a {}.", "a photo of a {}.", "an image of a {}.", "there is a {}.")


def build_classifier(
    model: nn.Module,
    tokenizer: Tokenizer,
    class_names: Sequence[str],
    templates: Sequence[str] = ZERO_SHOT_TEMPLATES,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> Tensor:
    """Zero-shot classifier weights: per class, the renormalised mean of its template embeddings.

    For class c: ``w_c = normalize(mean_k normalize(encode_text(templates[k].format(c))))``.

    Args:
        model: a dual encoder (see :func:`mumo.inference.embed_texts`).
        tokenizer: the model's tokenizer.
        class_names: C names, filled into each template's ``{}``.
        templates: K format strings, each with one ``{}``.
        batch_size: texts per forward pass.
        device: where the forward passes run; defaults to the model's device.

    Returns:
        (E, C) classifier; ``image_embeds (N, E) @ classifier`` gives (N, C) cosine scores.
    """
    if len(class_names) == 0:
        raise DataError("class_names is empty")
    if isinstance(templates, str) or len(templates) == 0:
        raise ConfigError("templates must be a non-empty list of format strings such as 'a photo of a {}.'")
    for t in templates:
        if t.count("{}") != 1:
            raise ConfigError(f"template {t!r} must hold exactly one '{{}}' where the class name goes")
    texts = [t.format(name) for name in class_names for t in templates]  # class-major: (C * K,)
    embeds = embed_texts(model, tokenizer, texts, batch_size=batch_size, device=device)
    embeds = F.normalize(embeds, dim=-1).view(len(class_names), len(templates), -1)  # (C, K, E)
    return F.normalize(embeds.mean(dim=1), dim=-1).T.contiguous()  # (E, C)


def zero_shot_probs(
    model: nn.Module,
    tokenizer: Tokenizer,
    image_embeds: Tensor,
    labels: Sequence[str],
    templates: Sequence[str] = ("{}",),
    batch_size: int = 256,
) -> Tensor:
    """Probabilities over free-text labels: the one zero-shot of the CLI, the server and evaluation.

    ``softmax_c(scale * cos(image, w_c))`` with ``w_c`` from :func:`build_classifier` and ``scale`` the
    model's own inverse temperature (``scale_and_bias()``, what it was trained with: 100 for OpenCLIP's
    ViT-B-32, about 14.3 for a fresh model), not a fixed 100. A logit bias (SigLIP) shifts every label
    alike and cancels in the softmax.

    Args:
        model: a dual encoder with ``encode_text`` and ``scale_and_bias`` (:class:`mumo.CLIP`, a
            contrastive :class:`mumo.models.Captioner`, ...).
        tokenizer: the model's tokenizer.
        image_embeds: (N, E) image embeddings (e.g. :func:`mumo.inference.embed_images`); normalised here.
        labels: C label texts. With the default template ``"{}"`` they are used as typed ("a red circle");
            give templates such as ``("a photo of a {}.",)`` for bare class names, several to ensemble.
        templates: K format strings, each with one ``{}``.
        batch_size: texts per forward pass.

    Returns:
        (N, C) float32 probabilities, each row summing to 1, on ``image_embeds``' device.
    """
    if not hasattr(model, "scale_and_bias"):
        raise ConfigError(
            f"{type(model).__name__} has no temperature (scale_and_bias); zero-shot needs a dual encoder"
        )
    if image_embeds.ndim != 2:
        raise DataError(f"expected image_embeds (N, E), got {tuple(image_embeds.shape)}")
    classifier = build_classifier(model, tokenizer, labels, templates, batch_size=batch_size)  # (E, C)
    with torch.no_grad():
        scale = model.scale_and_bias()[0].detach().float().to(image_embeds.device)
    images = F.normalize(image_embeds.float(), dim=-1)  # (N, E)
    return (scale * images @ classifier.to(images.device)).softmax(dim=-1)  # (N, C)
