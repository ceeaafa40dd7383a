"""A run folder: what a run writes there, and the rules that keep one run per folder.

    <out_dir>/
        checkpoints/step_NNNNNN/   train_config.json   metrics.jsonl   metrics.json   final/
        tensorboard/   report.html   report.md   *.png   eval_figures.*   eval_captions.safetensors

- A new run claims the folder (:func:`claim_out_dir`): it refuses one that holds another run's checkpoints
  or model, or, told to overwrite, deletes that run's outputs (only what a run writes).
- A resumed run continues the run its checkpoint recorded (:func:`check_unchanged`): a changed setting
  that would make it another run is refused by name; how it reports may change.
- ``metrics.jsonl`` (:class:`MetricsLog`) loses its lines past the resumed step, and a line a crash cut
  short.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from mumo._io import atomic_write
from mumo.errors import TrainingError
from mumo.train.checkpoint import list_checkpoints
from mumo.train.config import TrainConfig

logger = logging.getLogger(__name__)


# What a run writes into its folder: all of it goes when --overwrite replaces the run.
RUN_OUTPUTS = (
    "checkpoints",
    "final",
    "tensorboard",
    "metrics.jsonl",
    "metrics.json",
    "train_config.json",
    "report.html",
    "report.md",
    "curves.png",
    "similarity.png",
    "confusion.png",
    "eval_figures.safetensors",
    "eval_figures.json",
    "eval_captions.safetensors",
)
# Settings a resumed run may change: where and how often it reports, not what it computes.
RESUMABLE_CHANGES = frozenset(
    {"out_dir", "log_every", "checkpoint_every", "keep_checkpoints", "evaluate", "tensorboard", "report",
     "threads"}
)  # fmt: skip


def claim_out_dir(out_dir: Path, overwrite: bool, delete: bool = True) -> None:
    """Make ``out_dir`` the folder of a new run: refuse one that holds another run, or, with ``overwrite``,
    delete that run's outputs (when ``delete``: only what a run writes, never anything else of the folder)."""
    held = list_checkpoints(out_dir) or ([out_dir / "final"] if (out_dir / "final").is_dir() else [])
    if not held:
        return
    if not overwrite:
        names = ", ".join(p.name for p in held[-2:])
        raise TrainingError(
            f"{out_dir} already holds a run ({names}); continue it with --resume, choose another out_dir, or "
            "pass --overwrite to replace it"
        )
    if not delete:
        return
    logger.warning("--overwrite: deleting the run in %s", out_dir)
    for name in RUN_OUTPUTS:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict) and k != "model_overrides" and k != "loss_weights":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_unchanged(config: TrainConfig, saved: dict[str, Any] | None, checkpoint: Path) -> None:
    """Refuse to resume ``checkpoint`` with settings that would make the run another one than it recorded.
    (A setting the checkpoint does not know, from a newer mumo, is taken as unchanged.)"""
    if not isinstance(saved, dict):
        return
    now, then = _flat(config.to_dict()), _flat(saved)
    changed = [
        f"{k} {then[k]!r} -> {v!r}"
        for k, v in now.items()
        if k in then and then[k] != v and k.split(".")[0] not in RESUMABLE_CHANGES
    ]
    if changed:
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise TrainingError(
            f"{checkpoint} was written by a run with other settings ({', '.join(changed[:4])}{more}); resume "
            f"with its settings, or start a new run from its weights with init_from={checkpoint}"
        )


class MetricsLog:
    """metrics.jsonl (always) and TensorBoard (when asked); on resume, lines past the checkpoint go."""

    def __init__(self, out_dir: Path, resume_step: int, tensorboard: bool) -> None:
        self.path = out_dir / "metrics.jsonl"
        if self.path.exists():
            kept = [row for row in _metric_rows(self.path) if json.loads(row)["step"] <= resume_step]
            atomic_write(self.path, lambda p: p.write_text("".join(row + "\n" for row in kept)))
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # optional: imported only when used

            self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=resume_step + 1)

    def write(self, step: int, values: dict[str, float]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _metric_rows(path: Path) -> list[str]:
    """The lines of a metrics.jsonl that parse; a line a crash cut short (the last, mid-write) is dropped."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(line)
        elif line.strip():
            logger.warning("%s: dropped a damaged line (a crash mid-write?): %.80s", path, line)
    return rows
