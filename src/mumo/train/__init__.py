"""Training: typed configs and YAML recipes, tasks, optimizer, checkpoints and the loop."""

from mumo.train.checkpoint import latest_valid_checkpoint, load_checkpoint, save_checkpoint, verify_checkpoint
from mumo.train.config import DataConfig, OptimConfig, TrainConfig, load_recipe, parse_overrides
from mumo.train.tasks import MultiTask, Task
from mumo.train.trainer import Trainer, train

__all__ = [
    "DataConfig",
    "MultiTask",
    "OptimConfig",
    "Task",
    "TrainConfig",
    "Trainer",
    "latest_valid_checkpoint",
    "load_checkpoint",
    "load_recipe",
    "parse_overrides",
    "save_checkpoint",
    "train",
    "verify_checkpoint",
]
