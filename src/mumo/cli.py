"""`mumo <verb>`: a thin command line over the public API. Library errors become one line and exit 2."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.table import Table

import mumo
from mumo.errors import MumoError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="mumo: vision-language models in PyTorch.")
console = Console()


def _num_params(name: str) -> int:
    with torch.device("meta"):  # counts without allocating weights
        model = mumo.create_model(name)
    return sum(p.numel() for p in model.parameters())


@app.command()
def version() -> None:
    """Print the mumo version."""
    print(mumo.__version__)


@app.command()
def models(pattern: str = typer.Argument("*", help="shell-style filter, e.g. 'clip_vit_*'")) -> None:
    """List registered models with their parameter counts."""
    table = Table("model", "parameters", "image", "vision", "text")
    for name in mumo.list_models(pattern):
        c = mumo.get_model_config(name)
        v, t = c.vision, c.text
        vision = f"{v.kind} w{v.embed_dim} d{v.depth}" + (f" p{v.patch_size}" if v.kind == "vit" else "")
        table.add_row(
            name,
            f"{_num_params(name) / 1e6:.2f} M",
            f"{v.image_size}px",
            vision,
            f"w{t.embed_dim} d{t.depth}",
        )
    console.print(table)


@app.command()
def info(model: str = typer.Argument(..., help="registered name or config.json path")) -> None:
    """Print a model's config as JSON and its parameter count."""
    config = mumo.get_model_config(model)
    print(json.dumps(config.to_dict(), indent=2))
    console.print(f"parameters: {_num_params(model):,}")


@app.command()
def demo(
    model: str = typer.Option("clip_vit_small_64", help="registered model name"),
    batch_size: int = typer.Option(16, min=2, help="images and captions per batch"),
    seed: int = typer.Option(0, help="seed of weights and data"),
    out: Path | None = typer.Option(None, help="also save the model and tokenizer to this folder"),
) -> None:
    """Build a model, train a tokenizer on sample captions, and run one forward pass and loss on random
    images (the end-to-end training demo arrives with the built-in data set)."""
    net = mumo.create_model(model, seed=seed)
    c = net.config
    colours = ["red", "green", "blue", "yellow", "purple", "cyan"]
    shapes = ["circle", "square", "triangle", "star", "cross", "diamond"]
    captions = [f"a {col} {sh}" for col in colours for sh in shapes]
    tokenizer = mumo.Tokenizer.train(
        captions,
        vocab_size=min(300, c.text.vocab_size),
        min_frequency=1,
        context_length=c.text.context_length,
    )
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(
        batch_size, c.vision.in_chans, c.vision.image_size, c.vision.image_size, generator=gen
    )
    batch = tokenizer.encode([captions[i % len(captions)] for i in range(batch_size)])
    start = time.perf_counter()
    out_ = net(images, batch.input_ids, batch.attention_mask)
    loss = mumo.clip_loss(out_.image_embeds, out_.text_embeds, out_.logit_scale)
    loss.backward()
    elapsed = time.perf_counter() - start
    params = sum(p.numel() for p in net.parameters())
    console.print(f"model {model}: {params / 1e6:.2f} M parameters")
    console.print(
        f"image embeddings {tuple(out_.image_embeds.shape)}, text embeddings {tuple(out_.text_embeds.shape)}"
    )
    console.print(
        f"logits per image {tuple(out_.logits_per_image.shape)}, "
        f"temperature {1 / out_.logit_scale.item():.4f}"
    )
    console.print(
        f"contrastive loss {loss.item():.4f} (chance level ln {batch_size} = {math.log(batch_size):.4f})"
    )
    console.print(f"forward + backward in {elapsed * 1000:.0f} ms")
    if out is not None:
        mumo.save_pretrained(net, out, tokenizer=tokenizer)
        console.print(f"saved to {out}")


def main() -> None:
    """Entry point of the ``mumo`` console script."""
    try:
        app(standalone_mode=False)
    except MumoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
