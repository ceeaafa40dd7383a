"""The dual encoder's task (CLIP): image-text contrastive learning, with generated hard negatives in the
denominator (NegCLIP), a class-prompt loss on labelled samples (UniCL) and, for large batches in little
memory, gradient caching."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from mumo.models.text import trim_padding
from mumo.train.grad_cache import grad_cache_backward
from mumo.train.tasks.base import ObjectiveTask, pad_cat


class ContrastiveTask(ObjectiveTask):
    """ITC of a :class:`~mumo.models.CLIP` (CLIP's or SigLIP's loss); see :class:`ObjectiveTask` for the
    arguments."""

    objectives_supported = ("itc",)
    class_prompts_supported = True

    def training_forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        ids, _, all_ids, all_mask = self.texts(batch)
        b, m = ids.shape[0], all_ids.shape[0]
        if "class_index" in batch:  # the class prompts join the same pass of the text tower
            class_ids, class_mask = trim_padding(batch["class_input_ids"], batch["class_attention_mask"])
            all_ids, all_mask = pad_cat(all_ids, class_ids, self.pad_id), pad_cat(all_mask, class_mask, 0)
        image_embeds = self.model.encode_image(batch["images"])  # (B, E)
        text_all = self.model.encode_text(all_ids, all_mask)  # (B + M [+ C], E): captions, negatives, prompts
        negatives = text_all[b:m] if "neg_input_ids" in batch else None  # NegCLIP: in the denominator
        losses = {"itc": self._itc(image_embeds, text_all[:b], negatives)}
        if "class_index" in batch:
            losses["prompt"] = self._prompt_loss(image_embeds, text_all[m:], batch["class_index"])
        return losses

    def _prompt_loss(self, image_embeds: Tensor, prompt_embeds: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of each labelled image over every class prompt, at the contrastive temperature.

        Args:
            image_embeds: (B, E) unit-norm image embeddings.
            prompt_embeds: (C, E) unit-norm embeddings of the class prompts.
            labels: (B,) each image's class, -1 for an image that has none (it does not count).

        Why: in-batch contrast and a few generated negatives set a lone object against only the classes
        that happen to be in its batch; the prompts set it against every class at every step, at the cost
        of C more short texts.
        """
        labelled = labels >= 0
        if not bool(labelled.any()):  # a batch without lone objects: a zero that keeps the graph whole
            return image_embeds.sum() * 0.0 + prompt_embeds.sum() * 0.0
        scale, _ = self.scale_and_bias()
        logits = scale * image_embeds[labelled] @ prompt_embeds.t()  # (B', C)
        return F.cross_entropy(logits, labels[labelled])

    def grad_cache_step(
        self, batch: dict[str, Any], chunk_size: int, scale: float = 1.0
    ) -> dict[str, Tensor]:
        """The ITC loss over the whole batch with gradients accumulated chunk by chunk (see
        :mod:`mumo.train.grad_cache`): the same gradient as ``training_forward`` + backward, at the memory
        of ``chunk_size`` samples. Runs the backward itself; returns the detached loss."""
        if "neg_input_ids" in batch or "class_index" in batch:
            return super().grad_cache_step(batch, chunk_size, scale)
        ids, mask = trim_padding(batch["input_ids"], batch["attention_mask"])
        images, model = batch["images"], self.model

        def embed(start: int, end: int) -> tuple[Tensor, Tensor]:
            return model.encode_image(images[start:end]), model.encode_text(ids[start:end], mask[start:end])

        loss_fn = lambda image, text: self._itc(image, text, None)  # noqa: E731
        return {"itc": grad_cache_backward(model, embed, loss_fn, ids.shape[0], chunk_size, scale)}
