"""The evaluation suite of the built-in shapes data: zero-shot colour x shape classification (seen and
held-out combinations), image<->text retrieval, and the compositional probe per hard-negative type.

Images are normalised as in training (CLIP mean and std). Nothing here trains or tunes: the held-out split
is only ever measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mumo.data.shapes import (
    ShapesConfig,
    ShapesDataset,
    canonical_caption,
    class_index,
    class_names,
    hard_negatives,
)
from mumo.data.tokenizer import Tokenizer
from mumo.data.transforms import normalize
from mumo.eval.compositional import compositional_probe_from_texts
from mumo.eval.embed import embed_images, embed_texts
from mumo.eval.retrieval import retrieval_metrics
from mumo.eval.zero_shot import build_classifier, confusion_matrix, zero_shot_accuracy

FIGURES = "eval_figures"  # <run>/eval_figures.safetensors + .json


@dataclass
class ShapesEvaluation:
    """Metrics plus what the report draws.

    Attributes:
        metrics: nested dict of fractions (``zero_shot``, ``held_out``, ``retrieval``, ``compositional``).
        confusion: (C, C) zero-shot counts on single-object images, rows true, columns predicted.
        class_names: the C class names ("red circle", …).
        pair_images: (P, 3, H, W) the first P retrieval test images, in [0, 1].
        pair_captions: their captions.
        similarity: (P, P) image-caption cosine similarity.
    """

    metrics: dict[str, Any]
    confusion: Tensor
    class_names: list[str]
    pair_images: Tensor
    pair_captions: list[str]
    similarity: Tensor

    def save(self, run_dir: str | Path) -> None:
        """Write the figure data next to a run (``eval_figures.safetensors`` + ``.json``)."""
        run_dir = Path(run_dir)
        tensors = {
            "confusion": self.confusion,
            "pair_images": self.pair_images,
            "similarity": self.similarity,
        }
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(run_dir / f"{FIGURES}.safetensors"))
        meta = {"class_names": self.class_names, "pair_captions": self.pair_captions, "metrics": self.metrics}
        (run_dir / f"{FIGURES}.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, run_dir: str | Path) -> ShapesEvaluation:
        """Read what :meth:`save` wrote."""
        run_dir = Path(run_dir)
        t = load_file(str(run_dir / f"{FIGURES}.safetensors"))
        meta = json.loads((run_dir / f"{FIGURES}.json").read_text())
        return cls(
            meta["metrics"],
            t["confusion"],
            meta["class_names"],
            t["pair_images"],
            meta["pair_captions"],
            t["similarity"],
        )


def _images(dataset: ShapesDataset) -> tuple[Tensor, list[Any]]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it["image"] for it in items]), items


def evaluate_shapes(
    model: nn.Module,
    tokenizer: Tokenizer,
    config: ShapesConfig,
    split: str = "test",
    size: int = 1000,
    batch_size: int = 256,
    num_pairs: int = 16,
) -> ShapesEvaluation:
    """Evaluate a dual encoder on ``size`` scenes of ``split`` ('val' while tuning, 'test' to report).

    Zero-shot uses ``size`` single-object scenes and all 36 colour-shape classes; the held-out accuracy
    uses ``size // 2`` single-object scenes of the held-out combinations, still over all 36 classes;
    retrieval and the compositional probe use ``size`` scenes of ``config``'s object counts.
    """
    names = [f"{colour} {shape}" for colour, shape in class_names()]
    classifier = build_classifier(model, tokenizer, names)  # (E, C)

    def zero_shot(on_split: str, n: int) -> tuple[dict[str, float], Tensor, Tensor]:
        single = ShapesDataset(on_split, n, config.replace(min_objects=1, max_objects=1))
        images, items = _images(single)
        labels = torch.tensor([class_index(it["scene"]) for it in items])
        embeds = embed_images(model, normalize(images), batch_size=batch_size)
        return zero_shot_accuracy(embeds, classifier, labels), embeds, labels

    seen, seen_embeds, seen_labels = zero_shot(split, size)
    held_out, _, _ = zero_shot("heldout", max(1, size // 2))
    confusion = confusion_matrix(seen_embeds, classifier, seen_labels)

    pairs = ShapesDataset(split, size, config)
    images, items = _images(pairs)
    image_embeds = embed_images(model, normalize(images), batch_size=batch_size)
    captions = [it["caption"] for it in items]
    text_embeds = embed_texts(model, tokenizer, captions, batch_size=batch_size)
    retrieval = retrieval_metrics(image_embeds, text_embeds)
    scenes = [it["scene"] for it in items]
    compositional = compositional_probe_from_texts(
        model,
        tokenizer,
        image_embeds,
        [canonical_caption(s) for s in scenes],
        [hard_negatives(s) for s in scenes],
        batch_size=batch_size,
    )
    p = min(num_pairs, size)
    metrics = {
        "split": split,
        "zero_shot": {"top1": seen["top1"], "top5": seen["top5"], "n": size},
        "held_out": {"top1": held_out["top1"], "top5": held_out["top5"], "n": max(1, size // 2)},
        "retrieval": {**retrieval, "n": size},
        "compositional": compositional,
    }
    return ShapesEvaluation(
        metrics=metrics,
        confusion=confusion,
        class_names=names,
        pair_images=images[:p],
        pair_captions=captions[:p],
        similarity=(image_embeds[:p] @ text_embeds[:p].T).cpu(),
    )
