"""Training: typed configs and YAML recipes, one Task per model family, the pieces a run is built from
(``setup``), optimizer, checkpoints and the loop. A run end to end (train -> evaluate -> report) is
:func:`mumo.run.train.train`."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from mumo.train.checkpoint import latest_valid_checkpoint, load_checkpoint, save_checkpoint, verify_checkpoint
from mumo.train.config import DataConfig, OptimConfig, TrainConfig, load_recipe, parse_overrides
from mumo.train.setup import TrainPieces, setup
from mumo.train.tasks import MultiTask, Task, build_task, register_task
from mumo.train.trainer import Trainer

# Names that moved up a floor, to mumo.run: reachable here for one release, with a warning. (A plain import
# would point up a floor; see ARCHITECTURE.md.)
_MOVED_UP = {"train": "mumo.run.train"}


def __getattr__(name: str) -> Any:
    if name in _MOVED_UP:
        warnings.warn(
            f"mumo.train.{name} moved to {_MOVED_UP[name]}.{name}; this alias goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED_UP[name]), name)
    raise AttributeError(f"module 'mumo.train' has no attribute {name!r}")


__all__ = [
    "DataConfig",
    "MultiTask",
    "OptimConfig",
    "Task",
    "TrainConfig",
    "TrainPieces",
    "Trainer",
    "build_task",
    "latest_valid_checkpoint",
    "load_checkpoint",
    "load_recipe",
    "parse_overrides",
    "register_task",
    "save_checkpoint",
    "setup",
    "verify_checkpoint",
]
