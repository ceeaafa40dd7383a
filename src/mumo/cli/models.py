"""`mumo version`, `mumo models` (and `list-models`), `mumo info`, `mumo convert`: the registry and model
formats. The commands parse arguments, call :mod:`mumo.models` / :mod:`mumo.interop`, and print."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mumo.cli._output import console, print_table


def version() -> None:
    """Print the mumo version."""
    from mumo.version import __version__

    print(__version__)


def models(pattern: str = typer.Argument("*", help="shell-style filter, e.g. 'clip_vit_*'")) -> None:
    """List registered models with their parameter counts (tab-separated when not printed to a terminal)."""
    from mumo.models import get_model_config, list_models
    from mumo.models.describe import describe_model, num_params

    rows = []
    for name in list_models(pattern):
        config = get_model_config(name)
        size, shape = describe_model(config)
        rows.append((name, config.model_type, f"{num_params(config) / 1e6:.2f} M", size, shape))
    print_table(("model", "type", "parameters", "image", "shape"), rows)


def info(model: str = typer.Argument(..., help="registered name or config.json path")) -> None:
    """Print a model's config as JSON and its parameter count."""
    from mumo.models import get_model_config
    from mumo.models.describe import num_params

    config = get_model_config(model)
    print(json.dumps(config.to_dict(), indent=2))
    console.print(f"parameters: {num_params(config):,}")


def convert(
    src: Path = typer.Argument(
        ..., help="source: a model folder, run folder or training checkpoint, or an OpenCLIP weights file"
    ),
    dst: Path = typer.Argument(..., help="target folder"),
    from_: str = typer.Option(..., "--from", help="mumo, open_clip or hf"),
    to: str = typer.Option(..., "--to", help="mumo, hf or onnx"),
    config: Path | None = typer.Option(None, help="OpenCLIP model config, when SRC is a weights file"),
    tokenizer: Path | None = typer.Option(
        None,
        help="tokenizer to write with the model (tokenizer.json, a folder, or OpenCLIP's "
        "bpe_simple_vocab_16e6.txt.gz); default: the source's, for OpenCLIP the open_clip package's",
    ),
) -> None:
    """Convert a CLIP model between mumo, OpenCLIP, Hugging Face and ONNX, its tokenizer included. Every
    output is checked before it is put in place: a mumo or HF folder is read back and must give the
    source's embeddings and token ids; ONNX encoders are run in onnxruntime and compared with PyTorch."""
    from mumo.interop.convert import convert as run

    console.print(f"wrote {run(src, dst, from_, to, config, tokenizer)}")
