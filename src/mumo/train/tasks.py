"""Tasks: a model plus its objectives. The trainer only sees ``training_forward(batch) -> {name: loss}``.

Batch keys: ``images`` (B, 3, H, W) float, ``input_ids`` (B, T) long, ``attention_mask`` (B, T) 0/1.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn

from mumo.errors import ConfigError
from mumo.losses import ClipLoss, SigLipLoss
from mumo.models import CLIP


class Task(Protocol):
    """What the trainer needs of a task."""

    model: nn.Module

    def training_forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Named scalar losses of one batch; the trainer sums them with the configured weights."""
        ...

    def metrics(self) -> dict[str, float]:
        """Scalars worth logging besides the losses (e.g. the temperature)."""
        ...


class ContrastiveTask(nn.Module):
    """CLIP (softmax) or SigLIP (sigmoid) image-text contrastive learning of a dual encoder.

    Args:
        model: the dual encoder.
        loss: 'clip' or 'siglip' (the model needs a logit bias for SigLIP).
        rank, world_size: this process's place, for gathering negatives across processes.
    """

    def __init__(self, model: CLIP, loss: str = "clip", rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.model = model
        self.loss_name = loss
        if loss == "siglip":
            if model.logit_bias is None:
                raise ConfigError(
                    "the SigLIP loss needs a model with a logit bias: set model_overrides.init_logit_bias=-10"
                )
            self.loss_fn: nn.Module = SigLipLoss(rank=rank, world_size=world_size)
        else:
            self.loss_fn = ClipLoss(rank=rank, world_size=world_size)

    def training_forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.model(batch["images"], batch["input_ids"], batch["attention_mask"])
        if self.loss_name == "siglip":
            loss = self.loss_fn(out.image_embeds, out.text_embeds, out.logit_scale, out.logit_bias)
        else:
            negatives = None
            if "neg_input_ids" in batch:  # NegCLIP: generated hard-negative captions
                negatives = self.model.encode_text(batch["neg_input_ids"], batch["neg_attention_mask"])
            loss = self.loss_fn(out.image_embeds, out.text_embeds, out.logit_scale, text_negatives=negatives)
        return {"contrastive": loss}

    def metrics(self) -> dict[str, float]:
        scale, bias = self.model.scale_and_bias()
        out = {"temperature": 1.0 / scale.item()}
        if bias is not None:
            out["logit_bias"] = bias.item()
        return out
