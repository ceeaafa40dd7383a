"""The fusion families' tasks: a :class:`~mumo.models.FusionModel` (cross-attention over a dual encoder's
tokens; any of ITC, ITM, MLM, with hard or soft text sharing) and a :class:`~mumo.models.SingleStream`
(one Transformer over patches and text; ITM and MLM, having no separate embeddings to contrast).

ITM negatives: for each image a text and for each text an image, mined from the ITC similarities when the
model has them (ALBEF) and uniform in-batch otherwise (ViLT); plus, when the batch carries generated
negative captions, each of them paired with its image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mumo.losses.language import mask_tokens, masked_lm_loss
from mumo.losses.matching import itm_loss, itm_pair_indices, mine_hard_negatives, random_negatives
from mumo.train.tasks.base import ObjectiveTask


def first_per_group(index: Tensor, n: int) -> Tensor:
    """(M,) long indices of the rows among the first ``n`` of their group; ``index`` is (M,) sorted group
    ids (the image row of each generated negative, as the collate lays them out)."""
    m = index.shape[0]
    if m == 0:
        return index
    starts = torch.ones(m, dtype=torch.bool, device=index.device)
    starts[1:] = index[1:] != index[:-1]
    positions = torch.arange(m, device=index.device)
    first = torch.cummax(torch.where(starts, positions, torch.zeros_like(positions)), dim=0).values
    return (positions - first < n).nonzero().squeeze(1)


class _MatchingTask(ObjectiveTask):
    """ITM pairs and MLM, shared by the two fusion families."""

    def itm_pairs(
        self, batch: dict[str, Any], b: int, neg_text: Tensor, neg_image: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(image rows, text rows, labels) of the ITM pairs: each image with its caption and a negative text,
        each caption with a negative image (3B pairs), then the generated negatives with their images. Text
        rows index the captions followed by the generated negatives (see :meth:`texts`)."""
        image_rows, text_rows, labels = itm_pair_indices(neg_text, neg_image)
        if self.itm_generated_negatives and "neg_input_ids" in batch:
            keep = first_per_group(batch["neg_index"], self.itm_generated_negatives)
            image_rows = torch.cat([image_rows, batch["neg_index"][keep]])
            text_rows = torch.cat([text_rows, b + keep])
            labels = torch.cat([labels, labels.new_zeros(keep.shape[0])])
        return image_rows, text_rows, labels

    def mlm(self, context: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        """Masked-LM loss of the captions (B, T) read against ``context`` (what the model fuses them with)."""
        vocab = self.model.mlm_head[-1].out_features
        masked, targets = mask_tokens(
            ids, mask, self.mask_id, vocab, self.special_ids, self.mlm_probability, self.generator
        )
        return masked_lm_loss(self.model.mlm_logits(context, masked, mask), targets)


class FusionTask(_MatchingTask):
    """Any weighted mix of ITC, ITM (negatives mined from the ITC similarities) and MLM for a
    :class:`~mumo.models.FusionModel`; see :class:`ObjectiveTask` for the arguments."""

    objectives_supported = ("itc", "itm", "mlm")

    @property
    def pad_id(self) -> int:
        return self.model.config.clip.text.pad_id

    def training_forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        model = self.model
        ids, mask, all_ids, all_mask = self.texts(batch)
        b = ids.shape[0]
        image_embeds, context = model.encode_image_and_tokens(batch["images"])  # (B, E), (B, S, Cv)
        text_all, tokens = model.encode_text_and_tokens(all_ids, all_mask)  # (B + M, E), (B + M, T, C)
        text_embeds = text_all[:b]
        losses: dict[str, Tensor] = {}
        if "itc" in self.objectives:
            negatives = text_all[b:] if "neg_input_ids" in batch else None  # NegCLIP: in the denominator
            losses["itc"] = self._itc(image_embeds, text_embeds, negatives)
        if "itm" in self.objectives:  # ALBEF: negatives mined from the contrastive similarities
            scale = self.scale_and_bias()[0].detach()
            sim = scale * image_embeds.detach() @ text_embeds.detach().T  # (B, B)
            neg_text, neg_image = mine_hard_negatives(sim, generator=self.generator)
            image_rows, text_rows, labels = self.itm_pairs(batch, b, neg_text, neg_image)
            # Each text is encoded once however many images it meets (ALBEF); soft sharing reads the fusion
            # side's own tower.
            fusion_tokens = tokens if model.fusion_text is None else model.text_tokens(all_ids, all_mask)
            logits = model.itm_logits(
                context[image_rows], all_ids[text_rows], all_mask[text_rows], fusion_tokens[text_rows]
            )
            losses["itm"] = itm_loss(logits, labels)
        if "mlm" in self.objectives:
            losses["mlm"] = self.mlm(context, ids, mask)
        losses.update(model.regularizers())  # soft sharing's tie penalty
        return losses


class SingleStreamTask(_MatchingTask):
    """ITM (uniform in-batch negatives) and MLM for a :class:`~mumo.models.SingleStream`: every pair is
    fused from the pixels up; see :class:`ObjectiveTask` for the arguments."""

    objectives_supported = ("itm", "mlm")

    @property
    def pad_id(self) -> int:
        return self.model.config.pad_id

    def training_forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        images = batch["images"]
        ids, mask, all_ids, all_mask = self.texts(batch)
        losses: dict[str, Tensor] = {}
        if "itm" in self.objectives:
            neg_text, neg_image = random_negatives(ids.shape[0], self.generator, ids.device)
            image_rows, text_rows, labels = self.itm_pairs(batch, ids.shape[0], neg_text, neg_image)
            logits = self.model.itm_logits(images[image_rows], all_ids[text_rows], all_mask[text_rows])
            losses["itm"] = itm_loss(logits, labels)
        if "mlm" in self.objectives:
            losses["mlm"] = self.mlm(images, ids, mask)
        return losses
