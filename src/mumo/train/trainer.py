"""The training loop: one loop for every Task, resumable to the bit.

It is handed its pieces (:class:`~mumo.train.setup.TrainPieces`: data, tokenizer, model, task, optimizer,
schedule, already restored on resume) and runs: for each optimizer step ``grad_accum`` micro-batches -> the
task's losses -> ``task.combine`` (fixed or learned weights) -> backward -> clip -> AdamW -> schedule; log;
checkpoint every ``checkpoint_every`` steps -> final checkpoint, model folder ``final/``, the evaluation it
is handed, ``metrics.json``. ``mumo.run.train`` chains it with evaluation and the report.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from mumo._io import atomic_write_json
from mumo.data.pairs import SkipReport
from mumo.data.sampler import ResumableBatchSampler
from mumo.data.sources import DataSource
from mumo.data.tokenizer import Tokenizer
from mumo.errors import TrainingError
from mumo.models import load_pretrained, save_pretrained
from mumo.train.checkpoint import save_checkpoint, save_sharded_checkpoint
from mumo.train.config import TrainConfig
from mumo.train.distributed import average_gradients, barrier, gather_lists
from mumo.train.finetune import save_adapter
from mumo.train.run_folder import MetricsLog
from mumo.train.setup import ClassifierBuilder, TrainPieces, data_layout, setup
from mumo.train.tasks import task_state

logger = logging.getLogger(__name__)

# (model, tokenizer, config, out_dir, training set) -> metrics of the trained model
Evaluate = Callable[[nn.Module, Tokenizer, TrainConfig, Path, Any], dict]


class Trainer:
    """The loop over a run's pieces (see the module docstring).

    A folder holds one run: :func:`~mumo.train.setup.setup` refuses a folder that holds another's run (unless
    ``overwrite``) and restores a resumed one; a resumed run that had finished returns its metrics without
    training or evaluating again. Every checkpoint names its run (``run_id``), so pruning never touches
    another run's. The run owns torch's global generator: it is saved in every checkpoint and restored on
    resume, so two runs of one config end with the same weights, bit for bit, on CPU.

    Args:
        pieces: what :func:`~mumo.train.setup.setup` built.
        progress: show a progress bar.
        evaluate: the end-of-run evaluation (rank 0, on the saved model) when ``config.evaluate``; none
            when None (``mumo.run.train`` hands in :func:`mumo.run.evaluate.evaluate_run`).
    """

    def __init__(self, pieces: TrainPieces, progress: bool = True, evaluate: Evaluate | None = None) -> None:
        p = self.pieces = pieces
        self.config, self.dist, self.device = p.config, p.dist, p.device
        self.dataset, self.collate, self.tokenizer = p.dataset, p.collate, p.tokenizer
        self.model, self.task, self.forward = p.model, p.task, p.forward
        self.optimizer, self.scheduler, self.scaler = p.optimizer, p.scheduler, p.scaler
        self.sharded, self.replicated, self.inference_only = p.sharded, p.replicated, p.inference_only
        self.finetune, self.run_id = p.finetune, p.run_id
        self.out_dir = Path(p.config.out_dir)
        self.progress = progress and self.dist.is_main
        self.evaluate = evaluate
        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        self.autocast_dtype = dtypes[p.config.precision]
        self.step = p.state.get("step", 0)
        self.finished = (
            p.checkpoint is not None
            and self.step >= p.config.max_steps
            and (self.out_dir / "metrics.json").is_file()
            and (self.out_dir / "final").is_dir()
        )
        self.epoch_skips = SkipReport()  # reported, then cleared, at each epoch's end
        self.all_skips = SkipReport()
        if self.dist.is_main:  # one writer per run folder
            atomic_write_json(self.out_dir / "train_config.json", p.config.to_dict())

    @classmethod
    def from_config(
        cls,
        config: TrainConfig,
        resume: bool = False,
        progress: bool = True,
        overwrite: bool = False,
        source: DataSource | None = None,
        build_classifier: ClassifierBuilder | None = None,
        evaluate: Evaluate | None = None,
    ) -> Trainer:
        """:func:`~mumo.train.setup.setup` then the loop over its pieces (arguments as theirs)."""
        pieces = setup(config, resume, overwrite, source, build_classifier)
        return cls(pieces, progress=progress, evaluate=evaluate)

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
            "data_layout": data_layout(self.config, self.dist),
            "run_id": self.run_id,
        }
        keep = self.config.keep_checkpoints
        if self.sharded:
            save_sharded_checkpoint(
                self.out_dir, self.step, self.task, self.tokenizer, self.optimizer, self.scheduler,
                is_main=self.dist.is_main, extra=extra, keep=keep,
            )  # fmt: skip
        elif self.dist.is_main:
            save_checkpoint(
                self.out_dir, self.step, self.model, self.tokenizer, self.optimizer, self.scheduler,
                extra=extra, keep=keep,
            )  # fmt: skip
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
            "train_seconds": round(seconds, 3),  # ms: a test-sized run takes under 0.05 s
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
        if c.evaluate and self.evaluate is not None and main:
            # a sharded model runs only with every rank; rank 0 evaluates the whole one it saved
            model = load_pretrained(final).to(self.device) if self.sharded else self.model
            results["eval"] = self.evaluate(model, self.tokenizer, c, self.out_dir, self.dataset)
        if main:  # last: a run with metrics.json is finished, and a resume returns them
            atomic_write_json(self.out_dir / "metrics.json", results)
        barrier(self.dist)
        return results
