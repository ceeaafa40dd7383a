"""`mumo index`, `search` and `serve`: a FAISS index of a folder of images, text search over it, and the
HTTP server. The commands parse arguments, call :mod:`mumo.serve`, and print."""

from __future__ import annotations

from pathlib import Path

import typer

from mumo.cli._output import console, progress_bar
from mumo.cli.generate import PRECISION, Precision
from mumo.errors import DataError


def index(
    checkpoint: Path = typer.Argument(..., help="dual encoder: model folder or run folder"),
    images: Path = typer.Argument(..., help="folder of images (searched recursively)"),
    out: Path = typer.Option(..., help="index folder; an existing one is brought up to date"),
    batch_size: int = typer.Option(64, min=1, help="images per forward pass"),
    ivf_threshold: int = typer.Option(50_000, min=1, help="vectors from which search is IVF, not exact"),
) -> None:
    """Embed every image of a folder into a FAISS index for `mumo search`; again later, embed only new or
    changed files (an interrupted run resumes). Unreadable files are skipped and listed."""
    from mumo.inference import load
    from mumo.models import capabilities
    from mumo.models._pretrained import model_folder
    from mumo.serve.index import update_index

    model, _ = load(checkpoint)
    if "embed" not in capabilities(model):
        raise DataError(f"{checkpoint} holds a {type(model).__name__}, which has no image embeddings")
    with progress_bar("embedding") as update:
        result = update_index(
            model,
            model_folder(checkpoint),
            images,
            out,
            batch_size=batch_size,
            ivf_threshold=ivf_threshold,
            progress=update,
        )
    for s in result["skipped"]:
        console.print(f"[yellow]skipped {s['path']} ({s['reason']})")
    console.print(
        f"{out}: {result['count']} images ({result['kind']} search): {result['embedded']} embedded, "
        f"{result['kept']} kept, {result['removed']} removed, {len(result['skipped'])} skipped"
    )


def search(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="index folder written by `mumo index`"),
    query: str = typer.Argument(..., help='text, e.g. "a red star above a blue circle"'),
    k: int = typer.Option(10, "-k", min=1, help="results"),
    checkpoint: Path | None = typer.Option(None, help="model to embed the query (default: the index's)"),
) -> None:
    """Print the images of an index that best match a text, best first, with their cosine similarity."""
    from mumo.inference import load
    from mumo.models._pretrained import model_folder
    from mumo.serve.index import ImageIndex, check_model

    found = ImageIndex(index_dir)
    model_dir = model_folder(checkpoint or Path(found.meta["model"]))
    check_model(found.meta, model_dir, index_dir)
    model, tokenizer = load(model_dir)
    for hit in found.search(model, tokenizer, [query], k=k)[0]:
        print(f"{hit.score:.4f}  {hit.file}")


def serve(
    checkpoint: Path = typer.Argument(..., help="model folder or run folder"),
    index_dir: Path | None = typer.Option(
        None, "--index", help="index folder for /search (from `mumo index`)"
    ),
    host: str = typer.Option("127.0.0.1", help="address to listen on (default: this machine only)"),
    port: int = typer.Option(8000, min=1, max=65535),
    max_batch: int = typer.Option(32, min=1, help="most items per forward pass of the batching engine"),
    max_body_mb: float = typer.Option(16.0, min=0.001, help="largest request body, MiB"),
    allow_host: list[str] = typer.Option(
        None,
        "--allow-host",
        help="another name this server answers to (Host header, page Origin), e.g. a proxy's; repeatable",
    ),
    precision: Precision = PRECISION,
) -> None:
    """Serve the model over HTTP with a web page at / (search, zero-shot labels, captions) and OpenAPI docs
    at /docs. There is no authentication: keep the default loopback address unless a proxy guards it. It
    answers only to 127.0.0.1, localhost, ::1, the --host address and --allow-host names (others: 421), and
    refuses POSTs from other sites' pages (403)."""
    from mumo.inference import freeze, load
    from mumo.models._pretrained import model_folder
    from mumo.serve.app import Limits, create_app, run_server
    from mumo.serve.budget import return_large_blocks_to_the_os
    from mumo.serve.engine import Engine
    from mumo.serve.index import ImageIndex, check_model

    model, tokenizer = load(checkpoint)
    found = None
    if index_dir is not None:
        found = ImageIndex(index_dir)
        check_model(found.meta, model_folder(checkpoint), index_dir)
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(
            f"[yellow]listening on {host}: anyone who can reach it can use this server (under the names "
            "127.0.0.1, localhost, ::1, the --host address and those given with --allow-host)"
        )
    return_large_blocks_to_the_os()  # decoded uploads' memory goes back as the pixel budget frees it
    engine = Engine(freeze(model, precision.value), tokenizer, max_batch=max_batch)
    limits = Limits(max_body_bytes=int(max_body_mb * 2**20))
    console.print(f"serving {type(model).__name__} on http://{host}:{port}/ (API docs: /docs)")
    try:
        asgi = create_app(engine, found, limits, allowed_hosts=[host, *(allow_host or [])])
        run_server(asgi, host, port)
    finally:
        engine.close()
