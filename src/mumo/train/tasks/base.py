"""What the Tasks built on a set of objectives share: the objectives checked against what the model family
supports, the contrastive loss, the task's own random draws, the texts of a batch with its generated
negatives, and the weighting of the losses.

Batch keys: ``images`` (B, 3, H, W) float, ``input_ids`` (B, T) long, ``attention_mask`` (B, T) 0/1; with
generated hard negatives (NegCLIP) also ``neg_input_ids`` / ``neg_attention_mask`` (M, T) and ``neg_index``
(M,), the image row each negative caption was made from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mumo.errors import ConfigError
from mumo.losses import ClipLoss, SigLipLoss
from mumo.losses.weighting import build_weighting
from mumo.models.text import trim_padding

OBJECTIVES = ("itc", "itm", "mlm", "lm")  # and 'cls', ClassificationTask's


def pad_cat(a: Tensor, b: Tensor, pad: int) -> Tensor:
    """Concatenate (N, T1) and (M, T2) token tensors along rows, right-padding the narrower with ``pad``."""
    t = max(a.shape[1], b.shape[1])
    return torch.cat([F.pad(a, (0, t - a.shape[1]), value=pad), F.pad(b, (0, t - b.shape[1]), value=pad)])


class ObjectiveTask(nn.Module):
    """A model trained on a weighted mix of named objectives; subclasses give the family's losses.

    Args:
        model: a model of the family the subclass trains.
        objectives: a non-empty subset of what :meth:`supported` allows for ``model``.
        loss: contrastive loss, 'clip' or 'siglip' (the model needs a logit bias for SigLIP).
        weighting: 'fixed' (``weights``, missing = 1) or 'uncertainty' (learned, Kendall et al.).
        weights: fixed weights per loss name ('itc', 'itm', 'mlm', 'tie').
        mask_id, special_ids: the tokenizer's ``<mask>`` id and the ids MLM never masks (pad, bos, eot).
        mlm_probability: chance of masking each eligible token.
        itm_generated_negatives: how many of each sample's generated negative captions (the first ones, whose
            kinds rotate from sample to sample) ITM also scores, each paired with its image.
        seed: seeds the task's own draws (negatives, masks); see :meth:`reseed`.
        rank, world_size: this process's place, for gathering contrastive negatives across processes.
    """

    objectives_supported: ClassVar[tuple[str, ...]] = ()
    class_prompts_supported: ClassVar[bool] = False  # trains on data.class_prompts (ContrastiveTask)

    def __init__(
        self,
        model: nn.Module,
        objectives: Sequence[str] = ("itc",),
        loss: str = "clip",
        weighting: str = "fixed",
        weights: Mapping[str, float] | None = None,
        mask_id: int | None = None,
        special_ids: Sequence[int] = (),
        mlm_probability: float = 0.15,
        itm_generated_negatives: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        self.model = model
        self.objectives = tuple(objectives)
        allowed = self.supported(model)
        bad = [o for o in self.objectives if o not in allowed]
        if not self.objectives or bad or len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(
                f"objectives {list(self.objectives)} do not suit {type(model).__name__}: pick distinct "
                f"ones from {list(allowed)}"
            )
        if "mlm" in self.objectives and mask_id is None:
            raise ConfigError("the mlm objective needs the tokenizer's mask_id")
        self.loss_name = loss
        if "itc" in self.objectives:
            if loss == "siglip":
                if self.scale_and_bias()[1] is None:
                    raise ConfigError(
                        "the SigLIP loss needs a model with a logit bias: "
                        "set model_overrides.init_logit_bias=-10"
                    )
                self.loss_fn: nn.Module = SigLipLoss(rank=rank, world_size=world_size)
            else:
                self.loss_fn = ClipLoss(rank=rank, world_size=world_size)
        self.mask_id, self.special_ids = mask_id, tuple(special_ids)
        self.mlm_probability = mlm_probability
        self.itm_generated_negatives = itm_generated_negatives
        self.seed = seed
        self.generator: torch.Generator | None = None
        self.weighting = build_weighting(weighting, list(self.objectives), dict(weights or {}))

    @classmethod
    def supported(cls, model: nn.Module) -> tuple[str, ...]:
        """The objectives this family can train ``model`` on."""
        return cls.objectives_supported

    @classmethod
    def from_config(cls, model: nn.Module, config: Any, tokenizer: Any, rank: int = 0, world_size: int = 1):
        """The task a :class:`~mumo.train.config.TrainConfig` asks for, with the tokenizer's special ids."""
        if getattr(config.data, "class_prompts", False) and not cls.class_prompts_supported:
            raise ConfigError(
                f"data.class_prompts trains a dual encoder (CLIP), not {type(model).__name__}; "
                "set data.class_prompts=false"
            )
        return cls(
            model,
            config.objectives,
            loss=config.loss,
            weighting=config.loss_weighting,
            weights=config.loss_weights,
            mask_id=tokenizer.mask_id,
            special_ids=(tokenizer.pad_id, tokenizer.bos_id, tokenizer.eot_id),
            mlm_probability=config.mlm_probability,
            itm_generated_negatives=config.itm_generated_negatives,
            seed=config.seed,
            rank=rank,
            world_size=world_size,
        )

    @property
    def pad_id(self) -> int:
        """The id the model's text tower pads with."""
        return self.model.config.text.pad_id

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """:meth:`training_forward`, so that DistributedDataParallel can wrap the task."""
        return self.training_forward(batch)

    def training_forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Named scalar losses of one batch."""
        raise NotImplementedError

    def reseed(self, position: int, device: torch.device | str = "cpu") -> None:
        """Seed the task's draws from (seed, position): a resumed run redraws exactly what it would have."""
        if self.generator is None or self.generator.device != torch.device(device):
            self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self.seed * 1_000_003 + position)

    def scale_and_bias(self) -> tuple[Tensor, Tensor | None]:
        return self.model.scale_and_bias()

    def texts(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(ids, mask) of the captions, (B, T), and of the captions followed by the generated negatives,
        (B + M, T'): one pass of the text tower serves both."""
        ids, mask = trim_padding(batch["input_ids"], batch["attention_mask"])
        if "neg_input_ids" not in batch:
            return ids, mask, ids, mask
        neg_ids, neg_mask = trim_padding(batch["neg_input_ids"], batch["neg_attention_mask"])
        return ids, mask, pad_cat(ids, neg_ids, self.pad_id), pad_cat(mask, neg_mask, 0)

    def grad_cache_step(
        self, batch: dict[str, Any], chunk_size: int, scale: float = 1.0
    ) -> dict[str, Tensor]:
        """Only a CLIP's contrastive task caches gradients (:class:`ContrastiveTask`)."""
        raise ConfigError(
            "grad_cache_chunk works for a CLIP trained on itc alone, without hard negatives or class prompts"
        )

    def _itc(self, image_embeds: Tensor, text_embeds: Tensor, negatives: Tensor | None) -> Tensor:
        scale, bias = self.scale_and_bias()
        if self.loss_name == "siglip":
            return self.loss_fn(image_embeds, text_embeds, scale, bias)
        return self.loss_fn(image_embeds, text_embeds, scale, text_negatives=negatives)

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The weighted total of :meth:`training_forward`'s losses."""
        return self.weighting(losses)

    def metrics(self) -> dict[str, float]:
        """Scalars worth logging besides the losses: the temperature (and bias), learned loss weights."""
        out: dict[str, float] = {}
        if "itc" in self.objectives:
            scale, bias = self.scale_and_bias()
            out["temperature"] = 1.0 / scale.item()
            if bias is not None:
                out["logit_bias"] = bias.item()
        if hasattr(self.weighting, "log_vars"):
            out.update({f"weight/{k}": v for k, v in self.weighting.weights_now().items()})
        return out
