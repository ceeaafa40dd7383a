"""Shared by the CLI tests: a tiny model trained for a few steps, a few scenes of the built-in data on disk,
a tiny captioner and GPT, and two ways to run `mumo`: typer's CliRunner and the console script's main().

The trained folders are session-scoped: each noun's tests use the same runs instead of training their own.
"""

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from mumo.cli import app, main

TINY = [
    "model=clip_vit_tiny",
    "batch_size=8",
    "data.image_size=32",
    "data.train_size=64",
    "data.tokenizer_samples=200",
    "data.tokenizer_vocab_size=300",
    "data.test_size=16",
    "max_steps=4",
    "log_every=2",
    "checkpoint_every=2",
    "tensorboard=false",
]


def _invoke(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="session")
def tiny() -> list[str]:
    """Recipe overrides that train clip_vit_tiny for 4 steps on 64 scenes."""
    return list(TINY)


@pytest.fixture(scope="session")
def invoke() -> Callable[..., Result]:
    """``invoke(*args)``: run ``mumo ARGS`` through CliRunner, assert exit 0, return the result."""
    return _invoke


@pytest.fixture(scope="session")
def main_exit() -> Callable[..., tuple[int, str]]:
    """``main_exit(*args)``: (exit code, stderr) of ``mumo ARGS`` through the console script's main()."""

    def run(*args: str) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
            main(list(args))
        return exit_.value.code, err.getvalue()

    return run


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    recipe = out / "recipe.yaml"
    recipe.write_text("evaluate: true\n")
    result = _invoke("train", str(recipe), *TINY, f"out_dir={out}")
    assert "model saved to" in result.output and "zero-shot colour x shape top-1" in result.output
    return out


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    result = _invoke("data", "shapes", "--out", str(out), "--n", "6", "--split", "test", "--image-size", "32")
    assert "wrote 6 test scenes" in result.output
    return out


@pytest.fixture(scope="session")
def captioner_runs(tmp_path_factory) -> Path:
    """A tiny CoCa fine-tuned for VQA, and a tiny GPT trained on a caption corpus from `data shapes`."""
    out = tmp_path_factory.mktemp("gen")
    corpus = out / "corpus.txt"
    result = _invoke("data", "shapes", "--out", str(corpus), "--n", "300", "--text-only")
    assert "wrote 300 train captions" in result.output and len(corpus.read_text().splitlines()) == 300
    small = [
        "batch_size=8",
        "max_steps=2",
        "log_every=1",
        "checkpoint_every=2",
        "tensorboard=false",
        "threads=1",
    ]
    wide = "model_overrides={text.context_length: 40}"
    gpt = [
        "model=gpt_tiny",
        wide,
        f"out_dir={out / 'gpt'}",
        "data.val_size=2",
        "data.tokenizer_vocab_size=300",
    ]
    _invoke("train", "configs/gpt_text.yaml", f"data={corpus}", *gpt, *small)
    vqa = [
        "model=coca_vit_tiny",
        wide,
        f"out_dir={out / 'vqa'}",
        "init_from=null",
        "data.image_size=32",
        "data.tokenizer_samples=100",
        "data.tokenizer_vocab_size=300",
        "data.test_size=4",
    ]
    _invoke("train", "configs/vqa.yaml", *vqa, *small)
    return out
