"""Running under ``torchrun``: the process group, this process's place, and the launcher shortcut.

``torchrun --nproc_per_node N -m mumo train RECIPE`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous in their environment; :func:`init_distributed` joins them (``gloo`` on
CPU, ``nccl`` on GPUs). Each process trains on its ``batch_size`` share of every global batch of
``batch_size * world_size`` samples; the contrastive loss gathers every rank's features (with gradient) and
DDP averages the gradients, so a step equals a single process's step on the global batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mumo.layers.block import Block


@dataclass(frozen=True)
class DistInfo:
    """This process's place: ``rank`` of ``world_size``, ``local_rank`` on its node; ``owns_group`` when
    :func:`init_distributed` created the process group (and :func:`destroy_distributed` should end it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, checkpoints and evaluates."""
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group ``torchrun`` set up (a no-op without one, or with ``WORLD_SIZE`` 1).

    On CUDA each process takes the GPU of its ``LOCAL_RANK``; the backend is ``nccl`` there, ``gloo`` on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns_group = not dist.is_initialized()
    if owns_group:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
    return DistInfo(rank, world_size, local_rank, owns_group)


def destroy_distributed(info: DistInfo) -> None:
    """End the process group :func:`init_distributed` created (a group the caller made is left alone).

    A process that exits with its group alive can abort in the backend's thread teardown ("terminate called
    without an active exception", seen on gloo), failing a run that had finished.
    """
    if info.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (rank 0 writing a checkpoint, say); a no-op in one process."""
    if info.world_size > 1:
        dist.barrier()


def gather_lists(items: list, info: DistInfo) -> list:
    """Every rank's ``items`` (picklable), concatenated in rank order, on every rank; call on all ranks."""
    if info.world_size == 1:
        return list(items)
    out: list[list] = [[] for _ in range(info.world_size)]
    dist.all_gather_object(out, list(items))
    return [x for part in out for x in part]


def broadcast_parameters(module: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's parameters and buffers (what DDP does when it wraps a module)."""
    if info.world_size > 1:
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t, src=0)


def average_gradients(params: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """Average ``.grad`` over ranks in one all-reduce per dtype: DDP's result, for a step whose backward
    passes DDP cannot follow (GradCache runs one per chunk, outside the wrapped forward), and for the
    parameters FSDP leaves replicated."""
    if info.world_size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    for dtype in sorted({g.dtype for g in grads}, key=str):
        same = [g for g in grads if g.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in same])
        dist.all_reduce(flat)
        flat /= info.world_size
        offset = 0
        for g in same:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def fully_shard_task(task: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Shard ``task`` with FSDP2 (``fully_shard``): every Transformer block is its own unit (gathered for
    its forward and backward, then freed), the rest of the model the root unit.

    FSDP2 shards parameters along their first dimension, so scalars (the temperature, SigLIP's bias) and
    the task's own parameters (learned loss weights, read outside any forward) stay whole on every rank.
    They are returned: average their gradients with :func:`average_gradients` after each backward.
    """
    from torch.distributed.fsdp import fully_shard

    replicated = [p for n, p in task.named_parameters() if p.ndim == 0 or not n.startswith("model.")]
    ignored = set(replicated)
    for module in task.modules():
        if isinstance(module, Block):
            fully_shard(module, ignored_params=ignored)
    fully_shard(task, ignored_params=ignored)
    return replicated


def launch_local(nproc: int, args: list[str]) -> int:
    """Run ``mumo <args>`` in ``nproc`` processes on this machine, as ``torchrun --standalone
    --nproc_per_node=<nproc> -m mumo <args>`` would; returns 0, or the exit code of the first process to
    fail (128 + the signal's number for one killed by a signal, or for the launcher itself stopped by one).

    Each process reports its own errors, one line each. torchrun's launcher would add its log lines and a
    traceback of its own after them, burying that line: its loggers are silenced while it runs (and set
    back after) and its failure becomes the exit code.
    """
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    loggers = [
        lg
        for name, lg in list(logging.Logger.manager.loggerDict.items())
        if name.startswith("torch.distributed") and isinstance(lg, logging.Logger)
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        run(parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "mumo", *args]))
    except ChildFailedError as e:
        code = e.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code if code < 0 else 1
    except SignalException as e:
        return 128 + int(e.sigval)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    return 0
