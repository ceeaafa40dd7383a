"""Retrieval on a file of image–caption pairs in which an image may have several captions.

The COCO / Flickr30k layout lists one caption per row and repeats the image. Rows are grouped by the
image's resolved path, so ``img/a.jpg`` and ``./img/../img/a.jpg`` are one image: each distinct image is
decoded and embedded once and is one gallery item, every caption is embedded, and the metric is
:func:`mumo.eval.retrieval_metrics` with the caption -> image mapping (a text finds its image; an image
finds any of its captions). An unreadable image is skipped together with its captions; both are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from mumo.data.pairs import PairsDataset, Skipped
from mumo.eval.retrieval import retrieval_metrics
from mumo.inference import embed_image_files, embed_texts


def group_by_image(paths: Sequence[str | Path]) -> dict[Path, list[int]]:
    """The row indices of each distinct image (by resolved path), images in order of first appearance."""
    groups: dict[Path, list[int]] = {}
    for row, path in enumerate(paths):
        groups.setdefault(Path(path).resolve(), []).append(row)
    return groups


def pairs_retrieval(
    model: nn.Module,
    tokenizer: Any,
    pairs: PairsDataset,
    transform: Callable[[Image.Image], Tensor],
    ks: Sequence[int] = (1, 5, 10),
    batch_size: int = 256,
) -> tuple[dict[str, Any], list[Skipped]]:
    """Image <-> text retrieval on the pairs of an annotation file, each image counted once.

    Args:
        model: a dual encoder (``encode_image`` / ``encode_text``).
        tokenizer: its tokenizer; captions longer than its context length are cut, and counted.
        pairs: the annotation file's rows (one caption each).
        transform: an RGB image -> its (3, H, W) model input, e.g. ``eval_transform(model.image_size)``.
        ks: the k of Recall@k.
        batch_size: images or texts per forward pass.

    Returns:
        The metrics ``{"retrieval": {R@k and ranks both ways, "n_images", "n_texts"}, "skipped": images
        skipped, "skipped_texts": their captions, "truncated_texts": captions cut}``, and the skipped
        images with their reasons.
    """
    groups = group_by_image([pairs.image_root / p for p in pairs.image_paths])
    image_embeds, kept, skipped = embed_image_files(model, list(groups), transform, batch_size=batch_size)
    rows = [groups[p] for p in kept]  # embed_image_files keeps the given order, so kept[i] is image i
    captions = [pairs.captions[r] for group in rows for r in group]
    text_to_image = torch.tensor([i for i, group in enumerate(rows) for _ in group])  # (T,)
    cut_before = tokenizer.total_truncated
    text_embeds = embed_texts(model, tokenizer, captions, batch_size=batch_size)  # (T, E)
    retrieval = retrieval_metrics(image_embeds, text_embeds, ks, text_to_image=text_to_image)
    metrics = {
        "retrieval": {**retrieval, "n_images": len(kept), "n_texts": len(captions)},
        "skipped": len(skipped),
        "skipped_texts": len(pairs) - len(captions),
        "truncated_texts": tokenizer.total_truncated - cut_before,
    }
    return metrics, skipped
