"""`mumo data shapes` and `mumo data shard`: write the built-in data set, or convert image-caption pairs
into WebDataset shards. The commands parse arguments, call :mod:`mumo.data`, and print."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mumo.cli._output import console

app = typer.Typer(no_args_is_help=True, help="Generate or convert data sets.")


@app.command("shapes")
def data_shapes(
    out: Path = typer.Option(..., help="folder to write images/ and captions.jsonl to"),
    n: int = typer.Option(1000, min=1, help="number of scenes"),
    split: str = typer.Option("train", help="train, val, test or heldout"),
    seed: int = typer.Option(0, help="data set seed"),
    image_size: int = typer.Option(64, help="pixels per side"),
    max_objects: int = typer.Option(3, min=1, max=3, help="most objects per scene"),
    text_only: bool = typer.Option(False, "--text-only", help="write OUT as a text file of captions only"),
) -> None:
    """Write the built-in shapes data set to disk as PNG images + captions.jsonl (or, with --text-only,
    a text corpus of one caption per line for `mumo train configs/gpt_text.yaml data=OUT`)."""
    from mumo.data.shapes import ShapesConfig, write_captions, write_shapes

    config = ShapesConfig(image_size=image_size, max_objects=max_objects, seed=seed)
    start = time.perf_counter()
    if text_only:
        write_captions(out, n, split=split, config=config)
        console.print(f"wrote {n} {split} captions to {out} in {time.perf_counter() - start:.1f} s")
        return
    write_shapes(out, n, split=split, config=config)
    console.print(f"wrote {n} {split} scenes to {out} in {time.perf_counter() - start:.1f} s")


@app.command("shard")
def data_shard(
    src: str = typer.Argument(
        ..., help="'shapes' (built-in set), a CSV / TSV / JSONL annotation file, or a folder of images + .txt"
    ),
    out: Path = typer.Option(..., help="new folder for the .tar shards and shards.json"),
    shard_size: int = typer.Option(1000, min=1, help="samples per shard"),
    size: int = typer.Option(10_000, min=1, help="shapes: number of scenes"),
    image_size: int = typer.Option(64, help="shapes: pixels per side"),
    seed: int = typer.Option(0, help="shapes: data set seed"),
) -> None:
    """Convert image-caption pairs into WebDataset shards (img2dataset's layout, what OpenCLIP reads) for
    `mumo train RECIPE data.kind=shards data.path=OUT`. Unreadable images are skipped and listed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mumo.data.shard_writer import shard_source, write_shards

    start = time.perf_counter()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"sharding {src}", total=size if src == "shapes" else None)
        summary = write_shards(
            shard_source(src, size=size, image_size=image_size, seed=seed),
            out,
            shard_size,
            progress=lambda n: bar.advance(task, n),
        )
    console.print(
        f"wrote {summary['samples']} samples in {summary['shards']} shards to {out} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    if summary["skipped"]:
        listed = ", ".join(f"{s['path']} ({s['reason']})" for s in summary["skipped"][:50])
        more = len(summary["skipped"]) - 50
        console.print(
            f"[yellow]skipped {len(summary['skipped'])} unreadable: {listed}"
            + (f", and {more} more" if more > 0 else "")
        )
