"""Tasks: a model plus its objectives, one Task per model family, chosen by the model's type.

The trainer only sees the :class:`Task` protocol: ``training_forward(batch) -> {name: loss}``,
``combine(losses) -> loss``, ``metrics()``, ``reseed(position)``. Which objectives a family trains:

    clip              itc                          :class:`ContrastiveTask` (also NegCLIP, GradCache)
    fusion            any of itc, itm, mlm          :class:`FusionTask` (hard or soft text sharing)
    single_stream     any of itm, mlm               :class:`SingleStreamTask`
    captioner         lm, and itc for CoCa          :class:`CaptionTask`
    image_classifier  cls                           :class:`ClassificationTask`

A new family registers its Task with :func:`register_task`; nothing else branches on model types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from mumo.errors import ConfigError
from mumo.train.tasks.base import OBJECTIVES, ObjectiveTask
from mumo.train.tasks.caption import CaptionTask
from mumo.train.tasks.classification import ClassificationTask
from mumo.train.tasks.contrastive import ContrastiveTask
from mumo.train.tasks.fusion import FusionTask, SingleStreamTask


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

    def reseed(self, position: int, device: torch.device | str = "cpu") -> None:
        """Seed the task's own draws for the micro-batch at ``position`` of the run."""
        ...


# Filled here and by register_task; read-only afterwards.
_TASKS: dict[str, type[nn.Module]] = {
    "clip": ContrastiveTask,
    "fusion": FusionTask,
    "single_stream": SingleStreamTask,
    "captioner": CaptionTask,
    "image_classifier": ClassificationTask,
}


def register_task(model_type: str, task_cls: type[nn.Module]) -> None:
    """Train models of ``model_type`` (see :func:`mumo.models.register_architecture`) with ``task_cls``,
    which needs ``from_config(model, train_config, tokenizer, rank, world_size)`` and the :class:`Task`
    methods."""
    _TASKS[model_type] = task_cls


def task_class(model: nn.Module) -> type[nn.Module]:
    """The Task class that trains ``model``, by its config's ``model_type``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _TASKS:
        raise ConfigError(f"no training objectives are defined for {type(model).__name__}")
    return _TASKS[model_type]


def build_task(
    model: nn.Module, config: Any, tokenizer: Any, rank: int = 0, world_size: int = 1
) -> nn.Module:
    """The task a :class:`~mumo.train.config.TrainConfig` asks for: the model family's Task with the run's
    objectives, the tokenizer's special ids and, across processes, the contrastive loss gathering every
    rank's features."""
    cls = task_class(model)
    if ("cls" in config.objectives) != (cls is ClassificationTask):
        if "cls" in config.objectives:
            raise ConfigError(f"the cls objective trains an image classifier, not {type(model).__name__}")
        raise ConfigError(f"an image classifier trains on the cls objective, not {list(config.objectives)}")
    return cls.from_config(model, config, tokenizer, rank, world_size)


def MultiTask(model: nn.Module, objectives: Any = ("itc",), **kwargs: Any) -> ObjectiveTask:  # noqa: N802
    """The model family's objective Task (:class:`ContrastiveTask`, :class:`FusionTask`,
    :class:`SingleStreamTask` or :class:`CaptionTask`) with these arguments: the one class of the previous
    release, kept for one release."""
    cls = task_class(model)
    if not issubclass(cls, ObjectiveTask):
        raise ConfigError(f"no training objectives are defined for {type(model).__name__}")
    return cls(model, objectives, **kwargs)


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


__all__ = [
    "OBJECTIVES",
    "CaptionTask",
    "ClassificationTask",
    "ContrastiveTask",
    "FusionTask",
    "MultiTask",
    "ObjectiveTask",
    "SingleStreamTask",
    "Task",
    "build_task",
    "load_task_state",
    "register_task",
    "task_class",
    "task_state",
]
