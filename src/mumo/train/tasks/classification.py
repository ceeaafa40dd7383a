"""The classifier's task: cross-entropy on labelled images (fine-tuning an image classifier made from a
dual encoder)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ClassificationTask(nn.Module):
    """Cross-entropy of an :class:`~mumo.models.classifier.ImageClassifier` on labelled images (batch keys
    ``images`` (B, 3, H, W) and ``labels`` (B,)); the one loss is named 'cls'.

    Args:
        label_smoothing: mass spread evenly over the other classes (0: plain cross-entropy).
    """

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model, self.label_smoothing = model, label_smoothing
        self._correct = self._seen = 0

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """:meth:`training_forward`, so that DistributedDataParallel can wrap the task."""
        return self.training_forward(batch)

    def reseed(self, position: int, device: torch.device | str = "cpu") -> None:
        """Nothing is drawn at random here (kept for the trainer's Task interface)."""

    def training_forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        logits = self.model(batch["images"])  # (B, C)
        with torch.no_grad():
            self._correct += int((logits.argmax(dim=1) == batch["labels"]).sum())
            self._seen += int(batch["labels"].shape[0])
        return {"cls": F.cross_entropy(logits, batch["labels"], label_smoothing=self.label_smoothing)}

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        return losses["cls"]

    def metrics(self) -> dict[str, float]:
        """Training accuracy over the batches since the last call."""
        out = {"train_accuracy": self._correct / self._seen} if self._seen else {}
        self._correct = self._seen = 0
        return out

    @classmethod
    def from_config(
        cls, model: nn.Module, config: Any, tokenizer: Any, rank: int = 0, world_size: int = 1
    ) -> ClassificationTask:
        """The task of a fine-tuning run (objectives ``[cls]``)."""
        return cls(model)
