"""A training run end to end: train -> evaluate -> report (what ``mumo train``, ``finetune`` and ``demo``
run). The trainer is handed the run's pieces, the classifier builder of labelled-data runs (heads
initialised in :mod:`mumo.run.heads`) and the end-of-run evaluation (:mod:`mumo.run.evaluate`)."""

from __future__ import annotations

from typing import Any

from mumo.data.sources import DataSource
from mumo.run.evaluate import evaluate_run
from mumo.run.heads import classifier_model
from mumo.run.report import write_report
from mumo.train.config import TrainConfig
from mumo.train.distributed import destroy_distributed
from mumo.train.trainer import Trainer


def trainer(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    source: DataSource | None = None,
) -> Trainer:
    """The :class:`Trainer` of ``config`` with everything a run needs (see :func:`mumo.train.setup.setup`
    for the arguments); ``.fit()`` trains, saves and evaluates."""
    return Trainer.from_config(
        config,
        resume=resume,
        progress=progress,
        overwrite=overwrite,
        source=source,
        build_classifier=classifier_model,
        evaluate=evaluate_run,
    )


def fit(run: Trainer) -> dict[str, Any]:
    """Train, save and evaluate (``run.fit()``), leave the process group the run created under torchrun, then
    write report.html / report.md when the config asks; returns the metrics (``metrics.json``). A resumed
    run that had finished only returns its metrics."""
    finished = run.finished
    try:
        results = run.fit()
    finally:  # a torchrun process leaves the group it joined, whether the run ended or failed
        destroy_distributed(run.dist)
    if run.config.report and not finished and run.dist.is_main:
        write_report(run.out_dir)
    return results


def train(
    config: TrainConfig, resume: bool = False, progress: bool = True, overwrite: bool = False
) -> dict[str, Any]:
    """Train ``config`` (resuming its newest checkpoint when ``resume``), evaluate the final model and write
    its report (see :func:`fit`); returns the metrics."""
    return fit(trainer(config, resume=resume, progress=progress, overwrite=overwrite))
