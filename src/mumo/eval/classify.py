"""Accuracy of an image classifier (:class:`~mumo.models.classifier.ImageClassifier`) on labelled images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mumo.data.collate import LabelCollate
from mumo.inference import eval_mode, model_device


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Arg-max classes (N,) of ``model`` (images (B, 3, H, W) -> logits (B, C)) on images (N, 3, H, W), in
    eval mode (each submodule's mode restored after)."""
    device = model_device(model)
    with eval_mode(model):
        return torch.cat([model(x.to(device)).argmax(dim=1).cpu() for x in images.split(batch_size)])


@torch.no_grad()
def classifier_predictions(
    model: nn.Module,
    dataset: Dataset,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted classes (N,), true labels (N,)) of every readable sample of ``dataset`` (samples as
    :class:`~mumo.data.collate.LabelCollate` takes them; ``mean`` / ``std`` normalise images in [0, 1])."""
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=LabelCollate(mean, std))
    preds, labels = [], []
    for batch in loader:
        if batch["images"] is None:
            continue
        preds.append(predict(model, batch["images"], batch_size))
        labels.append(batch["labels"])
    if not preds:
        raise ValueError("no readable image in the data set")
    return torch.cat(preds), torch.cat(labels)


def classifier_accuracy(
    model: nn.Module,
    dataset: Dataset,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy (in [0, 1]) of ``model`` (images (B, 3, H, W) -> logits (B, C)) on ``dataset``."""
    preds, labels = classifier_predictions(model, dataset, mean, std, batch_size)
    return float((preds == labels).double().mean())


def labelled_tensors(
    dataset: Dataset,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every readable sample of a labelled data set as (images (N, 3, H, W) normalised, labels (N,)); for
    small sets (probes, sweeps) that are evaluated many times."""
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=LabelCollate(mean, std))
    batches = [b for b in loader if b["images"] is not None]
    if not batches:
        raise ValueError("no readable image in the data set")
    return torch.cat([b["images"] for b in batches]), torch.cat([b["labels"] for b in batches])
