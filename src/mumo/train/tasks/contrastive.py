"""The dual encoder's task (CLIP): image-text contrastive learning, with generated hard negatives in the
denominator (NegCLIP) and, for large batches in little memory, gradient caching."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mumo.models.text import trim_padding
from mumo.train.grad_cache import grad_cache_backward
from mumo.train.tasks.base import ObjectiveTask


class ContrastiveTask(ObjectiveTask):
    """ITC of a :class:`~mumo.models.CLIP` (CLIP's or SigLIP's loss); see :class:`ObjectiveTask` for the
    arguments."""

    objectives_supported = ("itc",)

    def training_forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        ids, _, all_ids, all_mask = self.texts(batch)
        b = ids.shape[0]
        image_embeds = self.model.encode_image(batch["images"])  # (B, E)
        text_all = self.model.encode_text(all_ids, all_mask)  # (B + M, E): captions, then negatives
        negatives = text_all[b:] if "neg_input_ids" in batch else None  # NegCLIP: in the denominator
        return {"itc": self._itc(image_embeds, text_all[:b], negatives)}

    def grad_cache_step(
        self, batch: dict[str, Any], chunk_size: int, scale: float = 1.0
    ) -> dict[str, Tensor]:
        """The ITC loss over the whole batch with gradients accumulated chunk by chunk (see
        :mod:`mumo.train.grad_cache`): the same gradient as ``training_forward`` + backward, at the memory
        of ``chunk_size`` samples. Runs the backward itself; returns the detached loss."""
        if "neg_input_ids" in batch:
            return super().grad_cache_step(batch, chunk_size, scale)
        ids, mask = trim_padding(batch["input_ids"], batch["attention_mask"])
        images, model = batch["images"], self.model

        def embed(start: int, end: int) -> tuple[Tensor, Tensor]:
            return model.encode_image(images[start:end]), model.encode_text(ids[start:end], mask[start:end])

        loss_fn = lambda image, text: self._itc(image, text, None)  # noqa: E731
        return {"itc": grad_cache_backward(model, embed, loss_fn, ids.shape[0], chunk_size, scale)}
