"""`mumo <verb>`: a thin command line over the public API. Library errors become one line and exit 2."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import click
import torch
import typer
from rich.console import Console
from rich.table import Table

import mumo
from mumo.errors import ConfigError, DataError, MumoError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="mumo: vision-language models in PyTorch.")
data_app = typer.Typer(no_args_is_help=True, help="Generate or convert data sets.")
app.add_typer(data_app, name="data")
console = Console()



def _num_params(name: str) -> int:
    with torch.device("meta"):  # counts without allocating weights
        model = mumo.create_model(name)
    return sum(p.numel() for p in model.parameters())


def _load(checkpoint: Path) -> tuple[torch.nn.Module, mumo.Tokenizer]:
    """A model and its tokenizer from a model folder, a run folder (its final/) or a training checkpoint."""
    from mumo.interop.convert import load_tokenizer
    from mumo.models._pretrained import model_folder

    checkpoint = model_folder(checkpoint)

    model = mumo.load_pretrained(checkpoint).eval()
    return model, load_tokenizer(checkpoint, context_length=model.context_length)


@app.command()
def version() -> None:
    """Print the mumo version."""
    print(mumo.__version__)


def _describe(config: object) -> tuple[str, str]:
    """(image size, a one-line shape summary) of any registered architecture's config."""
    model_type = getattr(config, "model_type", "?")
    if model_type == "fusion":
        size, towers = _describe(config.clip)
        return size, f"{towers} + fusion d{config.fusion_depth}"
    if model_type == "captioner":
        text = f"decoder w{config.text.embed_dim} d{config.text.depth}+{config.decoder_depth}"
        if config.vision is None:
            return "-", f"{text} (text only)"
        itc = " + ITC" if config.contrastive else ""
        return f"{config.vision.image_size}px", f"{_vision(config.vision)} | {text}{itc}"
    if model_type == "single_stream":
        return (
            f"{config.image_size}px",
            f"one stream w{config.embed_dim} d{config.depth} p{config.patch_size}",
        )
    v, t = config.vision, config.text
    return f"{v.image_size}px", f"{_vision(v)} | text w{t.embed_dim} d{t.depth}"


def _vision(v: object) -> str:
    """One-line shape of an image tower config."""
    return f"{v.kind} w{v.embed_dim} d{v.depth}" + (f" p{v.patch_size}" if v.kind == "vit" else "")


@app.command()
def models(pattern: str = typer.Argument("*", help="shell-style filter, e.g. 'clip_vit_*'")) -> None:
    """List registered models with their parameter counts."""
    table = Table("model", "type", "parameters", "image", "shape")
    for name in mumo.list_models(pattern):
        config = mumo.get_model_config(name)
        size, shape = _describe(config)
        table.add_row(name, config.model_type, f"{_num_params(name) / 1e6:.2f} M", size, shape)
    console.print(table)


app.command("list-models", help="List registered models (same as `mumo models`).")(models)


@app.command()
def info(model: str = typer.Argument(..., help="registered name or config.json path")) -> None:
    """Print a model's config as JSON and its parameter count."""
    config = mumo.get_model_config(model)
    print(json.dumps(config.to_dict(), indent=2))
    console.print(f"parameters: {_num_params(model):,}")


@data_app.command("shapes")
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


@data_app.command("shard")
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

    from mumo.data.shards import shard_source, write_shards

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


