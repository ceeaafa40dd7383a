"""What every noun of the CLI shares: the console it prints to, the metric table, and the check of an
output path that runs before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from mumo.errors import DataError

console = Console()


def print_metrics(evaluation: dict[str, Any]) -> None:
    """The headline metrics of an evaluation as a two-column table (nothing when there are none)."""
    if not evaluation:
        return
    from rich.table import Table

    from mumo.run.report import headline_rows

    table = Table("metric", "value")
    for label, value in headline_rows(evaluation):
        table.add_row(label, value)
    console.print(table)


def check_output(
    path: Path | None, option: str = "--out", suffixes: tuple[str, ...] = (), folder: bool = False
) -> None:
    """Refuse an output path before any work is done (a model loaded, a data set embedded): a file's folder
    must exist and the file must not be a folder, with one of ``suffixes`` when given; a ``folder`` output
    (created if needed) must not be a file. None: no output asked for."""
    if path is None:
        return
    if folder:
        if path.exists() and not path.is_dir():
            raise DataError(f"{option} {path} is a file; give a folder (it is created if needed)")
        return
    if path.is_dir():
        raise DataError(f"{option} {path} is a folder; give a file path")
    if not path.parent.is_dir():
        what = "is not a folder" if path.parent.exists() else "does not exist; create it first"
        raise DataError(f"{option} {path}: the folder {path.parent} {what}")
    if suffixes and path.suffix not in suffixes:
        raise DataError(f"{option} must end in {' or '.join(suffixes)}, got {path.name}")
