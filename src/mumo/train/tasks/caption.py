"""The captioner's task: next-token prediction (captions, VQA answers, or text alone) and, for CoCa, ITC
from the same forward pass."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from mumo.errors import ConfigError
from mumo.losses.language import causal_lm_loss
from mumo.models.text import trim_padding
from mumo.train.tasks.base import ObjectiveTask


class CaptionTask(ObjectiveTask):
    """LM (and ITC when the captioner is contrastive, CoCa) for a :class:`~mumo.models.Captioner`; see
    :class:`ObjectiveTask` for the arguments. ``loss_mask`` (B, T) in the batch restricts the LM loss to
    some tokens (a VQA answer, not its question)."""

    @classmethod
    def supported(cls, model: nn.Module) -> tuple[str, ...]:
        return ("itc", "lm") if model.config.contrastive else ("lm",)

    def training_forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        if "neg_input_ids" in batch:
            raise ConfigError("generated hard negatives are for CLIP and fusion models; set hard_negatives=0")
        ids, mask = trim_padding(batch["input_ids"], batch["attention_mask"])
        out = self.model(batch.get("images"), ids, mask)  # one pass: logits and both embeddings
        losses: dict[str, Tensor] = {}
        if "lm" in self.objectives:
            target = batch.get("loss_mask")
            target = target[:, : ids.shape[1]] if target is not None else None
            losses["lm"] = causal_lm_loss(out.logits, ids, mask, target)
        if "itc" in self.objectives:
            losses["itc"] = self._itc(out.image_embeds, out.text_embeds, None)
        return losses
