"""End-of-run evaluation, by ``data.kind``: the shapes test splits (retrieval and probes for models with
embeddings, captions or VQA answers for captioners), accuracy of a classifier on its labelled splits, or the
perplexity of a text corpus's held-out windows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Dataset

from mumo.data.config import LABELLED_KINDS
from mumo.data.shapes import ShapesConfig, ShapesDataset
from mumo.data.sources import data_source, shapes_config
from mumo.data.text import TextCorpus
from mumo.data.tokenizer import Tokenizer
from mumo.eval.captioning import CAPTION_IMAGES, evaluate_captions, evaluate_vqa, perplexity
from mumo.eval.classify import classifier_accuracy
from mumo.eval.shapes_suite import PARTS, evaluate_shapes
from mumo.models import capabilities
from mumo.train.config import TrainConfig


def evaluate_run(
    model: nn.Module,
    tokenizer: Tokenizer,
    config: TrainConfig,
    out_dir: str | Path,
    dataset: Dataset | None = None,
) -> dict:
    """End-of-run evaluation: the shapes test splits (retrieval and probes for models with embeddings,
    captions or VQA answers for captioners; figure data saved next to the run), or the perplexity of the
    held-out windows of the run's text corpus (``dataset``, the bound training :class:`TextCorpus`)."""
    data = config.data
    if data.kind in LABELLED_KINDS:
        source = data_source(data)
        mean, std = source.normalization or (None, None)
        return {
            f"{split}_accuracy": classifier_accuracy(model, source.split(split), mean, std)
            for split in ("val", "test")
        }
    if data.kind == "text":
        if not isinstance(dataset, TextCorpus):
            raise TypeError("evaluating a text run needs its bound TextCorpus as dataset")
        held_out = dataset.held_out()
        return {"perplexity": perplexity(model, held_out)} if len(held_out) else {}
    if data.kind != "shapes":
        return {}
    return evaluate_on_shapes(
        model, tokenizer, shapes_config(data), "test", data.test_size, data.questions, out_dir=out_dir
    )


def evaluate_on_shapes(
    model: nn.Module,
    tokenizer: Tokenizer,
    shapes: ShapesConfig,
    split: str = "test",
    size: int = 1000,
    questions: bool = False,
    scoring: str = "auto",
    out_dir: str | Path | None = None,
    meteor: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """A model on ``size`` scenes of the built-in data's ``split``, by what it can do: VQA answers
    (``questions``) or captions for a captioner (``meteor`` as :func:`~mumo.eval.captioning.caption_metrics`
    takes it: by default when Java is installed), and for a model with embeddings the shapes suite
    (retrieval, zero-shot, probes; ``scoring`` as :func:`~mumo.eval.shapes_suite.evaluate_shapes` takes it).
    With an ``out_dir``, the figures' data and the captioned images are saved there for the report.
    ``progress`` is called with (parts done, parts in all) after each part: the captions or answers, and
    each of the shapes suite's :data:`~mumo.eval.shapes_suite.PARTS`."""
    can, metrics = capabilities(model), {}
    generated = int("caption" in can)  # one part: the captions, or the answers
    total = 1 if generated and (questions or "embed" not in can) else PARTS + generated

    def step(done: int) -> None:
        if progress is not None:
            progress(done, total)

    if generated:
        if questions:
            vqa = evaluate_vqa(model, tokenizer, shapes, split=split, size=size)
            step(1)
            return {"vqa": vqa}
        metrics["captioning"] = evaluate_captions(
            model, tokenizer, shapes, split=split, size=size, meteor=meteor
        )
        step(1)
        if out_dir is not None:
            _save_caption_images(out_dir, shapes, len(metrics["captioning"].get("examples", [])))
        if "embed" not in can:
            return metrics
    suite = (lambda done, _: step(generated + done)) if progress is not None else None
    result = evaluate_shapes(
        model, tokenizer, shapes, split=split, size=size, scoring=scoring, progress=suite
    )
    if out_dir is not None:
        result.save(out_dir)
    return {**result.metrics, **metrics}


def _save_caption_images(out_dir: str | Path, cfg: ShapesConfig, n: int) -> None:
    """The test images whose generated captions the metrics list as examples, for the report."""
    if n:
        dataset = ShapesDataset("test", n, cfg)
        images = torch.stack([dataset[i]["image"] for i in range(n)])
        save_file({"images": images.contiguous()}, str(Path(out_dir) / CAPTION_IMAGES))
