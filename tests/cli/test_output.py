"""What the CLI prints where: progress bars and tables on a terminal; through a pipe, results only (no bar,
no box drawing, names whole and tab-separated). `mumo` runs in a subprocess with stdout a pipe, as
`mumo models | grep ...` runs it."""

import io
import os
import subprocess
import sys

import pytest
from rich.console import Console

from mumo.cli import _output

BAR_OR_BOX = "━─│┃┏┡└╇\x1b"  # the bar, the table's lines, escape codes


def _mumo(*args: str, terminal: bool = False) -> subprocess.CompletedProcess:
    # rich decides "terminal" from these variables before isatty(): clear them, then set the one we mean
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS")}
    env |= {"HF_HUB_OFFLINE": "1", **({"TTY_COMPATIBLE": "1"} if terminal else {})}
    run = subprocess.run(
        [sys.executable, "-m", "mumo", *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bar_draws_only_on_a_terminal(monkeypatch, terminal):
    out = io.StringIO()
    monkeypatch.setattr(_output, "console", Console(file=out, force_terminal=terminal, width=80))
    with _output.progress_bar("embedding") as update:
        for done in range(1, 4):
            update(done, 3)
    assert ("━" in out.getvalue()) == terminal and ("embedding" in out.getvalue()) == terminal


@pytest.mark.parametrize("terminal", [True, False])
def test_a_printed_line_is_wrapped_only_on_a_terminal(terminal):
    out = io.StringIO()
    console = _output._Console(file=out, force_terminal=terminal, width=80)
    line = "/tmp/" + "a-long-folder-name/" * 8 + ": 6 images (flat search)"
    console.print(line)
    if terminal:  # wrapped to the terminal's width
        assert out.getvalue().count("\n") > 1, out.getvalue()
    else:  # whole, as grep wants it
        assert out.getvalue() == line + "\n", out.getvalue()


def test_models_through_a_pipe_prints_whole_names_tab_separated():
    lines = _mumo("models").stdout.splitlines()
    assert lines[0].split("\t") == ["model", "type", "parameters", "image", "shape"]
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(r) == 5 for r in rows) and "single_stream_mini_64" in [r[0] for r in rows]
    assert not set("".join(lines)) & set(BAR_OR_BOX)
    assert "clip_vit_b32\tclip\t151.28 M\t" in _mumo("models", "clip_vit_b*").stdout


def test_models_on_a_terminal_is_a_table():
    out = _mumo("models", "clip_vit_b*", terminal=True).stdout
    assert out.startswith("┏━") and "clip_vit_b32" in out and "\t" not in out


def test_embed_shows_a_bar_on_a_terminal_and_none_through_a_pipe(run_dir, shapes_dir, tmp_path):
    args = ("embed", str(run_dir), "--images", str(shapes_dir / "images"), "--out", str(tmp_path / "e.jsonl"))
    piped = _mumo(*args).stdout
    assert piped.startswith("wrote 6 embeddings") and not set(piped) & set(BAR_OR_BOX), piped
    assert "━" in _mumo(*args, terminal=True).stdout  # the bar is wired to the embedding's progress


def test_eval_draws_its_bar_on_a_terminal_and_prints_only_metrics_elsewhere(invoke, run_dir, monkeypatch):
    args = ("eval", str(run_dir), "--split", "val", "--size", "12")
    piped = invoke(*args).output
    assert piped.startswith("metric\tvalue\n") and "evaluating" not in piped  # the metrics only, plain
    assert "zero-shot colour x shape top-1\t" in piped and not set(piped) & set(BAR_OR_BOX), piped
    out = io.StringIO()
    monkeypatch.setattr(_output, "console", Console(file=out, force_terminal=True, width=100))
    invoke(*args)
    assert "evaluating" in out.getvalue() and "━" in out.getvalue()
