"""`mumo caption`, `ask` and `generate`: text from a captioner (images -> captions, image + question ->
answer) or from a text-only model (prompt -> continuation). The commands parse the decoding options, call
:mod:`mumo.generation`, and print."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mumo.errors import DataError

if TYPE_CHECKING:
    from torch import Tensor

    from mumo.data.tokenizer import Tokenizer
    from mumo.generation import GenerationConfig
    from mumo.models import Captioner

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


class Precision(str, Enum):
    """mumo.layers.frozen_linear.PRECISIONS, spelled out so that --help does not import torch."""

    fp32 = "fp32"
    bf16 = "bf16"
    int8 = "int8"


PRECISION = typer.Option(
    Precision.fp32,
    "--precision",
    help="weights to decode with: fp32, bf16 (pays on CPUs with AVX-512 BF16 or AMX) or int8 (weight-only "
    "quantization, ~3x fp32's speed at batch 1)",
)


def _generation_config(
    max_new: int, beam: int, length_penalty: float, sample: bool, temperature: float, top_k: int,
    top_p: float, repetition: float, seed: int,
) -> GenerationConfig:  # fmt: skip
    from mumo.generation import GenerationConfig

    # any sampling knob away from its neutral value asks for sampling, as its help says
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


def _load_images(paths: list[Path], model: Captioner) -> Tensor:
    """The images at ``paths`` as one (N, 3, H, W) batch for ``model``; an unreadable one is a DataError
    naming it."""
    import torch

    from mumo.data.pairs import load_rgb
    from mumo.inference import image_transform

    transform, out = image_transform(model), []
    for path in paths:
        picture = load_rgb(path)
        if isinstance(picture, str):
            raise DataError(f"cannot read {path}: {picture}")
        out.append(transform(picture))
    return torch.stack(out)


def _load_captioner(
    checkpoint: Path, needs_images: bool, precision: Precision
) -> tuple[Captioner, Tokenizer]:
    """A captioner, frozen at ``precision`` for decoding, and its tokenizer; a model that cannot do what the
    command asks is refused."""
    from mumo.inference import freeze, load
    from mumo.models import capabilities

    model, tokenizer = load(checkpoint)
    can = capabilities(model)
    if "generate" not in can:
        raise DataError(f"{checkpoint} holds a {type(model).__name__}, which does not generate text")
    if needs_images and "caption" not in can:
        raise DataError(f"{checkpoint} is a text-only model; use `mumo generate` with --prompt")
    if not needs_images and "caption" in can:
        raise DataError(f"{checkpoint} is an image captioner; use `mumo caption` or `mumo ask`")
    return freeze(model, precision.value), tokenizer


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
    precision: Precision = PRECISION,
) -> None:
    """Caption images: one line per image, "path<TAB>caption"."""
    from mumo.generation import caption_images

    model, tokenizer = _load_captioner(checkpoint, needs_images=True, precision=precision)
    config = _generation_config(
        max_new_tokens, beam, length_penalty, sample, temperature, top_k, top_p, repetition_penalty, seed
    )
    pixels = _load_images(images, model)
    for path, text in zip(images, caption_images(model, tokenizer, pixels, config), strict=True):
        print(f"{path}\t{text}")


def ask(
    checkpoint: Path = typer.Argument(..., help="a captioner fine-tuned on questions (run or model folder)"),
    image: Path = typer.Argument(..., help="an image file"),
    question: str = typer.Argument(..., help='e.g. "what colour is the star?"'),
    max_new_tokens: int = typer.Option(8, "--max-new-tokens", min=1, help="most answer tokens"),
    beam: int = _BEAM,
    precision: Precision = PRECISION,
) -> None:
    """Answer a question about an image (visual question answering as generation)."""
    from mumo.generation import GenerationConfig, answer_questions

    model, tokenizer = _load_captioner(checkpoint, needs_images=True, precision=precision)
    pixels = _load_images([image], model)
    config = GenerationConfig(max_new_tokens=max_new_tokens, num_beams=beam)
    print(answer_questions(model, tokenizer, pixels, [0], [question.strip()], config)[0])


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
    precision: Precision = PRECISION,
) -> None:
    """Continue text prompts with a text-only model; prints each prompt followed by its continuation."""
    from mumo.generation import complete_text

    model, tokenizer = _load_captioner(checkpoint, needs_images=False, precision=precision)
    config = _generation_config(
        max_new_tokens, beam, length_penalty, sample, temperature, top_k, top_p, repetition_penalty, seed
    )
    for text, more in zip(prompt, complete_text(model, tokenizer, prompt, config), strict=True):
        print(text + more)
