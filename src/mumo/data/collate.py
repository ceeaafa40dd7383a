"""Turn a list of samples (``{"image": (3, H, W), "caption": str}``) into a training batch.

Batch keys: ``images`` (B, 3, H, W) float normalised, ``input_ids`` (B, T), ``attention_mask`` (B, T),
``skipped`` (samples that could not be read, with their paths and reasons), ``num_truncated``; with a
``negatives`` function also ``neg_input_ids`` / ``neg_attention_mask`` (M, T): captions matching no image,
and ``neg_index`` (M,): the row of the image each was made from. With a ``class_prompts`` labeller also
``class_input_ids`` / ``class_attention_mask`` (C, T), the prompt of each of C classes, and ``class_index``
(B,): each sample's class among them, -1 for none. Samples with a ``prompt`` (a VQA
question whose answer ends the caption) add ``loss_mask`` (B, T): 1 on the tokens a language-model loss
should predict (the answer and <eot>), 0 on ``<bos>``, the prompt and padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from mumo.data.tokenizer import Tokenizer
from mumo.errors import DataError


class ClassLabeller(Protocol):
    """Class prompts and a sample's class among them (-1: none); see
    :class:`mumo.data.sources.ClassPrompts`."""

    texts: Sequence[str]

    def __call__(self, sample: dict[str, Any]) -> int: ...


class _Normalize:
    """(B, C, H, W) images in [0, 1] -> ``(x - mean) / std`` per channel; identity when either is None."""

    def __init__(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        self.on = mean is not None and std is not None
        self.mean = torch.tensor(mean).view(1, -1, 1, 1) if self.on else None
        self.std = torch.tensor(std).view(1, -1, 1, 1) if self.on else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalises in place: ``images`` is the batch the collate has just stacked, nobody else's."""
        return images.sub_(self.mean).div_(self.std) if self.on else images


class ImageTextCollate:
    """Stacks images, tokenizes captions and sets unreadable samples aside.

    Args:
        tokenizer: encodes the captions (to its ``context_length``).
        mean, std: per-channel normalisation applied to images in [0, 1]; None leaves images as they are
            (for transforms that normalise already).
        negatives: gives a sample its hard-negative captions (NegCLIP), batched as ``neg_*``.
        class_prompts: labels a sample with its class prompt's row, batched as ``class_*``.
        twins: rewrites the batch's samples before they are stacked (``data.twin_scenes``).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        negatives: Callable[[dict[str, Any]], list[str]] | None = None,
        class_prompts: ClassLabeller | None = None,
        twins: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.twins = twins
        self.negatives = negatives
        self.class_prompts = class_prompts
        self._class_tokens: Any = None  # the prompts tokenized once: they are the same in every batch
        self.normalize = _Normalize(mean, std)

    def __call__(self, samples: list[Any]) -> dict[str, Any]:
        good = [s for s in samples if isinstance(s, dict)]
        skipped = [s for s in samples if not isinstance(s, dict)]
        if not good:
            return {"images": None, "skipped": skipped, "num_truncated": 0}
        if self.twins is not None:
            good = self.twins(good)
        images = self.normalize(torch.stack([s["image"] for s in good]))
        tokens = self.tokenizer.encode([s["caption"] for s in good])
        batch = {
            "images": images,
            "input_ids": tokens.input_ids,
            "attention_mask": tokens.attention_mask,
            "skipped": skipped,
            "num_truncated": tokens.num_truncated,
        }
        if "prompt" in good[0]:
            prompts = [s["prompt"] for s in good]
            batch["loss_mask"] = self._answer_mask(prompts, tokens.input_ids, tokens.attention_mask)
        if self.negatives is not None:
            per_sample = [self.negatives(s) for s in good]
            texts = [t for negs in per_sample for t in negs]
            if texts:
                neg = self.tokenizer.encode(texts)
                batch["neg_input_ids"], batch["neg_attention_mask"] = neg.input_ids, neg.attention_mask
                batch["neg_index"] = torch.tensor(
                    [i for i, negs in enumerate(per_sample) for _ in negs], dtype=torch.long
                )
        if self.class_prompts is not None:
            if self._class_tokens is None:
                self._class_tokens = self.tokenizer.encode(list(self.class_prompts.texts))
            batch["class_input_ids"] = self._class_tokens.input_ids
            batch["class_attention_mask"] = self._class_tokens.attention_mask
            batch["class_index"] = torch.tensor([self.class_prompts(s) for s in good], dtype=torch.long)
        return batch

    def _answer_mask(
        self, prompts: list[str], input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        # The caption is "prompt answer"; byte-level BPE never merges across the space before the answer,
        # so the prompt's own tokens are a prefix of the caption's. Checked, not assumed.
        mask = attention_mask.clone()
        for i, ids in enumerate(self.tokenizer.encode_ids(prompts)):
            start = 1 + len(ids)  # after <bos> and the prompt
            if input_ids[i, 1:start].tolist() != ids:
                raise DataError(f"prompt {prompts[i]!r} does not tokenize as a prefix of its full text")
            mask[i, :start] = 0
        return mask


class LabelCollate:
    """Stacks labelled images (``{"image": (3, H, W), "label": int}``) into ``images`` (B, 3, H, W) and
    ``labels`` (B,), with unreadable samples set aside in ``skipped``; ``mean`` / ``std`` as for
    :class:`ImageTextCollate`."""

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        self.normalize = _Normalize(mean, std)

    def __call__(self, samples: list[Any]) -> dict[str, Any]:
        good = [s for s in samples if isinstance(s, dict)]
        skipped = [s for s in samples if not isinstance(s, dict)]
        if not good:
            return {"images": None, "skipped": skipped}
        images = self.normalize(torch.stack([s["image"] for s in good]))
        labels = torch.tensor([s["label"] for s in good], dtype=torch.long)
        return {"images": images, "labels": labels, "skipped": skipped}
