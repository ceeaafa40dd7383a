"""An image classifier made from a pretrained dual encoder: the CLIP image path and a linear head on the
normalised image embedding (the fine-tuning setup of WiSE-FT, Wortsman et al., 2022).

images (B, 3, H, W) -> clip.encode_image -> (B, E), unit norm -> head -> * head_scale -> (B, C) logits

Zero-shot start (:func:`mumo.run.heads.zero_shot_head`): ``head.weight`` = the class text embeddings
(C, E), ``head.bias = 0`` and ``head_scale`` = the model's inverse temperature, so before any training the
classifier's logits are exactly zero-shot classification's, and fine-tuning starts from what pretraining
already knows rather than from a random head that first has to undo noise. The scale is a fixed buffer, not
folded into the weights: unit-norm rows move at the optimizer's step size, where rows scaled by ~50 would
barely move.

The whole CLIP stays inside, text tower included (the classification loss never reaches it): a fine-tuned
classifier can still do zero-shot classification and retrieval, and weight-space ensembling can mix it with
its zero-shot start as one model of one architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

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

    capabilities = frozenset({"embed", "classify"})  # see mumo.models.capabilities

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
        head_weight: Tensor | None = None,
        head_bias: Tensor | None = None,
        templates: Sequence[str] = CLASSIFIER_TEMPLATES,
        seed: int = 0,
    ) -> ImageClassifier:
        """A classifier holding a copy of ``clip``'s weights and the head it is handed.

        Args:
            clip: the pretrained dual encoder (left untouched).
            class_names: C names, in label order.
            head_weight: (C, E) head rows, applied to the unit-norm image embedding before ``head_scale`` (the
                model's inverse temperature): the class prompts' text embeddings for a zero-shot head, or a
                linear probe's (see :mod:`mumo.run.heads`). None: random unit rows, seeded by ``seed``.
            head_bias: (C,) head bias; zero when None.
            templates: the prompts of the zero-shot head, recorded in the config (``{}`` = class name).
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
        shape = tuple(model.head.weight.shape)
        if head_weight is not None and tuple(head_weight.shape) != shape:
            raise ValueError(f"head_weight must be (C, E) = {shape}, got {tuple(head_weight.shape)}")
        if head_bias is not None and tuple(head_bias.shape) != shape[:1]:
            raise ValueError(f"head_bias must be (C,) = {shape[:1]}, got {tuple(head_bias.shape)}")
        with torch.no_grad():
            model.head_scale.fill_(clip.scale_and_bias()[0].item())
            weight = F.normalize(model.head.weight, dim=-1) if head_weight is None else head_weight
            model.head.weight.copy_(weight)
            model.head.bias.copy_(head_bias if head_bias is not None else torch.zeros(shape[0]))
        return model

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, C) class logits."""
        return self.head(self.clip.encode_image(images)) * self.head_scale


register_architecture("image_classifier", ImageClassifierConfig, ImageClassifier)
