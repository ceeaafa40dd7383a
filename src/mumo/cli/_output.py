"""What every noun of the CLI shares: the console it prints to, progress bars, tables, the metric table,
and the check of an output path that runs before any work starts."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mumo.errors import DataError


class _Console(Console):
    """rich's console, except that through a pipe or into a file a printed line stays whole: rich would wrap
    it at the 80 columns it assumes there, splitting a long path, or a count after one, across lines that
    grep no longer finds."""

    def print(self, *objects: Any, soft_wrap: bool | None = None, **kwargs: Any) -> None:
        super().print(*objects, soft_wrap=not self.is_terminal if soft_wrap is None else soft_wrap, **kwargs)


console = _Console()


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar while the block runs, moved by the callback it yields: ``update(done, total)``, the
    signature of the library's ``progress`` arguments. It is transient (gone when the block ends) and off
    when the console is not a terminal: piped or redirected output holds the results only."""
    columns = [TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Rows under their column names: a rich table on a terminal; elsewhere (a pipe, a file) one line per
    row of tab-separated cells under a header line, each cell whole (a rich table would cut them to the
    80 columns it assumes, and draw boxes that grep and cut do not want)."""
    if console.is_terminal:
        from rich.table import Table

        table = Table(*columns)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    for line in (columns, *rows):
        print("\t".join(line))


def print_metrics(evaluation: dict[str, Any]) -> None:
    """The headline metrics of an evaluation as a two-column table (nothing when there are none); plain
    tab-separated lines when not on a terminal (see :func:`print_table`)."""
    if not evaluation:
        return
    from mumo.run.report import headline_rows

    print_table(("metric", "value"), headline_rows(evaluation))


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
