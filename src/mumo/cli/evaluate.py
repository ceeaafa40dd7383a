"""`mumo eval`, `zero-shot`, `embed`, `probe` and `interpolate`: measure and use a trained dual encoder.
The commands parse and check their arguments (outputs before the model loads), call :mod:`mumo.inference`
/ :mod:`mumo.eval`, and print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from mumo.cli._output import check_output, console, print_metrics, print_table, progress_bar
from mumo.cli.generate import Precision
from mumo.errors import ConfigError, DataError

if TYPE_CHECKING:
    from torch import Tensor


def eval_(
    checkpoint: Path = typer.Argument(..., help="model folder, run folder or training checkpoint"),
    data: str = typer.Option("shapes", help="'shapes', or a CSV/JSONL file of image-caption pairs"),
    split: str = typer.Option("test", help="shapes split: val or test"),
    size: int = typer.Option(1000, min=2, help="shapes scenes to evaluate"),
    seed: int = typer.Option(0, help="shapes data seed"),
    out: Path | None = typer.Option(None, help="write the metrics as JSON here"),
    scoring: str = typer.Option("auto", help="itc (embeddings), itm (matching head) or auto"),
    questions: bool = typer.Option(False, "--questions", help="captioners: VQA exact match, not captions"),
    meteor: bool | None = typer.Option(
        None, "--meteor/--no-meteor", help="captions: METEOR (runs Java); default: when Java is installed"
    ),
    precision: Precision | None = typer.Option(
        None, "--precision", help="evaluate it frozen at fp32, bf16 or int8 (as `mumo caption` runs it)"
    ),
) -> None:
    """Evaluate a checkpoint: zero-shot, retrieval and the compositional probe (shapes), captions or VQA
    answers of a captioner, or retrieval on image-caption pairs (an image listed on several rows, one per
    caption, is one gallery item; a caption finds its image, an image any of its captions)."""
    from mumo.inference import load

    check_output(out)
    pairs = None
    if data != "shapes":
        from mumo.data.pairs import PairsDataset

        pairs = PairsDataset(data)  # a malformed file fails here, before the model loads
    model, tokenizer = load(checkpoint)
    if precision is not None:
        from mumo.inference import freeze

        freeze(model, precision.value)
    if pairs is None:
        from mumo.data.shapes import ShapesConfig
        from mumo.run.evaluate import evaluate_on_shapes

        config = ShapesConfig(image_size=model.image_size, seed=seed)
        with progress_bar("evaluating") as update:
            metrics = evaluate_on_shapes(
                model, tokenizer, config, split, size, questions, scoring, meteor=meteor, progress=update
            )
        print_metrics(metrics)
    else:
        from mumo.models import capabilities

        if "embed" not in capabilities(model):
            raise typer.BadParameter(f"{type(model).__name__} has no embeddings; evaluate it on shapes")
        from mumo.eval.pairs_retrieval import pairs_retrieval
        from mumo.inference import image_transform

        metrics, skipped = pairs_retrieval(model, tokenizer, pairs, image_transform(model))
        for s in skipped:
            print(f"skipped {s.path} ({s.reason})")
        console.print_json(json.dumps(metrics))
    if out is not None:
        out.write_text(json.dumps(metrics, indent=2) + "\n")


def zero_shot(
    checkpoint: Path = typer.Argument(..., help="model folder or run folder"),
    image: Path = typer.Argument(..., help="an image file"),
    labels: str = typer.Option(..., help='comma-separated labels, e.g. "a red circle,a blue star"'),
    template: list[str] = typer.Option(
        None, "--template", help="wrap each label, e.g. 'a photo of a {}.'; repeat to average several"
    ),
) -> None:
    """Classify one image among free-text labels; prints each label's probability. The labels are used as
    typed and scored at the model's own temperature: the numbers the server's /zero-shot gives."""
    from mumo.data.pairs import load_rgb
    from mumo.inference import embed_images, image_transform, load, zero_shot_probs
    from mumo.models import capabilities

    names = [x.strip() for x in labels.split(",") if x.strip()]
    if len(names) < 2:
        raise DataError("give at least two comma-separated labels, e.g. --labels 'a red circle,a blue star'")
    picture = load_rgb(image)  # before the model loads: a wrong path costs no wait
    if isinstance(picture, str):
        raise DataError(f"cannot read {image}: {picture}")
    model, tokenizer = load(checkpoint)
    if "embed" not in capabilities(model):
        raise DataError(f"{checkpoint} holds a {type(model).__name__}, which has no image-text embeddings")
    image_embeds = embed_images(model, image_transform(model)(picture)[None])  # (1, E)
    probs = zero_shot_probs(model, tokenizer, image_embeds, names, tuple(template or ("{}",)))[0]
    for name, p in sorted(zip(names, probs.tolist(), strict=True), key=lambda x: -x[1]):
        print(f"{p:6.3f}  {name}")


_EMBEDDING_SUFFIXES = (".safetensors", ".jsonl")


def embed(
    checkpoint: Path = typer.Argument(..., help="model folder or run folder"),
    images: Path | None = typer.Option(None, help="embed every image in this folder"),
    texts: Path | None = typer.Option(None, help="embed every line of this text file"),
    out: Path = typer.Option(..., help="output: .safetensors (embeddings + names) or .jsonl"),
    batch_size: int = typer.Option(256, min=1),
) -> None:
    """Embed a folder of images or a file of texts into unit vectors."""
    from mumo.inference import embed_image_files, embed_texts, image_transform, images_under, load

    if (images is None) == (texts is None):
        raise DataError("give exactly one of --images DIR or --texts FILE")
    check_output(out, suffixes=_EMBEDDING_SUFFIXES)
    # the inputs are listed and read before the model loads: a mistake costs no wait
    if images is not None:
        files = images_under(images)
    else:
        if not texts.is_file():
            raise DataError(f"{texts} is not a file")
        try:
            names = [line for line in texts.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            raise DataError(f"{texts} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    model, tokenizer = load(checkpoint)
    if images is not None:
        transform = image_transform(model)
        with progress_bar("embedding") as update:
            vectors, kept, skipped = embed_image_files(
                model, files, transform, batch_size=batch_size, progress=update
            )
        names = [str(p) for p in kept]
        for s in skipped:
            print(f"skipped {s.path} ({s.reason})")
    else:
        vectors = embed_texts(model, tokenizer, names, batch_size=batch_size)
        cut = tokenizer.total_truncated  # a tokenizer just loaded: the cuts of these texts
        if cut:
            console.print(f"[yellow]{cut} of {len(names)} texts cut to {tokenizer.context_length} tokens")
    _write_embeddings(out, vectors, names)
    console.print(f"wrote {len(names)} embeddings of width {vectors.shape[1]} to {out}")


def _write_embeddings(out: Path, vectors: Tensor, names: list[str]) -> None:
    """Embeddings (N, E) and their N names as ``.jsonl`` (one object a line) or ``.safetensors``."""
    if out.suffix == ".jsonl":
        with open(out, "w") as f:
            for name, v in zip(names, vectors.tolist(), strict=True):
                f.write(json.dumps({"name": name, "embedding": v}) + "\n")
    elif out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"embeddings": vectors.contiguous()}, str(out), metadata={"names": json.dumps(names)})
    else:
        raise DataError(f"--out must end in {' or '.join(_EMBEDDING_SUFFIXES)}, got {out.name}")


def _labelled_splits(
    data: str, image_size: int, seed: int, splits: tuple[str, ...] = ("train", "val", "test")
) -> list[tuple[Any, ...]]:
    """The (images, labels) tensors of ``splits`` of ``--data`` (images read once, without augmentation)."""
    from mumo.data.config import labelled_data_config
    from mumo.data.sources import data_source
    from mumo.eval.classify import labelled_tensors

    source = data_source(labelled_data_config(data, image_size, seed))
    mean, std = source.normalization or (None, None)
    return [labelled_tensors(source.split(split, augment=False), mean, std) for split in splits]


_DATA_HELP = "'digits' (scikit-learn's handwritten scans) or an image folder ROOT/<class>/<image>"


def probe(
    checkpoint: Path = typer.Argument(..., help="model or run folder"),
    data: str = typer.Option("digits", help=_DATA_HELP),
    seed: int = typer.Option(0, help="the stratified train / val / test split"),
    out: Path | None = typer.Option(None, help="write the result as JSON here"),
) -> None:
    """Linear probe: logistic regression on the frozen image embeddings, L2 chosen on the val split."""
    from mumo.eval.linear_probe import probe_images
    from mumo.inference import load

    check_output(out)
    model, _ = load(checkpoint)
    train, val, test = _labelled_splits(data, model.image_size, seed)
    with progress_bar("probing") as update:
        result = probe_images(model, train, test, val=val, progress=update)
    console.print(
        f"linear probe on {data}: test accuracy {100 * result.accuracy:.1f} % "
        f"({len(test[1])} images; l2 {result.l2:g} chosen on {len(val[1])})"
    )
    if out is not None:
        out.write_text(json.dumps({"data": data, "seed": seed, **result.to_dict()}, indent=2))


def interpolate(
    pretrained: Path = typer.Argument(..., help="the model before fine-tuning (model or run folder)"),
    finetuned: Path = typer.Argument(..., help="its fine-tuned copy (same architecture, or a classifier)"),
    out: Path | None = typer.Option(None, help="folder for the model mixed at --alpha"),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="0: the pretrained model, 1: the fine-tuned one"),
    sweep: str | None = typer.Option(
        None, help="instead: evaluate the mix at these alphas ('0,0.25,0.5,0.75,1') on --data and shapes"
    ),
    data: str = typer.Option("digits", help=f"the sweep's target task: {_DATA_HELP}"),
    seed: int = typer.Option(0, help="the target data's split"),
    size: int = typer.Option(1000, min=2, help="the sweep's zero-shot test scenes of the built-in data"),
    report: Path | None = typer.Option(None, help="write the sweep table as JSON here"),
) -> None:
    """Weight-space ensemble (WiSE-FT): (1 - alpha) * PRETRAINED + alpha * FINETUNED, with FINETUNED's
    tokenizer. A fine-tuned classifier mixes with its zero-shot start (PRETRAINED plus the head its class
    prompts give). With --sweep, print target accuracy and built-in zero-shot accuracy per alpha."""
    if (out is None) == (sweep is None):
        raise ConfigError("give either --out DIR (one mix at --alpha) or --sweep ALPHAS (an evaluation)")
    # every argument is checked before the two models load
    check_output(out, folder=True)
    check_output(report, "--report")
    parts = [a.strip() for a in (sweep or "").split(",") if a.strip()]
    if sweep is not None and not parts:
        raise ConfigError(f"--sweep needs at least one alpha in [0, 1], e.g. '0,0.5,1'; got {sweep!r}")
    try:
        alphas = [float(a) for a in parts]
    except ValueError:
        alphas = [-1.0]  # reported below, with the others outside [0, 1]
    if not all(0.0 <= a <= 1.0 for a in alphas):  # NaN fails this too
        raise ConfigError(f"--sweep takes comma-separated numbers in [0, 1], got {sweep!r}")

    from mumo.eval.wise_ft import target_and_zero_shot, wise_ft_sweep
    from mumo.inference import load
    from mumo.models import capabilities, save_pretrained
    from mumo.models.interpolate import interpolate_models
    from mumo.run.heads import zero_shot_start

    pre, _ = load(pretrained)
    tuned, tokenizer = load(finetuned)
    classifier = "classify" in capabilities(tuned)
    if classifier and pre.config.model_type == "clip":  # the classifier's start: CLIP + zero-shot head
        pre = zero_shot_start(pre, tuned, tokenizer)
    if out is not None:
        save_pretrained(interpolate_models(pre, tuned, alpha), out, tokenizer)
        console.print(f"wrote {out} (alpha {alpha:g})")
        return
    if not classifier:
        raise ConfigError(
            "--sweep evaluates a fine-tuned classifier (a run of `mumo finetune` on labelled data)"
        )
    (test,) = _labelled_splits(data, tuned.image_size, seed, ("test",))
    evaluate = target_and_zero_shot(tokenizer, test, size)
    with progress_bar("sweeping") as update:
        done = iter(range(1, len(alphas) + 1))  # the sweep reports each alpha as it is evaluated
        rows = wise_ft_sweep(pre, tuned, alphas, evaluate, lambda *_: update(next(done), len(alphas)))
    print_table(
        ("alpha", f"{data} test accuracy", "built-in zero-shot accuracy"),
        [(f"{r['alpha']:g}", f"{100 * r['target']:.1f} %", f"{100 * r['zero_shot']:.1f} %") for r in rows],
    )
    if report is not None:
        report.write_text(json.dumps({"data": data, "seed": seed, "rows": rows}, indent=2))
