"""`mumo train`, `finetune`, `demo`, `compare` and `report`: runs from recipes and what they write. The
commands parse arguments, call :mod:`mumo.train` / :mod:`mumo.run`, and print."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mumo.cli._output import console, print_metrics
from mumo.errors import ConfigError, DataError

if TYPE_CHECKING:
    from mumo.train.config import TrainConfig


def train(
    recipe: Path = typer.Argument(..., help="YAML recipe (configs/demo.yaml) or a shipped one (demo)"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. optim.lr=3e-4 max_steps=100"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest valid checkpoint"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="replace the run out_dir holds (its checkpoints and outputs are deleted)"
    ),
    nproc: int = typer.Option(
        1, min=1, help="processes on this machine: runs the same command under torchrun"
    ),
) -> None:
    """Train a model from a recipe; checkpoints, metrics.jsonl and metrics.json go to out_dir. For many
    machines, launch `torchrun --nnodes … -m mumo train RECIPE` yourself: batch_size is per process."""
    from mumo.run.recipes import load as load_recipe

    if nproc > 1:
        from mumo.train.distributed import launch_local

        load_recipe(recipe, overrides or [])  # a bad recipe fails here, once, not in every process
        flags = [f for f, on in (("--resume", resume), ("--overwrite", overwrite)) if on]
        args = ["train", str(recipe), *(overrides or []), *flags]
        raise typer.Exit(launch_local(nproc, args))

    _fit(load_recipe(recipe, overrides or []), resume, overwrite)


def _fit(config: TrainConfig, resume: bool, overwrite: bool, show_trainable: bool = False) -> None:
    """Run a training config to the end, printing where it resumed, what trains, and the final metrics."""
    from mumo.run.train import fit
    from mumo.run.train import trainer as build_trainer

    trainer = build_trainer(config, resume=resume, overwrite=overwrite)
    if resume:
        where = f"step {trainer.step}" if trainer.step else "the start (no valid checkpoint found)"
        console.print(f"resuming {config.out_dir} from {where}")
    if show_trainable:
        n, total = trainer.finetune["trainable_params"], trainer.finetune["total_params"]
        console.print(f"training {n:,} of {total:,} parameters ({100 * n / total:.2f} %)")
    results = fit(trainer)
    if trainer.dist.is_main:  # under torchrun, rank 0 saved and evaluated
        print_metrics(results.get("eval", {}))
        console.print(f"model saved to {results['final']}")


def finetune(
    recipe: Path = typer.Argument(..., help="YAML recipe or a shipped one (finetune/digits)"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. finetune.lora_rank=8"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest valid checkpoint"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="replace the run out_dir holds (its checkpoints and outputs are deleted)"
    ),
) -> None:
    """Adapt a pretrained model (the recipe's init_from): classifier fine-tuning on labelled images, locked
    towers (LiT), LoRA, layer-wise lr decay; the same trainer, checkpoints and outputs as `mumo train`."""
    from mumo.run.recipes import load as load_recipe

    config = load_recipe(recipe, overrides or [])
    if config.init_from is None:
        raise ConfigError(f"{recipe}: fine-tuning starts from a pretrained model; set init_from=MODEL_OR_RUN")
    _fit(config, resume, overwrite, show_trainable=True)


def demo(
    out: Path = typer.Option(Path("runs/demo"), help="run folder"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides of configs/demo.yaml"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted demo"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="replace the run out_dir holds (its checkpoints and outputs are deleted)"
    ),
) -> None:
    """Generate the built-in data, train configs/demo.yaml, evaluate, and write report.html / report.md."""
    from mumo.data.shapes import ShapesConfig, write_shapes
    from mumo.run.recipes import recipe_path
    from mumo.run.report import write_report
    from mumo.run.train import train as run
    from mumo.train import load_recipe

    config = load_recipe(recipe_path("demo"), [f"out_dir={out}", *(overrides or [])])
    start = time.perf_counter()
    shapes = ShapesConfig(image_size=config.data.image_size, seed=config.data.seed)
    sample = write_shapes(out / "data_sample", 64, split="test", config=shapes)
    console.print(f"[bold]1/2 data[/bold]: scenes are drawn on the fly; 64 test scenes written to {sample}")
    steps = f"{config.max_steps} steps of {config.batch_size}"
    console.print(f"[bold]2/2 train, evaluate, report[/bold]: {config.model}, {steps}")
    results = run(config, resume=resume, overwrite=overwrite)  # evaluates and writes the report at its end
    report = out / "report.html" if config.report else write_report(out)
    print_metrics(results.get("eval", {}))
    console.print(f"report: {report}   model: {results['final']}   time: {time.perf_counter() - start:.0f} s")


def compare(
    recipes: list[Path] = typer.Argument(..., help="YAML recipes, e.g. configs/compare/*.yaml"),
    out: Path = typer.Option(Path("runs/compare"), help="runs go to OUT/<recipe name>, the table to OUT"),
    override: list[str] = typer.Option(None, "--set", help="key=value applied to every recipe (repeatable)"),
    size: int = typer.Option(1000, min=2, help="test scenes for zero-shot and the compositional probe"),
    retrieval_size: int = typer.Option(1000, min=2, help="retrieval gallery size"),
    rerank_k: int = typer.Option(16, min=1, help="ITC shortlist that ITM re-ranks"),
    seeds: list[int] = typer.Option(
        None, "--seed", help="train each recipe once per seed (repeatable): worst and spread per figure"
    ),
    eval_seed: int = typer.Option(None, help="data seed of the test scenes (default: each recipe's)"),
) -> None:
    """Train each recipe at the same budget (resumable) and write one comparison table."""
    from mumo.run.compare import compare as run_compare
    from mumo.run.compare import format_table

    rows = run_compare(
        recipes,
        out,
        override or [],
        size=size,
        retrieval_size=retrieval_size,
        rerank_k=rerank_k,
        seeds=seeds or None,
        eval_seed=eval_seed,
    )
    console.print(format_table(rows))
    console.print(f"table written to {out / 'compare.md'}")


def report(run_dir: Path = typer.Argument(..., help="a run folder (with metrics.json)")) -> None:
    """Rebuild a run's report.html, report.md and plots from its saved metrics."""
    from mumo.run.report import write_report

    if not (run_dir / "metrics.json").is_file():
        raise DataError(f"{run_dir} has no metrics.json; is it a finished training run?")
    console.print(f"report: {write_report(run_dir)}")
