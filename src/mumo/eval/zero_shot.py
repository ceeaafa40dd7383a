"""Zero-shot classification (Radford et al., 2021, section 3.1): class names become text classifiers, and
free-text labels become probabilities (:func:`zero_shot_probs`).

Notation: N images, C classes, K templates, E embedding width.

Ties are broken pessimistically everywhere: an image counts as correct at top-k only when fewer than k
*other* classes score greater than *or equal to* its true class. A degenerate model whose scores are all
equal therefore scores 0, never a lucky 1/C.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mumo.errors import DataError
from mumo.inference import ZERO_SHOT_TEMPLATES, build_classifier, zero_shot_probs

__all__ = [
    "ZERO_SHOT_TEMPLATES",
    "build_classifier",
    "class_ranks",
    "confusion_matrix",
    "zero_shot_accuracy",
    "zero_shot_probs",
]

def _check(image_embeds: Tensor, classifier: Tensor, labels: Tensor) -> None:
    if image_embeds.ndim != 2 or classifier.ndim != 2 or image_embeds.shape[1] != classifier.shape[0]:
        raise DataError(
            f"expected image_embeds (N, E) and classifier (E, C), got {tuple(image_embeds.shape)} "
            f"and {tuple(classifier.shape)}"
        )
    if labels.shape != (image_embeds.shape[0],):
        raise DataError(f"expected labels shaped ({image_embeds.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= classifier.shape[1]):
        raise DataError(f"labels must lie in [0, {classifier.shape[1]}), got {labels.min()}..{labels.max()}")


def class_ranks(image_embeds: Tensor, classifier: Tensor, labels: Tensor, chunk_size: int = 4096) -> Tensor:
    """0-based rank of the true class for each image, ties counted against it.

    Args:
        image_embeds: (N, E).
        classifier: (E, C).
        labels: (N,) true class indices.
        chunk_size: images scored at once, bounding memory at chunk_size x C.

    Returns:
        (N,) long: the number of other classes scoring >= the true class.
    """
    _check(image_embeds, classifier, labels)
    labels = labels.to(image_embeds.device)
    ranks = []
    for emb, lab in zip(image_embeds.split(chunk_size), labels.split(chunk_size), strict=True):
        scores = emb @ classifier  # (n, C)
        true = scores.gather(1, lab[:, None])  # (n, 1)
        ranks.append((scores >= true).sum(dim=1) - 1)  # minus the true class itself
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def zero_shot_accuracy(
    image_embeds: Tensor, classifier: Tensor, labels: Tensor, topk: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Top-k accuracies of zero-shot classification.

    Args:
        image_embeds: (N, E) image embeddings.
        classifier: (E, C) from :func:`build_classifier`.
        labels: (N,) true class indices.
        topk: the k to report. A k >= C is well defined: every image is then correct.

    Returns:
        ``{"top1": ..., "top5": ...}``: fractions in [0, 1], ties counted as errors.
    """
    if any(k < 1 for k in topk):
        raise DataError(f"every k in topk must be >= 1, got {tuple(topk)}")
    if image_embeds.shape[0] == 0:
        raise DataError("no images to score")
    ranks = class_ranks(image_embeds, classifier, labels)
    return {f"top{k}": (ranks < k).float().mean().item() for k in topk}


def confusion_matrix(image_embeds: Tensor, classifier: Tensor, labels: Tensor) -> Tensor:
    """Counts of (true class, predicted class) over the images.

    The prediction is the arg-max score; on a tie it is the lowest class index (``torch.argmax``'s rule).

    Args:
        image_embeds: (N, E).
        classifier: (E, C).
        labels: (N,) true class indices.

    Returns:
        (C, C) long counts; rows are the true class, columns the predicted one, and it sums to N.
    """
    _check(image_embeds, classifier, labels)
    c = classifier.shape[1]
    labels = labels.to(image_embeds.device).long()
    if labels.numel() == 0:
        return torch.zeros(c, c, dtype=torch.long, device=image_embeds.device)
    preds = torch.cat([(emb @ classifier).argmax(dim=1) for emb in image_embeds.split(4096)])  # (N,)
    return torch.bincount(labels * c + preds, minlength=c * c).view(c, c)
