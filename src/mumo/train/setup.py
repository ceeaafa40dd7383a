"""Build what a training run is handed, from a :class:`TrainConfig`: data, tokenizer, model, task,
optimizer and schedule, spread over the processes, and, on resume, all of it restored from the newest valid
checkpoint. The :class:`~mumo.train.trainer.Trainer` is then only the loop.

Order matters: a folder that holds another run is refused before anything is built, and claimed (created,
or emptied with ``overwrite``) only once everything is, so a refused run leaves nothing behind; the
checkpoint's settings are checked before anything is built from the config; fine-tuning rules (locking,
LoRA) apply before the optimizer and the checkpoint see the parameters; the task is built on the final model
and wrapped for the processes last.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from mumo.data.config import LABELLED_KINDS
from mumo.data.sources import DataSource, data_source
from mumo.data.tokenizer import Tokenizer
from mumo.errors import ConfigError, TrainingError
from mumo.layers.batch_norm import sync_batch_norm
from mumo.layers.block import set_grad_checkpointing
from mumo.models import create_model, get_model_config
from mumo.models._pretrained import load_state_dict_matching, model_folder
from mumo.models.bert import load_bert, resolve_bert_folder
from mumo.train.checkpoint import (
    STATE_JSON,
    is_sharded,
    latest_valid_checkpoint,
    load_checkpoint,
    load_sharded_checkpoint,
)
from mumo.train.config import TrainConfig
from mumo.train.distributed import DistInfo, barrier, broadcast_parameters, fully_shard_task, init_distributed
from mumo.train.finetune import apply_finetune, inference_only_modules
from mumo.train.optim import build_optimizer, build_scheduler
from mumo.train.run_folder import check_unchanged, claim_out_dir
from mumo.train.tasks import build_task, load_task_state

logger = logging.getLogger(__name__)

# (config, tokenizer, the training set's class names) -> the classifier a labelled-data run trains
ClassifierBuilder = Callable[[TrainConfig, Tokenizer, tuple[str, ...]], nn.Module]


@dataclass
class TrainPieces:
    """Everything the training loop is handed. ``forward`` is the task as the processes run it (DDP-wrapped
    across processes, else the task itself); ``replicated`` are the parameters whose gradients the loop
    averages itself (GradCache, and what FSDP leaves whole); ``state`` is the resumed checkpoint's (empty
    for a new run)."""

    config: TrainConfig
    dist: DistInfo
    device: torch.device
    dataset: Any  # a map-style or iterable torch Dataset
    collate: Callable[[list], dict[str, Any]]
    tokenizer: Tokenizer
    model: nn.Module
    task: nn.Module
    forward: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    sharded: bool
    replicated: list[nn.Parameter]
    inference_only: list[nn.Module]
    finetune: dict[str, Any]
    run_id: str
    checkpoint: Path | None = None
    state: dict[str, Any] = field(default_factory=dict)


def data_layout(config: TrainConfig, dist: DistInfo) -> dict[str, int]:
    """Shards are cut each epoch by ranks x loader workers: a resume must read with the same layout."""
    return {"world_size": dist.world_size, "num_workers": config.data.num_workers}


def build_tokenizer(config: TrainConfig, texts: list[str], checkpoint: Path | None) -> Tokenizer:
    """The run's tokenizer: a pretrained text tower's, the resumed checkpoint's, ``init_from``'s (weights
    only make sense with their vocabulary), or one learned from ``texts``."""
    if config.text_tower is not None:
        return Tokenizer.load(resolve_bert_folder(config.text_tower))
    if checkpoint is not None:
        return Tokenizer.load(checkpoint)
    if config.init_from is not None:
        return Tokenizer.load(model_folder(config.init_from))
    return Tokenizer.train(texts, vocab_size=config.data.tokenizer_vocab_size)


def build_model(config: TrainConfig, tokenizer: Tokenizer, resuming: bool) -> nn.Module:
    """The model of a run on image-text or text data: the registered architecture sized by the data (its
    vocabulary is the tokenizer's, its image size ``data.image_size``), started from ``init_from`` (a new
    run) or with a pretrained text tower (``text_tower``)."""
    base = get_model_config(config.model, **config.model_overrides)
    vocab_field, image_field = base.data_fields
    overrides = {**config.model_overrides, vocab_field: tokenizer.vocab_size}
    text_tower = None
    if config.text_tower is not None:
        if base.model_type != "clip":
            raise TrainingError(f"text_tower replaces a CLIP's text tower; {config.model} is not a CLIP")
        text_tower = load_bert(config.text_tower)
        overrides["text"] = text_tower.config.to_dict()
    if config.data.image_size and getattr(base, "vision", True) is not None:  # a text-only GPT has none
        overrides[image_field] = config.data.image_size
    model = create_model(config.model, seed=config.seed, **overrides)
    if config.init_from is not None and not resuming:
        init_from(model, config.init_from)
    if text_tower is not None:
        model.text.load_state_dict(text_tower.state_dict())
    return model


def init_from(model: nn.Module, folder: str) -> None:
    """Start ``model`` from the weights of a model folder that match by name and shape (e.g. a text-only
    GPT's for a captioner); the rest keep their fresh initialisation, and both lists are logged."""
    path = model_folder(folder)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise TrainingError(f"init_from={folder}: no model.safetensors there; give a model or run folder")
    fresh, unused = load_state_dict_matching(model, load_file(str(weights)), str(weights))
    logger.warning(
        "initialised from %s: %d tensors loaded, %d fresh (%s), %d unused (%s)",
        path,
        len(model.state_dict()) - len(fresh),
        len(fresh),
        ", ".join(sorted({k.split(".")[0] for k in fresh})) or "none",
        len(unused),
        ", ".join(sorted({k.split(".")[0] for k in unused})) or "none",
    )


def _no_classifier(config: TrainConfig, tokenizer: Tokenizer, class_names: tuple[str, ...]) -> nn.Module:
    raise ConfigError(
        f"data.kind={config.data.kind} fine-tunes a classifier whose head is initialised by mumo.run "
        "(mumo finetune, or mumo.run.train.train); give setup() a build_classifier"
    )


def setup(
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    source: DataSource | None = None,
    build_classifier: ClassifierBuilder | None = None,
) -> TrainPieces:
    """Build the pieces of a run (see the module docstring).

    Args:
        config: the run.
        resume: continue from the newest valid checkpoint in ``config.out_dir`` (a fresh start if none).
        overwrite: a new run may replace the run ``config.out_dir`` holds (its outputs are deleted first).
        source: the run's data; defaults to :func:`mumo.data.sources.data_source` of ``config.data``.
        build_classifier: builds the classifier of a labelled-data run (``mumo.run.heads.classifier_model``).
    """
    c = config
    out_dir = Path(c.out_dir)
    if c.device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device={c.device}, but torch sees no CUDA GPU here; train with device=cpu")
    if c.init_from is not None and not Path(c.init_from).is_dir():
        raise TrainingError(f"init_from={c.init_from} is not a folder; give a model or a run folder")
    if c.threads:
        torch.set_num_threads(c.threads)
    dist = init_distributed(c.device)
    if not resume:  # refuse a folder that holds another run before building anything
        claim_out_dir(out_dir, overwrite, delete=False)
    # The run owns torch's global generator (random crops, dropout, LoRA's initialisation draw from it).
    torch.manual_seed(c.seed + dist.rank)
    across_gpus = dist.world_size > 1 and c.device == "cuda"
    device = torch.device(f"cuda:{dist.local_rank}" if across_gpus else c.device)
    source = source or data_source(c.data, seed=c.seed, hard_negatives=c.hard_negatives)
    dataset = source.train_set()

    checkpoint = latest_valid_checkpoint(out_dir) if resume else None
    if checkpoint is not None:  # before anything is built from the config
        check_unchanged(c, json.loads((checkpoint / STATE_JSON).read_text()).get("config"), checkpoint)
    tokenizer = build_tokenizer(c, source.tokenizer_texts(), checkpoint)
    if c.data.kind in LABELLED_KINDS:
        model = (build_classifier or _no_classifier)(c, tokenizer, tuple(dataset.class_names))
    else:
        model = build_model(c, tokenizer, resuming=checkpoint is not None)
    model = model.to(device)
    # Across processes batch norm normalises by the global batch, as one process would (GradCache's
    # chunks see their own statistics anyway, and their forward passes differ in number between ranks).
    if dist.world_size > 1 and not c.grad_cache_chunk:
        sync_batch_norm(model)
    # Before the optimizer and the checkpoint: both must see the final set of (trainable) parameters.
    finetune = apply_finetune(model, c.finetune)
    inference_only = inference_only_modules(model, c.finetune.freeze_norm_stats)
    if c.grad_checkpointing and not set_grad_checkpointing(model):
        logger.warning("grad_checkpointing: %s has no Transformer blocks to checkpoint", c.model)
    logger.info(
        "training %d of %d parameters (%.2f %%)",
        finetune["trainable_params"],
        finetune["total_params"],
        100 * finetune["trainable_params"] / finetune["total_params"],
    )
    tokenizer.context_length = model.context_length
    if hasattr(dataset, "bind"):  # a text corpus is tokenized once the tokenizer exists
        dataset.bind(tokenizer, model.context_length)
    task = build_task(model, c, tokenizer, dist.rank, dist.world_size).to(device)

    # Across processes, DDP averages the gradients of every rank's share of the global batch; FSDP2
    # reduce-scatters them into each rank's shard. GradCache runs one backward per chunk outside any
    # wrapped forward, so it averages the gradients itself (average_gradients), as it does for the
    # parameters FSDP leaves whole; both start every rank from rank 0's weights, as DDP would.
    forward, replicated = task, []
    sharded = dist.world_size > 1 and c.strategy == "fsdp"
    if dist.world_size > 1 and (c.grad_cache_chunk or sharded):
        broadcast_parameters(task, dist)
        replicated = fully_shard_task(task) if sharded else list(task.parameters())
    elif dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(task, device_ids=[device.index] if device.type == "cuda" else None)
    # The task, not just the model: learned loss weights are trained too.
    optimizer = build_optimizer(task, c.optim)
    scheduler = build_scheduler(optimizer, c.optim, c.max_steps)
    # fp16 needs its loss scaled so that small gradients do not flush to zero; bf16 has fp32's range.
    scaler = torch.amp.GradScaler(device.type, enabled=c.precision == "fp16")
    pieces = TrainPieces(
        config=c,
        dist=dist,
        device=device,
        dataset=dataset,
        collate=source.collate(tokenizer),
        tokenizer=tokenizer,
        model=model,
        task=task,
        forward=forward,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        sharded=sharded,
        replicated=replicated,
        inference_only=inference_only,
        finetune=finetune,
        run_id=uuid.uuid4().hex,  # a resumed run takes its checkpoint's (rank 0's is the one written)
        checkpoint=checkpoint,
    )
    if checkpoint is not None:
        restore(pieces, checkpoint)
    # Only now, with everything built: a run refused above (a model, task or data that cannot train
    # together) leaves no folder behind, and --overwrite deletes the old run only for one that will start.
    if not resume:  # every rank has checked; rank 0 alone deletes
        claim_out_dir(out_dir, overwrite, delete=dist.is_main)
        barrier(dist)
    out_dir.mkdir(parents=True, exist_ok=True)
    return pieces


def restore(pieces: TrainPieces, checkpoint: Path) -> None:
    """Load a checkpoint's weights, optimizer, schedule, task and loss-scaler state into ``pieces``, after
    checking that it was written the way this run would write it."""
    p, c = pieces, pieces.config
    if p.sharded != is_sharded(checkpoint):
        written = "strategy=fsdp across processes" if is_sharded(checkpoint) else "whole weights"
        raise TrainingError(
            f"{checkpoint} was written by a run with {written}; resume it the same way, or start a new "
            "run from its weights with init_from"
        )
    if p.sharded:
        state = load_sharded_checkpoint(checkpoint, p.task, p.optimizer, p.scheduler)
    else:
        _, _, state = load_checkpoint(checkpoint, p.model, p.optimizer, p.scheduler)
    load_task_state(p.task, state.get("task_state", {}))
    if state.get("grad_scaler"):
        p.scaler.load_state_dict(state["grad_scaler"])
    layout, now = state.get("data_layout", {}), data_layout(c, p.dist)
    if c.data.kind == "shards" and layout and layout != now:
        raise TrainingError(
            f"{checkpoint} was written by a run reading shards with {layout}; resume with the same "
            f"processes and data.num_workers (now {now}), or start a new run from it with init_from"
        )
    p.run_id = state.get("run_id")
    p.state = state
    logger.info("resuming %s at step %d", checkpoint, state["step"])
