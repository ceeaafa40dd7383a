"""Training checkpoints: a folder per step, written atomically and verified on load.

    <out_dir>/checkpoints/step_000200/
        config.json  model.safetensors  tokenizer.json    (a loadable model folder, see save_pretrained)
        trainer_state.safetensors                         (optimizer tensors, RNG states)
        trainer_state.json                                (step, run_id, scheduler, optimizer settings)
        manifest.json                                     (size and SHA-256 of every file; written last)

A checkpoint is written into a hidden temporary folder, every file is fsync'ed, and the folder is renamed
into place, so a crash (even ``kill -9``) leaves either the whole checkpoint or none. On load the manifest
is checked; a truncated or altered checkpoint is reported and the previous one is used.

Each checkpoint names the run that wrote it (``run_id``), and a run prunes only its own older checkpoints
(``keep``): a folder that also holds another run's never loses them to this one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mumo._io import MANIFEST_NAME, fsync, verify_manifest, write_manifest
from mumo.data.tokenizer import Tokenizer
from mumo.errors import CheckpointError
from mumo.models import load_pretrained, save_pretrained
from mumo.models._pretrained import CONFIG_NAME, load_state_dict_strict
from mumo.models._registry import build_model, config_from_dict

logger = logging.getLogger(__name__)

MANIFEST = MANIFEST_NAME  # size and SHA-256 of every file; the same manifest as a model folder's
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
SHARDED = "sharded"  # FSDP checkpoints: torch.distributed.checkpoint shards of weights and optimizer


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    model: nn.Module,
    tokenizer: Tokenizer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write the checkpoint of ``step`` atomically under ``out_dir/checkpoints``; keep the newest ``keep``."""
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    for stale in root.glob(".tmp-*"):  # left by a save that was killed mid-way
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    save_pretrained(model, tmp, tokenizer=tokenizer, merge_lora=False, manifest=False)  # _seal checksums all
    tensors, optim_meta = _optimizer_to_files(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    save_file(tensors, str(tmp / STATE_TENSORS))
    meta = {"step": step, "optimizer": optim_meta, "scheduler": scheduler.state_dict(), **(extra or {})}
    (tmp / STATE_JSON).write_text(json.dumps(meta, indent=2))
    return _seal(tmp, final, keep)


def _seal(tmp: Path, final: Path, keep: int) -> Path:
    """Checksum every file of ``tmp`` into its manifest, fsync, rename it to ``final``; prune old ones."""
    write_manifest(tmp)
    for p in [*tmp.rglob("*"), tmp]:
        fsync(p)
    if final.exists():  # a re-run of the same step replaces it
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync(final.parent)
    # Only this run's own checkpoints, up to this one, are pruned: those of another run (or unreadable ones)
    # are not ours to delete, and a later step of ours that exists is a damaged one a resume skipped, which
    # this run will overwrite when it gets there.
    run = run_id(final)
    own = [c for c in list_checkpoints(final.parent.parent) if c.name <= final.name and run_id(c) == run]
    for old in own[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def run_id(checkpoint: str | Path) -> str | None:
    """The identity of the run that wrote a checkpoint (``run_id`` in its trainer state; None for a
    checkpoint of an older mumo, which had none), or ``"?"`` when its state cannot be read."""
    try:
        state = json.loads((Path(checkpoint) / STATE_JSON).read_text())
    except (OSError, ValueError):
        return "?"
    return state.get("run_id") if isinstance(state, dict) else "?"


def save_sharded_checkpoint(
    out_dir: str | Path,
    step: int,
    task: nn.Module,
    tokenizer: Tokenizer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    is_main: bool,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """The checkpoint of a model sharded with FSDP2, written by every rank at once: each writes its own
    shards of the weights and optimizer state (``torch.distributed.checkpoint``, under ``sharded/``), rank
    0 (``is_main``) the config, tokenizer, schedule and manifest. Call on every rank.

    ``task`` is what was sharded (the model is its ``model`` child, so weights are saved as ``model.*``).
    The checkpoint is sealed (manifest, rename) as :func:`save_checkpoint` does; any number of processes
    can load it again (:func:`load_sharded_checkpoint`), one included.
    """
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = Path(out_dir) / "checkpoints"
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-{final.name}-sharded"  # one name all ranks agree on
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    dist.barrier()
    model_state, optim_state = get_state_dict(task, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp / SHARDED))
    if is_main:
        save_pretrained(task.model, tmp, tokenizer=tokenizer, weights=False, manifest=False)
        meta = {"step": step, "sharded": True, "scheduler": scheduler.state_dict(), **(extra or {})}
        (tmp / STATE_JSON).write_text(json.dumps(meta, indent=2))
        _seal(tmp, final, keep)
    dist.barrier()
    return final


def is_sharded(path: str | Path) -> bool:
    """Whether a checkpoint holds FSDP shards (``sharded/``) rather than ``model.safetensors``."""
    return (Path(path) / SHARDED).is_dir()


def load_sharded_checkpoint(
    path: str | Path,
    task: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Resume from a :func:`save_sharded_checkpoint` checkpoint: ``task`` (sharded over any number of
    ranks), ``optimizer`` and ``scheduler`` are restored in place; returns the trainer state. Call on every
    rank. (:func:`load_checkpoint` reads the model alone into one process.)"""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    path = Path(path)
    verify_checkpoint(path)
    model_state, optim_state = get_state_dict(task, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(path / SHARDED))
    set_state_dict(task, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    meta = json.loads((path / STATE_JSON).read_text())
    scheduler.load_state_dict(meta["scheduler"])
    return meta


def _load_sharded_into_model(
    path: Path, model: nn.Module | None, map_location: str
) -> tuple[nn.Module, Tokenizer, dict[str, Any]]:
    if model is None:
        model = build_model(config_from_dict(json.loads((path / CONFIG_NAME).read_text())))
    holder = nn.Module()  # the shards name the weights as the trainer's task did: model.*
    holder.model = model
    import torch.distributed.checkpoint as dcp

    # in place: the state dict's tensors are the parameters themselves; a key the shards lack is an error
    dcp.load({"model": holder.state_dict()}, checkpoint_id=str(path / SHARDED))
    tokenizer = Tokenizer.load(path, context_length=getattr(model, "context_length", 77))
    return model.to(map_location), tokenizer, json.loads((path / STATE_JSON).read_text())


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (temporary folders of interrupted saves excluded)."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))


def verify_checkpoint(path: str | Path) -> None:
    """Raise :class:`CheckpointError` unless every file in the manifest is there, whole and unchanged."""
    verify_manifest(path)  # a checkpoint without a manifest was not completely written


def latest_valid_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest checkpoint that passes :func:`verify_checkpoint`; broken ones are logged and skipped."""
    for path in reversed(list_checkpoints(out_dir)):
        try:
            verify_checkpoint(path)
            return path
        except CheckpointError as e:
            logger.warning("skipping checkpoint: %s; trying the previous one", e)
    return None


def load_checkpoint(
    path: str | Path,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    restore_rng: bool = True,
    map_location: str = "cpu",
) -> tuple[nn.Module, Tokenizer, dict[str, Any]]:
    """Verify and load a checkpoint; returns (model, tokenizer, trainer state).

    Args:
        path: a checkpoint folder.
        model: load the weights into this model (strictly); None builds a new one from config.json.
        optimizer, scheduler: restored in place when given.
        restore_rng: restore the saved torch (and CUDA) RNG states, as resuming a run needs.
    """
    path = Path(path)
    verify_checkpoint(path)
    if is_sharded(path):  # an FSDP run's: gather its shards into one process
        return _load_sharded_into_model(path, model, map_location)
    if model is None:
        model = load_pretrained(path, map_location=map_location, verify=False)  # verified above
    else:
        weights = path / "model.safetensors"
        load_state_dict_strict(model, load_file(str(weights), device=map_location), str(weights))
    context_length = getattr(model, "context_length", 77)
    tokenizer = Tokenizer.load(path, context_length=context_length)
    tensors = load_file(str(path / STATE_TENSORS))
    meta = json.loads((path / STATE_JSON).read_text())
    if optimizer is not None:
        optimizer.load_state_dict(_optimizer_from_files(tensors, meta["optimizer"]))
    if scheduler is not None:
        scheduler.load_state_dict(meta["scheduler"])
    if restore_rng:
        torch.set_rng_state(tensors["rng.torch"])
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states)
    return model, tokenizer, meta
