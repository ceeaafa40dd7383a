"""Heads of a classifier made from a dual encoder: zero-shot (the class prompts' text embeddings) or a
linear probe of the frozen image embeddings (LP-FT's first stage), and the classifier a labelled-data run
fine-tunes (:func:`classifier_model`, handed to the trainer's setup)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mumo.data.sources import data_source
from mumo.errors import TrainingError
from mumo.eval.classify import labelled_tensors
from mumo.eval.linear_probe import DEFAULT_L2_GRID, sweep_l2
from mumo.inference import build_classifier, embed_images
from mumo.models import CLIP, ImageClassifier, load_pretrained
from mumo.models._pretrained import model_folder
from mumo.train.config import TrainConfig

logger = logging.getLogger(__name__)


def zero_shot_head(
    clip: nn.Module, tokenizer: Any, class_names: Sequence[str], templates: Sequence[str]
) -> Tensor:
    """(C, E) head rows: per class, the renormalised mean text embedding of its prompts (``templates`` with
    one ``{}`` each), so that the classifier starts as zero-shot classification."""
    with torch.no_grad():
        return build_classifier(clip, tokenizer, list(class_names), templates).T.contiguous()


def zero_shot_start(pretrained: CLIP, finetuned: ImageClassifier, tokenizer: Any) -> ImageClassifier:
    """The classifier ``finetuned`` started from: ``pretrained`` with the zero-shot head of the same class
    names and prompts (both are in the fine-tuned model's config); WiSE-FT mixes the two."""
    c = finetuned.config
    head = zero_shot_head(pretrained, tokenizer, c.class_names, c.templates)
    return ImageClassifier.from_clip(pretrained, c.class_names, head, templates=c.templates)


def fit_probe_head(
    model: ImageClassifier,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
) -> dict[str, float]:
    """Set a classifier's head to a logistic-regression probe of its frozen image embeddings (LP-FT's first
    stage): the penalty is chosen on ``val``, the head fit on ``train`` alone, both (images (N, 3, H, W)
    normalised, labels (N,)). The probe's standardisation is folded into the head's weight and bias, so the
    classifier's logits equal the probe's.

    Returns:
        The chosen ``l2`` and the probe's ``val_accuracy``.
    """
    features = [(embed_images(model, images).double(), labels) for images, labels in (train, val)]
    best, scores, probe = sweep_l2(*features, len(model.class_names), l2_grid)
    weight = probe.weight / probe.std  # (C, E): logits = x @ weight.T + bias, for raw embeddings x
    bias = probe.bias - weight @ probe.mean
    with torch.no_grad():
        scale = model.head_scale.double()
        model.head.weight.copy_(weight / scale)
        model.head.bias.copy_(bias / scale)
    return {"l2": best, "val_accuracy": scores[best]}


def classifier_model(config: TrainConfig, tokenizer: Any, class_names: Sequence[str]) -> nn.Module:
    """The classifier a labelled-data run trains: made from the dual encoder ``init_from`` names (head per
    ``finetune.head``: zero_shot, random or linear_probe), or that classifier itself when ``init_from`` is
    one with the same classes."""
    pretrained = load_pretrained(model_folder(config.init_from))
    if getattr(pretrained, "image_size", None) not in (None, config.data.image_size):
        raise TrainingError(
            f"init_from={config.init_from} takes {pretrained.image_size}-px images; "
            f"set data.image_size={pretrained.image_size}"
        )
    kind = pretrained.config.model_type  # a classifier to fine-tune further, or the CLIP to make one from
    if kind == "image_classifier":
        if pretrained.class_names != tuple(class_names):
            raise TrainingError(
                f"init_from={config.init_from} classifies {list(pretrained.class_names)}, "
                f"the data has {list(class_names)}"
            )
        return pretrained
    if kind != "clip":
        raise TrainingError(
            f"init_from={config.init_from} is a {type(pretrained).__name__}; fine-tuning on labelled images "
            "starts from a CLIP dual encoder"
        )
    f = config.finetune
    tokenizer.context_length = pretrained.context_length
    head = zero_shot_head(pretrained, tokenizer, class_names, f.templates) if f.head == "zero_shot" else None
    model = ImageClassifier.from_clip(pretrained, class_names, head, templates=f.templates, seed=config.seed)
    if f.head == "linear_probe":
        source = data_source(config.data)
        mean, std = source.normalization or (None, None)
        splits = [labelled_tensors(source.split(s, augment=False), mean, std) for s in ("train", "val")]
        probe = fit_probe_head(model, *splits)
        logger.info("head from a linear probe: l2 %g, val accuracy %.3f", probe["l2"], probe["val_accuracy"])
    return model