@app.command(context_settings={"allow_extra_args": False})
def train(
    recipe: Path = typer.Argument(..., help="YAML recipe, e.g. configs/demo.yaml"),
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
    from mumo.train import load_recipe

    if nproc > 1:
        import subprocess

        from mumo.train.distributed import torchrun_command

        load_recipe(recipe, overrides or [])  # a bad recipe fails here, once, not in every process
        flags = [f for f, on in (("--resume", resume), ("--overwrite", overwrite)) if on]
        args = ["train", str(recipe), *(overrides or []), *flags]
        raise typer.Exit(subprocess.call(torchrun_command(nproc, args)))

    _fit(load_recipe(recipe, overrides or []), resume, overwrite)


def _fit(
    config: mumo.train.TrainConfig, resume: bool, overwrite: bool, show_trainable: bool = False
) -> None:
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
        _print_eval(results.get("eval", {}))
        console.print(f"model saved to {results['final']}")


@app.command(context_settings={"allow_extra_args": False})
def finetune(
    recipe: Path = typer.Argument(..., help="YAML recipe, e.g. configs/finetune/digits.yaml"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. finetune.lora_rank=8"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest valid checkpoint"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="replace the run out_dir holds (its checkpoints and outputs are deleted)"
    ),
) -> None:
    """Adapt a pretrained model (the recipe's init_from): classifier fine-tuning on labelled images, locked
    towers (LiT), LoRA, layer-wise lr decay; the same trainer, checkpoints and outputs as `mumo train`."""
    from mumo.train import load_recipe

    config = load_recipe(recipe, overrides or [])
    if config.init_from is None:
        raise ConfigError(f"{recipe}: fine-tuning starts from a pretrained model; set init_from=MODEL_OR_RUN")
    _fit(config, resume, overwrite, show_trainable=True)


def _print_eval(metrics: dict) -> None:
    """The end-of-run metrics as a table: whichever of retrieval, captioning, VQA and perplexity exist."""
    if not metrics:
        return
    table = Table("metric", "value")
    if "zero_shot" in metrics:
        zs, ho, rt = metrics["zero_shot"], metrics["held_out"], metrics["retrieval"]
        table.add_row("zero-shot colour x shape top-1", f"{100 * zs['top1']:.1f} %")
        table.add_row("held-out combinations top-1", f"{100 * ho['top1']:.1f} %")
        if "zero_shot_paraphrased" in metrics:
            para = metrics["zero_shot_paraphrased"]
            detail = f"(colour {100 * para['colour']:.1f} %, shape {100 * para['shape']:.1f} %)"
            table.add_row("zero-shot, paraphrased class names", f"{100 * para['top1']:.1f} % {detail}")
        table.add_row(f"text->image R@1 ({rt['n']} pairs)", f"{100 * rt['text_to_image_R@1']:.1f} %")
        table.add_row(f"image->text R@1 ({rt['n']} pairs)", f"{100 * rt['image_to_text_R@1']:.1f} %")
        for k, v in metrics["compositional"].items():
            if not k.startswith("n_"):
                table.add_row(f"compositional: {k}", f"{100 * v:.1f} %")
    if "captioning" in metrics:
        cap = metrics["captioning"]
        table.add_row(f"captions: CIDEr-D ({cap['n']} images)", f"{cap['CIDEr-D']:.3f}")
        table.add_row("captions: BLEU-4", f"{cap['BLEU-4']:.3f}")
        table.add_row("captions: attribute accuracy", f"{100 * cap['attribute_accuracy']:.1f} %")
    if "vqa" in metrics:
        vqa = metrics["vqa"]
        table.add_row("VQA exact match (mean over kinds)", f"{100 * vqa['macro']:.1f} %")
        for k, v in vqa["per_kind"].items():
            table.add_row(f"VQA: {k} ({vqa['counts'][k]} questions)", f"{100 * v:.1f} %")
    if "perplexity" in metrics:
        table.add_row("held-out perplexity", f"{metrics['perplexity']:.2f}")
    for split in ("val", "test"):
        if f"{split}_accuracy" in metrics:
            table.add_row(f"{split} accuracy", f"{100 * metrics[f'{split}_accuracy']:.1f} %")
    console.print(table)


@app.command("eval")
def eval_(
    checkpoint: Path = typer.Argument(..., help="model folder, run folder or training checkpoint"),
    data: str = typer.Option("shapes", help="'shapes', or a CSV/JSONL file of image-caption pairs"),
    split: str = typer.Option("test", help="shapes split: val or test"),
    size: int = typer.Option(1000, min=2, help="shapes scenes to evaluate"),
    seed: int = typer.Option(0, help="shapes data seed"),
    out: Path | None = typer.Option(None, help="write the metrics as JSON here"),
    scoring: str = typer.Option("auto", help="itc (embeddings), itm (matching head) or auto"),
    questions: bool = typer.Option(False, "--questions", help="captioners: VQA exact match, not captions"),
) -> None:
    """Evaluate a checkpoint: zero-shot, retrieval and the compositional probe (shapes), captions or VQA
    answers of a captioner, or retrieval on image-caption pairs (an image listed on several rows, one per
    caption, is one gallery item; a caption finds its image, an image any of its captions)."""
    _check_out(out)
    pairs = None
    if data != "shapes":
        from mumo.data.pairs import PairsDataset

        pairs = PairsDataset(data)  # a malformed file fails here, before the model loads
    model, tokenizer = _load(checkpoint)
    if pairs is None:
        from mumo.data.shapes import ShapesConfig
        from mumo.eval.captioning import evaluate_captions, evaluate_vqa
        from mumo.eval.shapes_suite import evaluate_shapes
        from mumo.models import Captioner

        config = ShapesConfig(image_size=model.image_size, seed=seed)
        metrics = {}
        if isinstance(model, Captioner):
            if questions:
                metrics["vqa"] = evaluate_vqa(model, tokenizer, config, split=split, size=size)
            else:
                metrics["captioning"] = evaluate_captions(model, tokenizer, config, split=split, size=size)
        if not isinstance(model, Captioner) or (model.config.contrastive and not questions):
            shapes = evaluate_shapes(model, tokenizer, config, split=split, size=size, scoring=scoring)
            metrics.update(shapes.metrics)
        _print_eval(metrics)
    else:
        if not hasattr(model, "encode_image"):
            raise typer.BadParameter(f"{type(model).__name__} has no embeddings; evaluate it on shapes")
        from mumo.data.transforms import eval_transform
        from mumo.eval.pairs_retrieval import pairs_retrieval

        metrics, skipped = pairs_retrieval(model, tokenizer, pairs, eval_transform(model.image_size))
        for s in skipped:
            print(f"skipped {s.path} ({s.reason})")
        console.print_json(json.dumps(metrics))
    if out is not None:
        out.write_text(json.dumps(metrics, indent=2) + "\n")


@app.command("zero-shot")
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
    from mumo.data.transforms import eval_transform
    from mumo.eval import embed_images
    from mumo.eval.zero_shot import zero_shot_probs

    names = [x.strip() for x in labels.split(",") if x.strip()]
    if len(names) < 2:
        raise DataError("give at least two comma-separated labels, e.g. --labels 'a red circle,a blue star'")
    picture = load_rgb(image)  # before the model loads: a wrong path costs no wait
    if isinstance(picture, str):
        raise DataError(f"cannot read {image}: {picture}")
    model, tokenizer = _load(checkpoint)
    if not hasattr(model, "encode_image") or not hasattr(model, "encode_text"):
        raise DataError(f"{checkpoint} holds a {type(model).__name__}, which has no image-text embeddings")
    image_embeds = embed_images(model, eval_transform(model.image_size)(picture)[None])  # (1, E)
    probs = zero_shot_probs(model, tokenizer, image_embeds, names, tuple(template or ("{}",)))[0]
    for name, p in sorted(zip(names, probs.tolist(), strict=True), key=lambda x: -x[1]):
        print(f"{p:6.3f}  {name}")


# Decoding options shared by caption, ask and generate.
_MAX_NEW = typer.Option(32, "--max-new-tokens", min=1, help="most tokens to generate")
_BEAM = typer.Option(1, "--beam", min=1, help="beam search with this many beams (1: greedy)")
_LENGTH_PENALTY = typer.Option(1.0, "--length-penalty", help="beam: score / length ** this")
_SAMPLE = typer.Option(False, "--sample", help="sample instead of the most likely token")
_TEMPERATURE = typer.Option(1.0, "--temperature", min=1e-6, help="sampling temperature (implies --sample)")
_TOP_K = typer.Option(0, "--top-k", min=0, help="sample among the k most likely tokens (implies --sample)")
_TOP_P = typer.Option(1.0, "--top-p", min=1e-6, max=1.0, help="nucleus sampling mass (implies --sample)")
_REPETITION = typer.Option(1.0, "--repetition-penalty", min=1e-6, help="> 1 discourages repeats")
_SEED = typer.Option(0, "--seed", help="seed of sampling")


def _generation_config(
    max_new: int, beam: int, length_penalty: float, sample: bool, temperature: float, top_k: int,
    top_p: float, repetition: float, seed: int,
) -> object:  # fmt: skip
    from mumo.generation import GenerationConfig

    do_sample = sample or temperature != 1.0 or top_k > 0 or top_p < 1.0
    return GenerationConfig(
        max_new_tokens=max_new,
        num_beams=beam,
        length_penalty=length_penalty,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition,
        seed=seed,
    )


def _load_images(paths: list[Path], image_size: int) -> torch.Tensor:
    from mumo.data.pairs import load_rgb
    from mumo.data.transforms import eval_transform

    transform, out = eval_transform(image_size), []
    for path in paths:
        picture = load_rgb(path)
        if isinstance(picture, str):
            raise DataError(f"cannot read {path}: {picture}")
        out.append(transform(picture))
    return torch.stack(out)


def _load_captioner(checkpoint: Path, needs_images: bool) -> tuple[torch.nn.Module, mumo.Tokenizer]:
    from mumo.models import Captioner

    model, tokenizer = _load(checkpoint)
    if not isinstance(model, Captioner):
        raise DataError(f"{checkpoint} holds a {type(model).__name__}, which does not generate text")
    if needs_images and model.visual is None:
        raise DataError(f"{checkpoint} is a text-only model; use `mumo generate` with --prompt")
    if not needs_images and model.visual is not None:
        raise DataError(f"{checkpoint} is an image captioner; use `mumo caption` or `mumo ask`")
    return model, tokenizer


@app.command()
def caption(
    checkpoint: Path = typer.Argument(..., help="captioner or CoCa model folder or run folder"),
    images: list[Path] = typer.Argument(..., help="image files"),
    max_new_tokens: int = _MAX_NEW,
    beam: int = _BEAM,
    length_penalty: float = _LENGTH_PENALTY,
    sample: bool = _SAMPLE,
    temperature: float = _TEMPERATURE,
    top_k: int = _TOP_K,
    top_p: float = _TOP_P,
    repetition_penalty: float = _REPETITION,
    seed: int = _SEED,
) -> None:
    """Caption images: one line per image, "path<TAB>caption"."""
    from mumo.generation import caption_images

    model, tokenizer = _load_captioner(checkpoint, needs_images=True)
    config = _generation_config(
        max_new_tokens, beam, length_penalty, sample, temperature, top_k, top_p, repetition_penalty, seed
    )
    pixels = _load_images(images, model.image_size)
    for path, text in zip(images, caption_images(model, tokenizer, pixels, config), strict=True):
        print(f"{path}\t{text}")


@app.command()
def ask(
    checkpoint: Path = typer.Argument(..., help="a captioner fine-tuned on questions (run or model folder)"),
    image: Path = typer.Argument(..., help="an image file"),
    question: str = typer.Argument(..., help='e.g. "what colour is the star?"'),
    max_new_tokens: int = typer.Option(8, "--max-new-tokens", min=1, help="most answer tokens"),
    beam: int = _BEAM,
) -> None:
    """Answer a question about an image (visual question answering as generation)."""
    from mumo.generation import GenerationConfig, answer_questions

    model, tokenizer = _load_captioner(checkpoint, needs_images=True)
    pixels = _load_images([image], model.image_size)
    config = GenerationConfig(max_new_tokens=max_new_tokens, num_beams=beam)
    print(answer_questions(model, tokenizer, pixels, [0], [question.strip()], config)[0])


@app.command()
def generate(
    checkpoint: Path = typer.Argument(..., help="a text-only model (GPT) folder or run folder"),
    prompt: list[str] = typer.Option(..., "--prompt", help="text to continue (repeat for a batch)"),
    max_new_tokens: int = _MAX_NEW,
    beam: int = _BEAM,
    length_penalty: float = _LENGTH_PENALTY,
    sample: bool = _SAMPLE,
    temperature: float = _TEMPERATURE,
    top_k: int = _TOP_K,
    top_p: float = _TOP_P,
    repetition_penalty: float = _REPETITION,
    seed: int = _SEED,
) -> None:
    """Continue text prompts with a text-only model; prints each prompt followed by its continuation."""
    from mumo.generation import complete_text

    model, tokenizer = _load_captioner(checkpoint, needs_images=False)
    config = _generation_config(
        max_new_tokens, beam, length_penalty, sample, temperature, top_k, top_p, repetition_penalty, seed
    )
    for text, more in zip(prompt, complete_text(model, tokenizer, prompt, config), strict=True):
        print(text + more)


@app.command()
def embed(
    checkpoint: Path = typer.Argument(..., help="model folder or run folder"),
    images: Path | None = typer.Option(None, help="embed every image in this folder"),
    texts: Path | None = typer.Option(None, help="embed every line of this text file"),
    out: Path = typer.Option(..., help="output: .safetensors (embeddings + names) or .jsonl"),
    batch_size: int = typer.Option(256, min=1),
) -> None:
    """Embed a folder of images or a file of texts into unit vectors."""
    from mumo.data.transforms import eval_transform
    from mumo.eval import embed_image_files, embed_texts, images_under

    if (images is None) == (texts is None):
        raise DataError("give exactly one of --images DIR or --texts FILE")
    _check_out(out, suffixes=_EMBEDDING_SUFFIXES)
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
    model, tokenizer = _load(checkpoint)
    if images is not None:
        transform = eval_transform(model.image_size)
        vectors, kept, skipped = embed_image_files(model, files, transform, batch_size=batch_size)
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


@app.command()
def index(
    checkpoint: Path = typer.Argument(..., help="dual encoder: model folder or run folder"),
    images: Path = typer.Argument(..., help="folder of images (searched recursively)"),
    out: Path = typer.Option(..., help="index folder; an existing one is brought up to date"),
    batch_size: int = typer.Option(64, min=1, help="images per forward pass"),
    ivf_threshold: int = typer.Option(50_000, min=1, help="vectors from which search is IVF, not exact"),
) -> None:
    """Embed every image of a folder into a FAISS index for `mumo search`; again later, embed only new or
    changed files (an interrupted run resumes). Unreadable files are skipped and listed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mumo.models._pretrained import model_folder
    from mumo.serve.index import update_index

    model, _ = _load(checkpoint)
    if not hasattr(model, "encode_image"):
        raise DataError(f"{checkpoint} holds a {type(model).__name__}, which has no image embeddings")
    columns = [TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("embed", total=None)
        result = update_index(
            model,
            model_folder(checkpoint),
            images,
            out,
            batch_size=batch_size,
            ivf_threshold=ivf_threshold,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    for s in result["skipped"]:
        console.print(f"[yellow]skipped {s['path']} ({s['reason']})")
    console.print(
        f"{out}: {result['count']} images ({result['kind']} search): {result['embedded']} embedded, "
        f"{result['kept']} kept, {result['removed']} removed, {len(result['skipped'])} skipped"
    )


@app.command()
def search(
    index_dir: Path = typer.Argument(..., metavar="INDEX", help="index folder written by `mumo index`"),
    query: str = typer.Argument(..., help='text, e.g. "a red star above a blue circle"'),
    k: int = typer.Option(10, "-k", min=1, help="results"),
    checkpoint: Path | None = typer.Option(None, help="model to embed the query (default: the index's)"),
) -> None:
    """Print the images of an index that best match a text, best first, with their cosine similarity."""
    from mumo.models._pretrained import model_folder
    from mumo.serve.index import ImageIndex, check_model

    found = ImageIndex(index_dir)
    model_dir = model_folder(checkpoint or Path(found.meta["model"]))
    check_model(found.meta, model_dir, index_dir)
    model, tokenizer = _load(model_dir)
    for hit in found.search(model, tokenizer, [query], k=k)[0]:
        print(f"{hit.score:.4f}  {hit.file}")


@app.command()
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
) -> None:
    """Serve the model over HTTP with a web page at / (search, zero-shot labels, captions) and OpenAPI docs
    at /docs. There is no authentication: keep the default loopback address unless a proxy guards it. It
    answers only to 127.0.0.1, localhost, ::1, the --host address and --allow-host names (others: 421), and
    refuses POSTs from other sites' pages (403)."""
    import uvicorn

    from mumo.models._pretrained import model_folder
    from mumo.serve.app import Limits, create_app
    from mumo.serve.budget import return_large_blocks_to_the_os
    from mumo.serve.engine import Engine
    from mumo.serve.index import ImageIndex, check_model

    model, tokenizer = _load(checkpoint)
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
    engine = Engine(model, tokenizer, max_batch=max_batch)
    limits = Limits(max_body_bytes=int(max_body_mb * 2**20))
    console.print(f"serving {type(model).__name__} on http://{host}:{port}/ (API docs: /docs)")
    try:
        asgi = create_app(engine, found, limits, allowed_hosts=[host, *(allow_host or [])])
        uvicorn.run(asgi, host=host, port=port, log_level="warning")
    finally:
        engine.close()


_EMBEDDING_SUFFIXES = (".safetensors", ".jsonl")


def _check_out(
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


def _write_embeddings(out: Path, vectors: torch.Tensor, names: list[str]) -> None:
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


@app.command()
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
    from mumo.report import write_report
    from mumo.run.recipes import recipe_path
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
    _print_eval(results.get("eval", {}))
    console.print(f"report: {report}   model: {results['final']}   time: {time.perf_counter() - start:.0f} s")


@app.command()
def convert(
    src: Path = typer.Argument(..., help="source: a model folder, or an OpenCLIP weights file"),
    dst: Path = typer.Argument(..., help="target folder"),
    from_: str = typer.Option(..., "--from", help="mumo, open_clip or hf"),
    to: str = typer.Option(..., "--to", help="mumo, hf or onnx"),
    config: Path | None = typer.Option(None, help="OpenCLIP model config, when SRC is a weights file"),
) -> None:
    """Convert a CLIP model between mumo, OpenCLIP, Hugging Face and ONNX (outputs are checked to match)."""
    from mumo.interop.convert import convert as run

    console.print(f"wrote {run(src, dst, from_, to, config)}")


def _labelled_splits(
    data: str, image_size: int, seed: int, splits: tuple[str, ...] = ("train", "val", "test")
) -> list[tuple]:
    """The (images, labels) tensors of ``splits`` of ``--data`` (images read once, without augmentation)."""
    from mumo.eval.classify import labelled_tensors
    from mumo.train.data import labelled_data, labelled_split

    config = labelled_data(data, image_size, seed)
    return [labelled_tensors(*labelled_split(config, split, augment=False)) for split in splits]


_DATA_HELP = "'digits' (scikit-learn's handwritten scans) or an image folder ROOT/<class>/<image>"


@app.command()
def probe(
    checkpoint: Path = typer.Argument(..., help="model or run folder"),
    data: str = typer.Option("digits", help=_DATA_HELP),
    seed: int = typer.Option(0, help="the stratified train / val / test split"),
    out: Path | None = typer.Option(None, help="write the result as JSON here"),
) -> None:
    """Linear probe: logistic regression on the frozen image embeddings, L2 chosen on the val split."""
    from mumo.eval.linear_probe import probe_images

    _check_out(out)
    model, _ = _load(checkpoint)
    train, val, test = _labelled_splits(data, model.image_size, seed)
    result = probe_images(model, train, test, val=val)
    console.print(
        f"linear probe on {data}: test accuracy {100 * result.accuracy:.1f} % "
        f"({len(test[1])} images; l2 {result.l2:g} chosen on {len(val[1])})"
    )
    if out is not None:
        out.write_text(json.dumps({"data": data, "seed": seed, **result.to_dict()}, indent=2))


@app.command()
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
    from mumo.eval.wise_ft import target_and_zero_shot, wise_ft_sweep
    from mumo.models import CLIP, ImageClassifier
    from mumo.models.interpolate import interpolate_models
    from mumo.run.heads import zero_shot_start

    if (out is None) == (sweep is None):
        raise ConfigError("give either --out DIR (one mix at --alpha) or --sweep ALPHAS (an evaluation)")
    # every argument is checked before the two models load
    _check_out(out, folder=True)
    _check_out(report, "--report")
    parts = [a.strip() for a in (sweep or "").split(",") if a.strip()]
    if sweep is not None and not parts:
        raise ConfigError(f"--sweep needs at least one alpha in [0, 1], e.g. '0,0.5,1'; got {sweep!r}")
    try:
        alphas = [float(a) for a in parts]
    except ValueError:
        alphas = [-1.0]  # reported below, with the others outside [0, 1]
    if not all(0.0 <= a <= 1.0 for a in alphas):  # NaN fails this too
        raise ConfigError(f"--sweep takes comma-separated numbers in [0, 1], got {sweep!r}")
    pre, _ = _load(pretrained)
    tuned, tokenizer = _load(finetuned)
    if isinstance(tuned, ImageClassifier) and isinstance(pre, CLIP):
        pre = zero_shot_start(pre, tuned, tokenizer)
    if out is not None:
        mumo.save_pretrained(interpolate_models(pre, tuned, alpha), out, tokenizer)
        console.print(f"wrote {out} (alpha {alpha:g})")
        return
    if not isinstance(tuned, ImageClassifier):
        raise ConfigError(
            "--sweep evaluates a fine-tuned classifier (a run of `mumo finetune` on labelled data)"
        )
    (test,) = _labelled_splits(data, tuned.image_size, seed, ("test",))
    rows = wise_ft_sweep(pre, tuned, alphas, target_and_zero_shot(tokenizer, test, size))
    table = Table("alpha", f"{data} test accuracy", "built-in zero-shot accuracy")
    for row in rows:
        table.add_row(f"{row['alpha']:g}", f"{100 * row['target']:.1f} %", f"{100 * row['zero_shot']:.1f} %")
    console.print(table)
    if report is not None:
        report.write_text(json.dumps({"data": data, "seed": seed, "rows": rows}, indent=2))


@app.command()
def compare(
    recipes: list[Path] = typer.Argument(..., help="YAML recipes, e.g. configs/compare/*.yaml"),
    out: Path = typer.Option(Path("runs/compare"), help="runs go to OUT/<recipe name>, the table to OUT"),
    override: list[str] = typer.Option(None, "--set", help="key=value applied to every recipe (repeatable)"),
    size: int = typer.Option(1000, min=2, help="test scenes for zero-shot and the compositional probe"),
    retrieval_size: int = typer.Option(1000, min=2, help="retrieval gallery size"),
    rerank_k: int = typer.Option(16, min=1, help="ITC shortlist that ITM re-ranks"),
) -> None:
    """Train each recipe at the same budget (resumable) and write one comparison table."""
    from mumo.compare import compare as run_compare
    from mumo.compare import format_table

    rows = run_compare(
        recipes, out, override or [], size=size, retrieval_size=retrieval_size, rerank_k=rerank_k
    )
    console.print(format_table(rows))
    console.print(f"table written to {out / 'compare.md'}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run folder (with metrics.json)")) -> None:
    """Rebuild a run's report.html, report.md and plots from its saved metrics."""
    from mumo.report import write_report

    if not (run_dir / "metrics.json").is_file():
        raise DataError(f"{run_dir} has no metrics.json; is it a finished training run?")
    console.print(f"report: {write_report(run_dir)}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _usage_error(e: Exception) -> str:
    """A usage mistake as one line: click's message, then where to read the command's usage."""
    ctx = getattr(e, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else " (see 'mumo --help')"
    if type(e).__name__ == "NoArgsIsHelpError":  # the help was just printed to stdout
        return "missing a command: choose one of those listed above"
    close = getattr(e, "possibilities", None)
    if close:  # an unknown option: name the closest ones
        return f"no such option {e.option_name}; did you mean {' or '.join(close[:3])}?{where}"
    return _one_line(e.format_message()) + where


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mumo`` console script (``argv``: the arguments, default ``sys.argv[1:]``).

    Every mistake ends in one line on stderr and exit code 2: usage errors (an unknown command or option,
    a missing or malformed value), the library's own errors, and a file that cannot be read or written.
    Anything else is a bug in mumo: one line, exit 1, and MUMO_TRACEBACK=1 shows the traceback.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # click returns, not raises, a command's typer.Exit code in non-standalone mode
        code = app(argv, standalone_mode=False, prog_name="mumo")
        if isinstance(code, int) and code:
            sys.exit(code)
    # typer >= 0.29 bundles its own click, whose exceptions derive from typer.TyperException, not from
    # click.ClickException; an older typer raises click's own.
    except (typer.TyperException, click.ClickException) as e:
        _fail(_usage_error(e) if getattr(e, "exit_code", 1) == 2 else _one_line(e.format_message()))
    except MumoError as e:
        _fail(_one_line(e))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:  # a path the user gave that cannot be read or written
        if e.filename is None or os.environ.get("MUMO_TRACEBACK"):
            raise
        _fail(_one_line(f"{e.filename}: {e.strerror or e}"))
    except Exception as e:  # noqa: BLE001 - a bug: still one line, the traceback on request
        if os.environ.get("MUMO_TRACEBACK"):
            raise
        print(
            _one_line(f"error: unexpected {type(e).__name__}: {e}")
            + " (a bug in mumo; rerun with MUMO_TRACEBACK=1 and report the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
