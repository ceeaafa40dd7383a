"""Tasks: a model plus its objectives. The trainer only sees ``training_forward(batch) -> {name: loss}`` and
``combine(losses) -> loss``.

Batch keys: ``images`` (B, 3, H, W) float, ``input_ids`` (B, T) long, ``attention_mask`` (B, T) 0/1; with
generated hard negatives (NegCLIP) also ``neg_input_ids`` / ``neg_attention_mask`` (M, T) and ``neg_index``
(M,), the image row each negative caption was made from.

Objectives, by model:
    CLIP         itc
    FusionModel  any of itc, itm, mlm (hard or soft text sharing, see FusionConfig.text_sharing)
    SingleStream any of itm, mlm (it has no separate embeddings to contrast)
    Captioner    lm (next-token prediction: captions, VQA answers, or text alone), and itc for CoCa
    ImageClassifier  cls (cross-entropy on labelled images; :class:`ClassificationTask`)
ITM negatives: for each image a text and for each text an image, mined from the ITC similarities when the
model has them (ALBEF) and uniform in-batch otherwise (ViLT); plus, when the batch carries generated
negative captions, each of them paired with its image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mumo.errors import ConfigError
from mumo.losses import ClipLoss, SigLipLoss
from mumo.losses.language import causal_lm_loss, mask_tokens, masked_lm_loss
from mumo.losses.matching import itm_loss, itm_pair_indices, mine_hard_negatives, random_negatives
from mumo.models import CLIP, Captioner, FusionModel, SingleStream
from mumo.models.classifier import ImageClassifier
from mumo.models.multitask import build_weighting
from mumo.models.text import trim_padding

OBJECTIVES = ("itc", "itm", "mlm", "lm")  # and 'cls', ClassificationTask's


class Task(Protocol):
    """What the trainer needs of a task."""

    model: nn.Module

    def training_forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Named scalar losses of one batch."""
        ...

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The scalar to minimise: the losses weighted (fixed or learned weights)."""
        ...

    def metrics(self) -> dict[str, float]:
        """Scalars worth logging besides the losses (e.g. the temperature)."""
        ...


def _first_per_group(index: Tensor, n: int) -> Tensor:
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


def _pad_cat(a: Tensor, b: Tensor, pad: int) -> Tensor:
    """Concatenate (N, T1) and (M, T2) token tensors along rows, right-padding the narrower with ``pad``."""
    t = max(a.shape[1], b.shape[1])
    return torch.cat([F.pad(a, (0, t - a.shape[1]), value=pad), F.pad(b, (0, t - b.shape[1]), value=pad)])


class MultiTask(nn.Module):
    """Any weighted mix of image-text contrastive (ITC), matching (ITM) and masked language modelling (MLM).

    Args:
        model: a :class:`CLIP`, :class:`FusionModel` or :class:`SingleStream`.
        objectives: a non-empty subset of ``OBJECTIVES`` the model supports (see the module docstring).
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
        supported = {
            CLIP: ("itc",),
            FusionModel: ("itc", "itm", "mlm"),
            SingleStream: ("itm", "mlm"),
            Captioner: ("itc", "lm") if getattr(model.config, "contrastive", False) else ("lm",),
        }
        allowed = next((v for k, v in supported.items() if isinstance(model, k)), None)
        if allowed is None:
            raise ConfigError(f"no training objectives are defined for {type(model).__name__}")
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
        names = list(self.objectives)
        self.weighting = build_weighting(weighting, names, dict(weights or {}))

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """:meth:`training_forward`, so that DistributedDataParallel can wrap the task."""
        return self.training_forward(batch)

    def reseed(self, position: int, device: torch.device | str = "cpu") -> None:
        """Seed the task's draws from (seed, position): a resumed run redraws exactly what it would have."""
        if self.generator is None or self.generator.device != torch.device(device):
            self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self.seed * 1_000_003 + position)

    def scale_and_bias(self) -> tuple[Tensor, Tensor | None]:
        return self.model.scale_and_bias()

    @property
    def _pad_id(self) -> int:
        c = self.model.config
        if isinstance(self.model, SingleStream):
            return c.pad_id
        return (c.clip.text if isinstance(self.model, FusionModel) else c.text).pad_id

    def _captioner_forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """CoCa: one pass gives the next-token logits and, when asked, both embeddings for ITC."""
        if "neg_input_ids" in batch:
            raise ConfigError("generated hard negatives are for CLIP and fusion models; set hard_negatives=0")
        ids, mask = trim_padding(batch["input_ids"], batch["attention_mask"])
        out = self.model(batch.get("images"), ids, mask)
        losses: dict[str, Tensor] = {}
        if "lm" in self.objectives:
            target = batch.get("loss_mask")
            target = target[:, : ids.shape[1]] if target is not None else None
            losses["lm"] = causal_lm_loss(out.logits, ids, mask, target)
        if "itc" in self.objectives:
            losses["itc"] = self._itc(out.image_embeds, out.text_embeds, None)
        return losses

    def training_forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        if isinstance(self.model, Captioner):
            return self._captioner_forward(batch)
        model, images = self.model, batch["images"]
        ids, mask = trim_padding(batch["input_ids"], batch["attention_mask"])
        b = ids.shape[0]
        # Captions and generated negatives go through the text tower together, rows [0, B) and [B, B + M).
        generated = "neg_input_ids" in batch
        all_ids, all_mask = ids, mask
        if generated:
            neg_ids, neg_mask = trim_padding(batch["neg_input_ids"], batch["neg_attention_mask"])
            all_ids, all_mask = _pad_cat(ids, neg_ids, self._pad_id), _pad_cat(mask, neg_mask, 0)
        losses: dict[str, Tensor] = {}

        tokens = text_embeds = None
        if isinstance(model, CLIP):
            image_embeds, context = model.encode_image(images), None
            text_all = model.encode_text(all_ids, all_mask)  # (B + M, E)
        elif isinstance(model, FusionModel):
            image_embeds, context = model.encode_image_and_tokens(images)  # (B, E), (B, S, Cv)
            text_all, tokens = model.encode_text_and_tokens(all_ids, all_mask)  # (B + M, E), (B + M, T, C)
        else:  # single stream: every pair is fused from the pixels up, there are no embeddings
            image_embeds, context, text_all = None, images, None
        if text_all is not None:
            text_embeds = text_all[:b]
            if "itc" in self.objectives:
                negatives = text_all[b:] if generated else None  # NegCLIP: in the denominator
                losses["itc"] = self._itc(image_embeds, text_embeds, negatives)

        if "itm" in self.objectives:
            if text_embeds is not None:  # ALBEF: negatives mined from the contrastive similarities
                scale = self.scale_and_bias()[0].detach()
                sim = scale * image_embeds.detach() @ text_embeds.detach().T  # (B, B)
                neg_text, neg_image = mine_hard_negatives(sim, generator=self.generator)
            else:
                neg_text, neg_image = random_negatives(b, self.generator, ids.device)
            image_rows, text_rows, labels = itm_pair_indices(neg_text, neg_image)  # 3B pairs
            if self.itm_generated_negatives and generated:
                keep = _first_per_group(batch["neg_index"], self.itm_generated_negatives)
                image_rows = torch.cat([image_rows, batch["neg_index"][keep]])
                text_rows = torch.cat([text_rows, b + keep])
                labels = torch.cat([labels, labels.new_zeros(keep.shape[0])])
            pair_ids, pair_mask = all_ids[text_rows], all_mask[text_rows]
            if isinstance(model, FusionModel):
                # Each text is encoded once however many images it meets (ALBEF); soft sharing reads
                # the fusion side's own tower.
                fusion_tokens = tokens if model.fusion_text is None else model.text_tokens(all_ids, all_mask)
                logits = model.itm_logits(context[image_rows], pair_ids, pair_mask, fusion_tokens[text_rows])
            else:
                logits = model.itm_logits(context[image_rows], pair_ids, pair_mask)
            losses["itm"] = itm_loss(logits, labels)

        if "mlm" in self.objectives:
            vocab = model.mlm_head[-1].out_features
            masked, targets = mask_tokens(
                ids, mask, self.mask_id, vocab, self.special_ids, self.mlm_probability, self.generator
            )
            losses["mlm"] = masked_lm_loss(model.mlm_logits(context, masked, mask), targets)

        if isinstance(model, FusionModel):
            losses.update(model.regularizers())
        return losses

    def grad_cache_step(
        self, batch: dict[str, Any], chunk_size: int, scale: float = 1.0
    ) -> dict[str, Tensor]:
        """The ITC loss of a CLIP over the whole batch with gradients accumulated chunk by chunk (see
        :mod:`mumo.train.grad_cache`): the same gradient as ``training_forward`` + backward, at the memory
        of ``chunk_size`` samples. Runs the backward itself; returns the detached loss."""
        from mumo.train.grad_cache import grad_cache_backward

        if not isinstance(self.model, CLIP) or self.objectives != ("itc",) or "neg_input_ids" in batch:
            raise ConfigError(
                "grad_cache_chunk works for a CLIP trained on itc alone, without hard negatives"
            )
        ids, mask = trim_padding(batch["input_ids"], batch["attention_mask"])
        images, model = batch["images"], self.model

        def embed(start: int, end: int) -> tuple[Tensor, Tensor]:
            return model.encode_image(images[start:end]), model.encode_text(ids[start:end], mask[start:end])

        loss_fn = lambda image, text: self._itc(image, text, None)  # noqa: E731
        return {"itc": grad_cache_backward(model, embed, loss_fn, ids.shape[0], chunk_size, scale)}

    def _itc(self, image_embeds: Tensor, text_embeds: Tensor, negatives: Tensor | None) -> Tensor:
        scale, bias = self.scale_and_bias()
        if self.loss_name == "siglip":
            return self.loss_fn(image_embeds, text_embeds, scale, bias)
        return self.loss_fn(image_embeds, text_embeds, scale, text_negatives=negatives)

    def combine(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The weighted total of :meth:`training_forward`'s losses."""
        return self.weighting(losses)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if "itc" in self.objectives:
            scale, bias = self.scale_and_bias()
            out["temperature"] = 1.0 / scale.item()
            if bias is not None:
                out["logit_bias"] = bias.item()
        if hasattr(self.weighting, "log_vars"):
            out.update({f"weight/{k}": v for k, v in self.weighting.weights_now().items()})
        return out


class ClassificationTask(nn.Module):
    """Cross-entropy of an :class:`~mumo.models.classifier.ImageClassifier` on labelled images (batch keys
    ``images`` (B, 3, H, W) and ``labels`` (B,)); the one loss is named 'cls'.

    Args:
        label_smoothing: mass spread evenly over the other classes (0: plain cross-entropy).
    """

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not isinstance(model, ImageClassifier):
            raise ConfigError(f"the cls objective trains an image classifier, not {type(model).__name__}")
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


def build_task(
    model: nn.Module, config: Any, tokenizer: Any, rank: int = 0, world_size: int = 1
) -> MultiTask | ClassificationTask:
    """The task a :class:`~mumo.train.config.TrainConfig` asks for: :class:`ClassificationTask` for the cls
    objective, else :class:`MultiTask` with the tokenizer's special ids (and, across processes, the
    contrastive loss gathering every rank's features)."""
    if "cls" in config.objectives:
        return ClassificationTask(model)
    return MultiTask(
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


def task_state(task: nn.Module) -> dict[str, list]:
    """The task's own tensors (learned loss weights), not the model's: what a checkpoint adds for it."""
    return {k: v.tolist() for k, v in task.state_dict().items() if not k.startswith("model.")}


def load_task_state(task: nn.Module, state: Mapping[str, list]) -> None:
    """Restore what :func:`task_state` returned (exact: float32 values survive the JSON round trip)."""
    own = {k: v for k, v in task.state_dict().items() if not k.startswith("model.")}
    if set(own) != set(state):
        raise ConfigError(f"checkpoint task state has {sorted(state)}, this task has {sorted(own)}")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(torch.tensor(state[k], dtype=v.dtype))
