"""The training loop: one loop for every Task, resumable to the bit.

setup (data, tokenizer, model, task, optimizer, schedule; or all of it from the newest valid checkpoint)
-> for each optimizer step: ``grad_accum`` micro-batches -> the task's losses -> ``task.combine`` (fixed or
learned weights) -> backward -> clip -> AdamW -> schedule; log; checkpoint every ``checkpoint_every`` steps
-> final checkpoint, model folder ``final/``, evaluation, ``metrics.json``.

Determinism: weights come from ``seed``; batch ``g`` of the run is fixed by (seed, g) through
:class:`~mumo.data.sampler.ResumableBatchSampler`; scenes of the built-in data depend only on their index;
optimizer, schedule and RNG states are checkpointed. So on CPU a run killed at any moment and resumed ends
with the same weights, bit for bit, as a run that never stopped.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from mumo._io import atomic_write_json
from mumo.data.pairs import SkipReport
from mumo.data.sampler import ResumableBatchSampler
from mumo.data.tokenizer import Tokenizer
from mumo.errors import TrainingError
from mumo.layers.batch_norm import sync_batch_norm
from mumo.layers.block import set_grad_checkpointing
from mumo.models import create_model, get_model_config, load_pretrained, save_pretrained
from mumo.models._pretrained import model_folder
from mumo.train.checkpoint import (
    STATE_JSON,
    is_sharded,
    latest_valid_checkpoint,
    load_checkpoint,
    load_sharded_checkpoint,
    save_checkpoint,
    save_sharded_checkpoint,
)
from mumo.train.config import LABELLED_KINDS, TrainConfig
from mumo.train.distributed import (
    average_gradients,
    barrier,
    broadcast_parameters,
    fully_shard_task,
    gather_lists,
    init_distributed,
)
from mumo.train.finetune import apply_finetune, fit_probe_head, inference_only_modules, save_adapter
from mumo.train.optim import build_optimizer, build_scheduler
from mumo.train.run_folder import MetricsLog, check_unchanged, claim_out_dir
from mumo.train.tasks import build_task, load_task_state, task_state

# Where each architecture keeps the vocabulary size and the image size the data decides.
_DATA_FIELDS = {
    "clip": ("text.vocab_size", "vision.image_size"),
    "fusion": ("clip.text.vocab_size", "clip.vision.image_size"),
    "single_stream": ("vocab_size", "image_size"),
    "captioner": ("text.vocab_size", "vision.image_size"),
}

logger = logging.getLogger(__name__)


class Trainer:
    """Runs a :class:`TrainConfig` end to end.

    A folder holds one run. A new run (``resume`` False) refuses a folder that holds another's checkpoints
    or model unless ``overwrite`` deletes them; a resumed run continues the newest valid checkpoint with
    the settings it was started with (a changed setting that would alter the run is refused by name), and
    one that had already finished returns its metrics without training or evaluating again. Every
    checkpoint names its run (``run_id``), so pruning never touches another run's.

    The run owns torch's global generator (random crops, dropout and LoRA's initialisation draw from it): it
    is seeded from ``seed`` (and the rank), saved in every checkpoint and restored on resume, so two runs of
    one config end with the same weights, bit for bit, on CPU.

    Args:
        config: the run.
        resume: continue from the newest valid checkpoint in ``config.out_dir`` (a fresh start if none).
        progress: show a progress bar.
        build_data: ``(config) -> (train dataset, tokenizer texts, image mean, image std)``; defaults to
            :func:`mumo.train.data.build_train_data`.
        overwrite: a new run may replace the run ``config.out_dir`` holds (its checkpoints and outputs are
            deleted first).
    """

    def __init__(
        self,
        config: TrainConfig,
        resume: bool = False,
        progress: bool = True,
        build_data: Callable[[TrainConfig], tuple[Dataset, list[str], Any, Any]] | None = None,
        overwrite: bool = False,
    ) -> None:
        from mumo.train.data import build_collate, build_train_data

        self.config = c = config
        self.out_dir = Path(c.out_dir)
        if c.device.startswith("cuda") and not torch.cuda.is_available():
            raise TrainingError(f"device={c.device}, but torch sees no CUDA GPU here; train with device=cpu")
        if c.init_from is not None and not Path(c.init_from).is_dir():
            raise TrainingError(f"init_from={c.init_from} is not a folder; give a model or a run folder")
        if c.threads:
            torch.set_num_threads(c.threads)
        self.dist = init_distributed(c.device)
        if not resume:  # every rank checks before any writes; rank 0 alone deletes
            claim_out_dir(self.out_dir, overwrite, self.dist.is_main)
            barrier(self.dist)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(c.seed + self.dist.rank)
        self.run_id = uuid.uuid4().hex  # a resumed run takes its checkpoint's (rank 0's is the one written)
        self.finished = False
        device = c.device
        if self.dist.world_size > 1 and device == "cuda":
            device = f"cuda:{self.dist.local_rank}"
        self.device = torch.device(device)
        self.progress = progress and self.dist.is_main
        self.dataset, tokenizer_texts, mean, std = (build_data or build_train_data)(c)

        checkpoint = latest_valid_checkpoint(self.out_dir) if resume else None
        if checkpoint is not None:  # before anything is built from the config
            check_unchanged(c, json.loads((checkpoint / STATE_JSON).read_text()).get("config"), checkpoint)
        text_tower = None
        if c.text_tower is not None:  # a pretrained BERT brings its own vocabulary
            from mumo.interop.hf_bert import load_hf_bert

            text_tower, tokenizer = load_hf_bert(c.text_tower)
        elif checkpoint is not None:
            tokenizer = Tokenizer.load(checkpoint)
        elif c.init_from is not None:  # the weights we start from only make sense with their vocabulary
            tokenizer = Tokenizer.load(model_folder(c.init_from))
        else:
            tokenizer = Tokenizer.train(tokenizer_texts, vocab_size=c.data.tokenizer_vocab_size)
        if c.data.kind in LABELLED_KINDS:
            self.model = _classifier(c, tokenizer, self.dataset.class_names).to(self.device)
        else:
            base = get_model_config(c.model, **c.model_overrides)
            vocab_field, image_field = _DATA_FIELDS.get(base.model_type, _DATA_FIELDS["clip"])
            overrides = {**c.model_overrides, vocab_field: tokenizer.vocab_size}
            if text_tower is not None:
                if base.model_type != "clip":
                    raise TrainingError(f"text_tower replaces a CLIP's text tower; {c.model} is not a CLIP")
                overrides["text"] = text_tower.config.to_dict()
            if c.data.image_size and getattr(base, "vision", True) is not None:  # a text-only GPT has none
                overrides[image_field] = c.data.image_size
            self.model = create_model(c.model, seed=c.seed, **overrides).to(self.device)
            if c.init_from is not None and checkpoint is None:
                _init_from(self.model, c.init_from)
            if text_tower is not None:
                self.model.text.load_state_dict(text_tower.state_dict())
        # Across processes batch norm normalises by the global batch, as one process would (GradCache's
        # chunks see their own statistics anyway, and their forward passes differ in number between ranks).
        if self.dist.world_size > 1 and not c.grad_cache_chunk:
            sync_batch_norm(self.model)
        # Before the optimizer and the checkpoint: both must see the final set of (trainable) parameters.
        self.finetune = apply_finetune(self.model, c.finetune)
        self.inference_only = inference_only_modules(self.model, c.finetune.freeze_norm_stats)
        if c.grad_checkpointing and not set_grad_checkpointing(self.model):
            logger.warning("grad_checkpointing: %s has no Transformer blocks to checkpoint", c.model)
        # fp16 needs its loss scaled so that small gradients do not flush to zero; bf16 has fp32's range.
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[c.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=c.precision == "fp16")
        logger.info(
            "training %d of %d parameters (%.2f %%)",
            self.finetune["trainable_params"],
            self.finetune["total_params"],
            100 * self.finetune["trainable_params"] / self.finetune["total_params"],
        )
        tokenizer.context_length = self.model.context_length
        if hasattr(self.dataset, "bind"):  # a text corpus is tokenized once the tokenizer exists
            self.dataset.bind(tokenizer, self.model.context_length)
        self.tokenizer = tokenizer
        self.task = build_task(self.model, c, tokenizer, self.dist.rank, self.dist.world_size).to(self.device)
        # Across processes, DDP averages the gradients of every rank's share of the global batch; FSDP2
        # reduce-scatters them into each rank's shard. GradCache runs one backward per chunk outside any
        # wrapped forward, so it averages the gradients itself (average_gradients), as it does for the
        # parameters FSDP leaves whole; both start every rank from rank 0's weights, as DDP would.
        self.forward = self.task
        self.sharded = self.dist.world_size > 1 and c.strategy == "fsdp"
        self.replicated: list[torch.nn.Parameter] = []  # parameters whose gradients are averaged here
        if self.dist.world_size > 1 and (c.grad_cache_chunk or self.sharded):
            broadcast_parameters(self.task, self.dist)
            self.replicated = fully_shard_task(self.task) if self.sharded else list(self.task.parameters())
        elif self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.task, device_ids=ids)
        # The task, not just the model: learned loss weights are trained too.
        self.optimizer = build_optimizer(self.task, c.optim)
        self.scheduler = build_scheduler(self.optimizer, c.optim, c.max_steps)
        self.step = 0
        if checkpoint is not None and self.sharded != is_sharded(checkpoint):
            written = "strategy=fsdp across processes" if is_sharded(checkpoint) else "whole weights"
            raise TrainingError(
                f"{checkpoint} was written by a run with {written}; resume it the same way, or start a new "
                "run from its weights with init_from"
            )
        if checkpoint is not None and self.sharded:
            state = load_sharded_checkpoint(checkpoint, self.task, self.optimizer, self.scheduler)
        elif checkpoint is not None:
            _, _, state = load_checkpoint(checkpoint, self.model, self.optimizer, self.scheduler)
        if checkpoint is not None:
            load_task_state(self.task, state.get("task_state", {}))
            if state.get("grad_scaler"):
                self.scaler.load_state_dict(state["grad_scaler"])
            self.step = state["step"]
            self.run_id = state.get("run_id")
            self.finished = (
                self.step >= c.max_steps
                and (self.out_dir / "metrics.json").is_file()
                and (self.out_dir / "final").is_dir()
            )
            layout, now = state.get("data_layout", {}), self._data_layout()
            if c.data.kind == "shards" and layout and layout != now:
                raise TrainingError(
                    f"{checkpoint} was written by a run reading shards with {layout}; resume with the same "
                    f"processes and data.num_workers (now {now}), or start a new run from it with init_from"
                )
            logger.info("resuming %s at step %d", checkpoint, self.step)
        self.collate = build_collate(c, self.dataset, tokenizer, mean, std)
        self.epoch_skips = SkipReport()  # reported, then cleared, at each epoch's end
        self.all_skips = SkipReport()
        if self.dist.is_main:  # one writer per run folder
            atomic_write_json(self.out_dir / "train_config.json", c.to_dict())

    def _data_layout(self) -> dict[str, int]:
        """Shards cut each epoch by ranks x loader workers: a resume must read with the same layout."""
        return {"world_size": self.dist.world_size, "num_workers": self.config.data.num_workers}

    def _loader(self) -> DataLoader:
        """Batches from micro-batch ``step * grad_accum`` on: this rank's share of each global batch."""
        c = self.config
        start, rank, world = self.step * c.optim.grad_accum, self.dist.rank, self.dist.world_size
        workers = {
            "num_workers": c.data.num_workers,
            "persistent_workers": c.data.num_workers > 0,
            # Worker seeds (random augmentations of map-style data) differ by rank and resume position;
            # drawn from the global generator they would repeat on every rank.
            "generator": torch.Generator().manual_seed(hash((c.seed, rank, start)) & (2**63 - 1)),
        }
        if isinstance(self.dataset, IterableDataset):  # shards plan the epoch themselves
            self.dataset.plan(c.batch_size, rank, world, c.data.num_workers, start)
            self.batches_per_epoch = self.dataset.batches_per_epoch
            return DataLoader(self.dataset, batch_size=c.batch_size, collate_fn=self.collate, **workers)
        sampler = ResumableBatchSampler(
            len(self.dataset), c.batch_size, seed=c.seed, start=start, rank=rank, world_size=world
        )
        self.batches_per_epoch = sampler.batches_per_epoch
        return DataLoader(self.dataset, batch_sampler=sampler, collate_fn=self.collate, **workers)

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _train_step(self, batches: Any) -> dict[str, float]:
        c = self.config
        self.model.train()
        for module in self.inference_only:  # locked towers keep their batch-norm statistics
            module.eval()
        totals: dict[str, float] = {}
        samples = 0
        for micro in range(c.optim.grad_accum):
            batch = next(batches)
            self.epoch_skips.add(batch["skipped"])
            self.all_skips.add(batch["skipped"])
            if batch.get("images") is None and batch.get("input_ids") is None:  # every sample was unreadable
                continue
            batch = self._to_device(batch)
            position = self.step * c.optim.grad_accum + micro
            self.task.reseed(position * self.dist.world_size + self.dist.rank, self.device)
            autocast = torch.autocast(
                self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
            )
            if c.grad_cache_chunk:  # the backward runs inside, chunk by chunk
                with autocast:
                    scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
                    losses = self.task.grad_cache_step(batch, c.grad_cache_chunk, scale / c.optim.grad_accum)
                    loss = self.task.combine(losses)
            else:
                with autocast:
                    losses = self.forward(batch)
                    loss = self.task.combine(losses)
                self.scaler.scale(loss / c.optim.grad_accum).backward()
            samples += (batch["input_ids"] if "input_ids" in batch else batch["images"]).shape[0]
            for k, v in losses.items():
                totals[f"loss/{k}"] = totals.get(f"loss/{k}", 0.0) + v.item() / c.optim.grad_accum
            totals["loss"] = totals.get("loss", 0.0) + loss.item() / c.optim.grad_accum
        average_gradients(self.replicated, self.dist)
        self.scaler.unscale_(self.optimizer)  # clip (and log) the true gradient norm
        if c.optim.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.task.parameters(), c.optim.grad_clip)
            totals["grad_norm"] = (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).item()
        self.scaler.step(self.optimizer)  # skipped when fp16 gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if not math.isfinite(totals.get("loss", 0.0)):
            raise TrainingError(
                f"loss is {totals['loss']} at step {self.step + 1}; "
                "lower optim.lr or raise optim.warmup_steps"
            )
        if self.dist.world_size > 1:  # log the global batch's loss, not this rank's share
            names = sorted(k for k in totals if k.startswith("loss"))
            mean = torch.tensor([totals[k] for k in names], dtype=torch.float64)
            torch.distributed.all_reduce(mean)
            totals.update({k: v / self.dist.world_size for k, v in zip(names, mean.tolist(), strict=True)})
        totals["samples"] = samples * self.dist.world_size
        return totals

    def _end_of_epoch(self, loader_len: int) -> None:
        g = self.step * self.config.optim.grad_accum  # micro-batches consumed so far
        crossed = g % loader_len < self.config.optim.grad_accum
        if crossed or self.step == self.config.max_steps:  # on every rank at once: the gather is collective
            skipped = SkipReport(gather_lists(self.epoch_skips.skipped, self.dist))
            if skipped.count and self.dist.is_main:
                logger.warning("epoch %d: %s", (g - 1) // loader_len, skipped.summary(max_listed=50))
            self.epoch_skips.reset()

    def _checkpoint(self) -> Path:
        """Rank 0 writes the checkpoint (every rank holds the same weights), or, sharded, every rank its
        shards; the others wait for it. Returns its folder."""
        extra = {
            "data_position": self.step * self.config.optim.grad_accum,
            "config": self.config.to_dict(),
            "task_state": task_state(self.task),
            "grad_scaler": self.scaler.state_dict(),  # {} unless fp16
            "data_layout": self._data_layout(),
            "run_id": self.run_id,
        }
        keep = self.config.keep_checkpoints
        if self.sharded:
            save_sharded_checkpoint(
                self.out_dir,
                self.step,
                self.task,
                self.tokenizer,
                self.optimizer,
                self.scheduler,
                self.dist.is_main,
                extra,
                keep,
            )
        elif self.dist.is_main:
            save_checkpoint(
                self.out_dir,
                self.step,
                self.model,
                self.tokenizer,
                self.optimizer,
                self.scheduler,
                extra,
                keep,
            )
        barrier(self.dist)
        return self.out_dir / "checkpoints" / f"step_{self.step:06d}"

    def fit(self) -> dict[str, Any]:
        """Train to ``max_steps`` (from the resumed step), then save and evaluate; returns the metrics (a
        resumed run that had finished returns its saved metrics)."""
        c = self.config
        main = self.dist.is_main
        if self.finished:
            logger.warning("%s finished at step %d; nothing to train or evaluate", self.out_dir, self.step)
            return json.loads((self.out_dir / "metrics.json").read_text())
        log = MetricsLog(self.out_dir, self.step, c.tensorboard) if main else None
        run_start, first_step = time.perf_counter(), self.step
        loader = self._loader()
        batches = iter(loader)
        window_start, window_samples = time.perf_counter(), 0
        columns = [
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, disable=not self.progress, transient=False) as bar:
            task_id = bar.add_task("train", total=c.max_steps, completed=self.step, status="")
            while self.step < c.max_steps:
                values = self._train_step(batches)
                self.step += 1
                window_samples += int(values.pop("samples"))
                if self.step % c.log_every == 0 or self.step == c.max_steps:
                    elapsed = time.perf_counter() - window_start
                    values["samples_per_s"] = window_samples / max(elapsed, 1e-9)
                    values["lr"] = self.scheduler.get_last_lr()[0]
                    values.update(self.task.metrics())
                    if log is not None:
                        log.write(self.step, values)
                    status = (
                        f"loss {values['loss']:.3f}  lr {values['lr']:.2e}  "
                        f"{values['samples_per_s']:.0f} samples/s"
                    )
                    bar.update(task_id, status=status)
                    window_start, window_samples = time.perf_counter(), 0
                bar.update(task_id, completed=self.step)
                self._end_of_epoch(self.batches_per_epoch)
                if self.step % c.checkpoint_every == 0 or self.step == c.max_steps:
                    self._checkpoint()
        final = self.out_dir / "final"
        full_state = None
        if self.sharded:  # every rank sends its shards; rank 0 holds the whole model's weights
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            full_state = get_model_state_dict(self.model, options=options)
        if main:
            log.close()
            save_pretrained(self.model, final, tokenizer=self.tokenizer, state_dict=full_state)
            if c.finetune.lora_rank:  # the merged model above, and the adapter alone beside it
                save_adapter(self.model, final, c.finetune, c.init_from)
        seconds = time.perf_counter() - run_start
        results: dict[str, Any] = {
            "steps": self.step,
            "final": str(final),
            "train_seconds": round(seconds, 1),
            "samples_per_s": round(
                (self.step - first_step) * c.optim.grad_accum * c.batch_size * self.dist.world_size / seconds,
                1,
            ),
            "trainable_params": self.finetune["trainable_params"],
            "total_params": self.finetune["total_params"],
        }
        skipped = gather_lists(self.all_skips.skipped, self.dist)  # every rank's, in rank order
        if skipped:
            results["skipped_images"] = [{"path": x.path, "reason": x.reason} for x in skipped]
        if c.evaluate and main:
            from mumo.run.evaluate import evaluate_run

            # a sharded model runs only with every rank; rank 0 evaluates the whole one it saved
            model = load_pretrained(final).to(self.device) if self.sharded else self.model
            results["eval"] = evaluate_run(model, self.tokenizer, c, self.out_dir, self.dataset)
        if main:
            atomic_write_json(self.out_dir / "metrics.json", results)
            if c.report:
                from mumo.run.report import write_report

                write_report(self.out_dir)
        barrier(self.dist)
        return results


def _init_from(model: torch.nn.Module, folder: str) -> None:
    """Start ``model`` from the weights of a model folder that match by name and shape (e.g. a text-only
    GPT's for a captioner); the rest keep their fresh initialisation, and both lists are logged."""
    from safetensors.torch import load_file

    from mumo.models._pretrained import load_state_dict_matching

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


def _classifier(config: TrainConfig, tokenizer: Tokenizer, class_names: tuple[str, ...]) -> torch.nn.Module:
    """The classifier a labelled-data run trains: made from the dual encoder ``init_from`` names (head per
    ``finetune.head``), or that classifier itself when ``init_from`` is one with the same classes."""
    from mumo.models import CLIP, ImageClassifier, load_pretrained

    path = model_folder(config.init_from)
    pretrained = load_pretrained(path)
    if getattr(pretrained, "image_size", None) not in (None, config.data.image_size):
        raise TrainingError(
            f"init_from={config.init_from} takes {pretrained.image_size}-px images; "
            f"set data.image_size={pretrained.image_size}"
        )
    if isinstance(pretrained, ImageClassifier):
        if pretrained.class_names != tuple(class_names):
            raise TrainingError(
                f"init_from={config.init_from} classifies {list(pretrained.class_names)}, "
                f"the data has {list(class_names)}"
            )
        return pretrained
    if not isinstance(pretrained, CLIP):
        raise TrainingError(
            f"init_from={config.init_from} is a {type(pretrained).__name__}; fine-tuning on labelled images "
            "starts from a CLIP dual encoder"
        )
    f = config.finetune
    tokenizer.context_length = pretrained.context_length
    head = "random" if f.head == "linear_probe" else f.head
    model = ImageClassifier.from_clip(pretrained, class_names, tokenizer, f.templates, head, seed=config.seed)
    if f.head == "linear_probe":
        from mumo.eval.classify import labelled_tensors
        from mumo.train.data import labelled_split

        splits = [labelled_tensors(*labelled_split(config.data, s, augment=False)) for s in ("train", "val")]
        probe = fit_probe_head(model, *splits)
        logger.info("head from a linear probe: l2 %g, val accuracy %.3f", probe["l2"], probe["val_accuracy"])
    return model


def train(
    config: TrainConfig, resume: bool = False, progress: bool = True, overwrite: bool = False
) -> dict[str, Any]:
    """Run ``config`` (see :class:`Trainer`); returns the final metrics."""
    return Trainer(config, resume=resume, progress=progress, overwrite=overwrite).fit()
