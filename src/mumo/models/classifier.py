"""An image classifier made from a pretrained dual encoder: the CLIP image path and a linear head on the
normalised image embedding (the fine-tuning setup of WiSE-FT, Wortsman et al., 2022).

images (B, 3, H, W) -> clip.encode_image -> (B, E), unit norm -> head -> * head_scale -> (B, C) logits

Zero-shot start: ``head.weight`` = the class text embeddings (C, E), ``head.bias = 0`` and ``head_scale`` =
the model's inverse temperature, so before any training the classifier's logits are exactly zero-shot
classification's, and fine-tuning starts from what pretraining already knows rather than from a random head
that first has to undo noise. The scale is a fixed buffer, not folded into the weights: unit-norm rows move
at the optimizer's step size, where rows scaled by ~50 would barely move.

The whole CLIP stays inside, text tower included (the classification loss never reaches it): a fine-tuned
classifier can still do zero-shot classification and retrieval, and weight-space ensembling can mix it with
its zero-shot start as one model of one architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mumo._config import Config, check
from mumo.models._registry import register_architecture
from mumo.models.clip import CLIP, CLIPConfig, WrapsCLIP

# Prompts of the zero-shot head when a recipe names none: one plain template, since a model pretrained on
# captions of a small world knows few phrasings.
CLASSIFIER_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


@dataclass
class ImageClassifierConfig(Config):
    model_type: Literal["image_classifier"] = "image_classifier"  # architecture tag stored in config.json
    clip: CLIPConfig = field(default_factory=CLIPConfig)  # the dual encoder the classifier is made from
    class_names: tuple[str, ...] = ()  # one per output, in label order
    templates: tuple[str, ...] = CLASSIFIER_TEMPLATES  # prompts of the zero-shot head, '{}' = class name

    def validate(self) -> None:
        check(
            len(self.class_names) >= 2, f"a classifier needs >= 2 class names, got {list(self.class_names)}"
        )
        check(len(set(self.class_names)) == len(self.class_names), "class names must be distinct")


class ImageClassifier(WrapsCLIP, nn.Module):
    """CLIP's image path plus a linear head; see the module docstring."""

    def __init__(self, config: ImageClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.clip = CLIP(config.clip)
        self.head = nn.Linear(config.clip.embed_dim, len(config.class_names))
        self.register_buffer("head_scale", torch.tensor(1.0))

    @classmethod
    def from_clip(
        cls,
        clip: CLIP,
        class_names: Sequence[str],
        tokenizer: Any = None,
        templates: Sequence[str] = CLASSIFIER_TEMPLATES,
        head: Literal["zero_shot", "random"] = "zero_shot",
        seed: int = 0,
    ) -> ImageClassifier:
        """A classifier holding a copy of ``clip``'s weights.

        Args:
            clip: the pretrained dual encoder (left untouched).
            class_names: C names, in label order.
            tokenizer: ``clip``'s tokenizer; needed for the zero-shot head.
            templates: prompts with one ``{}`` for the class name, averaged per class (zero-shot head).
            head: 'zero_shot' (text embeddings of the prompts) or 'random' (random unit rows, seeded by
                ``seed``); either way scaled by the model's inverse temperature.
        """
        if not isinstance(clip, CLIP):
            raise TypeError(f"a classifier is made from a CLIP dual encoder, got {type(clip).__name__}")
        config = ImageClassifierConfig(
            clip=clip.config, class_names=tuple(class_names), templates=tuple(templates)
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config).to(next(clip.parameters()).device)
        model.clip.load_state_dict(clip.state_dict())
        with torch.no_grad():
            model.head_scale.fill_(clip.scale_and_bias()[0].item())
            model.head.weight.copy_(F.normalize(model.head.weight, dim=-1))
            model.head.bias.zero_()
        if head == "zero_shot":
            if tokenizer is None:
                raise ValueError("a zero-shot head needs the model's tokenizer to embed the class prompts")
            from mumo.inference import build_classifier  # eval builds on models, not the reverse

            with torch.no_grad():
                weights = build_classifier(clip, tokenizer, list(class_names), templates)  # (E, C)
                model.head.weight.copy_(weights.T)
        elif head != "random":
            raise ValueError(f"head must be 'zero_shot' or 'random', got {head!r}")
        return model

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, C) class logits."""
        return self.head(self.clip.encode_image(images)) * self.head_scale


register_architecture("image_classifier", ImageClassifierConfig, ImageClassifier)
