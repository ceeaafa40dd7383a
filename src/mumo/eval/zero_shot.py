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
import torch.nn.functional as F
from torch import Tensor, nn

from mumo.data.tokenizer import Tokenizer
from mumo.errors import ConfigError, DataError
from mumo.eval.embed import embed_texts

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
        model: a dual encoder (see :func:`mumo.eval.embed_texts`).
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
        image_embeds: (N, E) image embeddings (e.g. :func:`mumo.eval.embed_images`); normalised here.
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
