"""The evaluation suite of the built-in shapes data: zero-shot colour x shape classification (seen and
held-out combinations), image<->text retrieval, and the compositional probe per hard-negative type; scored
by embeddings (ITC) or by a fusion model's matching head (ITM, see :mod:`mumo.eval.matching`).

Images are normalised as in training (CLIP mean and std). Nothing here trains or tunes: the held-out split
is only ever measured.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mumo.data.shapes import (
    PARAPHRASES,
    ShapesConfig,
    ShapesDataset,
    canonical_caption,
    class_index,
    class_names,
    hard_negatives,
    scene_key,
)
from mumo.data.tokenizer import Tokenizer
from mumo.data.transforms import normalize
from mumo.errors import DataError
from mumo.eval.compositional import compositional_probe_from_texts
from mumo.eval.matching import PairScorer, itm_compositional, itm_retrieval, itm_zero_shot
from mumo.eval.retrieval import match_ranks, retrieval_metrics
from mumo.eval.zero_shot import zero_shot_accuracy
from mumo.inference import ZERO_SHOT_TEMPLATES, build_classifier, embed_images, embed_texts
from mumo.models import capabilities

FIGURES = "eval_figures"  # <run>/eval_figures.safetensors + .json
PARTS = 4  # what evaluate_shapes reports progress in: zero-shot, held-out zero-shot, retrieval, the probe


@dataclass
class ShapesEvaluation:
    """Metrics plus what the report draws.

    Attributes:
        metrics: nested dict of fractions (``zero_shot``, ``held_out``, ``retrieval``, ``compositional``).
        confusion: (C, C) zero-shot counts on single-object images, rows true, columns predicted.
        class_names: the C class names ("red circle", …).
        pair_images: (P, 3, H, W) the first P retrieval test images, in [0, 1].
        pair_captions: their captions.
        similarity: (P, P) image-caption scores (cosine similarity, or ITM log-odds).
        grid_queries: Q test captions used as text-to-image queries (models with embeddings; else none).
        grid_top: (Q, K) test-set rows of each query's top K images, best first; row q is query q's own.
        grid_images: (Q, K, 3, H, W) those images, in [0, 1].
    """

    metrics: dict[str, Any]
    confusion: Tensor
    class_names: list[str]
    pair_images: Tensor
    pair_captions: list[str]
    similarity: Tensor
    grid_queries: list[str] = field(default_factory=list)
    grid_top: Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.long))
    grid_images: Tensor = field(default_factory=lambda: torch.zeros(0, 0, 3, 1, 1))

    def save(self, run_dir: str | Path) -> None:
        """Write the figure data next to a run (``eval_figures.safetensors`` + ``.json``)."""
        run_dir = Path(run_dir)
        tensors = {
            "confusion": self.confusion,
            "pair_images": self.pair_images,
            "similarity": self.similarity,
            "grid_top": self.grid_top,
            "grid_images": self.grid_images,
        }
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(run_dir / f"{FIGURES}.safetensors"))
        meta = {
            "class_names": self.class_names,
            "pair_captions": self.pair_captions,
            "grid_queries": self.grid_queries,
            "metrics": self.metrics,
        }
        (run_dir / f"{FIGURES}.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, run_dir: str | Path) -> ShapesEvaluation:
        """Read what :meth:`save` wrote."""
        run_dir = Path(run_dir)
        t = load_file(str(run_dir / f"{FIGURES}.safetensors"))
        meta = json.loads((run_dir / f"{FIGURES}.json").read_text())
        grid = {}
        if "grid_top" in t:  # figures saved before the retrieval grid existed have none
            grid = {
                "grid_queries": meta["grid_queries"],
                "grid_top": t["grid_top"],
                "grid_images": t["grid_images"],
            }
        return cls(
            meta["metrics"],
            t["confusion"],
            meta["class_names"],
            t["pair_images"],
            meta["pair_captions"],
            t["similarity"],
            **grid,
        )


def _scene_ids(scenes: list[Any]) -> Tensor:
    """(N,) long: one id per distinct :func:`~mumo.data.shapes.scene_key`, shared by scenes no caption
    can tell apart."""
    ids: dict[tuple[str, ...], int] = {}
    return torch.tensor([ids.setdefault(scene_key(s), len(ids)) for s in scenes], dtype=torch.long)


def _images(dataset: ShapesDataset) -> tuple[Tensor, list[Any]]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it["image"] for it in items]), items


def _confusion(preds: Tensor, labels: Tensor, c: int) -> Tensor:
    return torch.bincount(labels.long() * c + preds.long(), minlength=c * c).view(c, c)


def _attribute_accuracy(preds: Tensor, labels: Tensor) -> dict[str, float]:
    """How often the predicted colour-shape class (N,) has the true colour, and the true shape."""
    classes = class_names()
    colour = sum(classes[p][0] == classes[t][0] for p, t in zip(preds.tolist(), labels.tolist(), strict=True))
    shape = sum(classes[p][1] == classes[t][1] for p, t in zip(preds.tolist(), labels.tolist(), strict=True))
    return {"colour": colour / len(labels), "shape": shape / len(labels)}


def evaluate_shapes(
    model: nn.Module,
    tokenizer: Tokenizer,
    config: ShapesConfig,
    split: str = "test",
    size: int = 1000,
    batch_size: int = 256,
    num_pairs: int = 16,
    scoring: str = "auto",
    rerank_k: int = 16,
    retrieval_size: int | None = None,
    grid_queries: int = 6,
    grid_k: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> ShapesEvaluation:
    """Evaluate a model on ``size`` scenes of ``split`` ('val' while tuning, 'test' to report).

    Zero-shot uses ``size`` single-object scenes and all 36 colour-shape classes; the held-out accuracy
    uses ``size // 2`` single-object scenes of the held-out combinations, still over all 36 classes;
    retrieval (on the first ``retrieval_size`` pairs, default all) and the compositional probe use ``size``
    scenes of ``config``'s object counts.

    Args:
        scoring: 'itc' ranks by embedding similarity (dual encoders, and a fusion model's towers alone);
            'itm' by the matching head, where a model with embeddings rescores only the ITC top
            ``rerank_k`` retrieval candidates and top-5 classes (a single-stream model scores every
            pair); 'auto' is 'itm' for models with a matching head, else 'itc'.
        grid_queries, grid_k: the report's retrieval grid: the top ``grid_k`` images of the first
            ``grid_queries`` test captions (by embedding similarity; none for a model without embeddings).
        progress: called with (parts done, :data:`PARTS`) after each part: zero-shot, held-out zero-shot,
            retrieval, the compositional probe.
    """

    def step(done: int) -> None:
        if progress is not None:
            progress(done, PARTS)

    if scoring == "auto":
        scoring = "itm" if "match" in capabilities(model) else "itc"
    if scoring not in ("itc", "itm"):
        raise DataError(f"scoring must be 'itc', 'itm' or 'auto', got {scoring!r}")
    names = [f"{colour} {shape}" for colour, shape in class_names()]
    has_embeddings = "embed" in capabilities(model)
    if scoring == "itc" and not has_embeddings:
        raise DataError(f"{type(model).__name__} has no embeddings to score by ITC; use scoring='itm'")
    classifier = build_classifier(model, tokenizer, names) if has_embeddings else None  # (E, C)
    # The same classes named only with words no training caption uses (PARAPHRASES).
    paraphrased = [f"{PARAPHRASES[colour]} {PARAPHRASES[shape]}" for colour, shape in class_names()]
    classifier_para = build_classifier(model, tokenizer, paraphrased) if has_embeddings else None
    scorer = PairScorer(model, tokenizer, batch_size=batch_size) if scoring == "itm" else None
    # One prompt for ITM (each is a fusion pass per image); the ITC classifier averages several.
    class_texts = [ZERO_SHOT_TEMPLATES[0].format(name) for name in names]

    def zero_shot(on_split: str, n: int) -> tuple[dict[str, float], Tensor, Tensor]:
        single = ShapesDataset(on_split, n, config.replace(min_objects=1, max_objects=1))
        images, items = _images(single)
        images = normalize(images)
        labels = torch.tensor([class_index(it["scene"]) for it in items])
        shortlist, itc = None, None
        if classifier is not None:
            embeds = embed_images(model, images, batch_size=batch_size)
            itc = zero_shot_accuracy(embeds, classifier, labels)
            if on_split == split:
                para["paraphrased"] = {
                    **zero_shot_accuracy(embeds, classifier_para, labels),
                    **_attribute_accuracy((embeds @ classifier_para).argmax(dim=1), labels),
                }
            scores = embeds @ classifier  # (n, C)
            preds = scores.argmax(dim=1)
            shortlist = scores.topk(5, dim=1).indices
        if scorer is None:
            return itc, preds, labels
        result, preds = itm_zero_shot(scorer, scorer.image_context(images), class_texts, labels, shortlist)
        return result, preds, labels

    para: dict[str, dict[str, float]] = {}
    seen, seen_preds, seen_labels = zero_shot(split, size)
    step(1)
    held_out, _, _ = zero_shot("heldout", max(1, size // 2))
    step(2)
    confusion = _confusion(seen_preds, seen_labels, len(names))

    pairs = ShapesDataset(split, size, config)
    images, items = _images(pairs)
    normalized = normalize(images)
    captions = [it["caption"] for it in items]
    scenes = [it["scene"] for it in items]
    positives = [canonical_caption(s) for s in scenes]
    negatives = [hard_negatives(s) for s in scenes]
    r = min(retrieval_size or size, size)
    p = min(num_pairs, size)
    keys = _scene_ids(scenes[:r])
    if scorer is None:
        image_embeds = embed_images(model, normalized, batch_size=batch_size)
        text_embeds = embed_texts(model, tokenizer, captions, batch_size=batch_size)
        retrieval = retrieval_metrics(image_embeds[:r], text_embeds[:r])
        fit = match_ranks(text_embeds[:r], image_embeds[:r], query_ids=keys, candidate_ids=keys) < 1
        retrieval["text_to_image_R@1_any_fit"] = fit.float().mean().item()
        step(3)
        compositional = compositional_probe_from_texts(
            model, tokenizer, image_embeds, positives, negatives, batch_size=batch_size
        )
        similarity = image_embeds[:p] @ text_embeds[:p].T
    else:
        context = scorer.image_context(normalized)
        image_embeds = text_embeds = None
        if has_embeddings:
            image_embeds = embed_images(model, normalized[:r], batch_size=batch_size)
            text_embeds = embed_texts(model, tokenizer, captions[:r], batch_size=batch_size)
        retrieval = itm_retrieval(scorer, context[:r], captions[:r], image_embeds, text_embeds, k=rerank_k)
        step(3)
        compositional = itm_compositional(scorer, context, positives, negatives)
        similarity = scorer.score_candidates(
            context[:p], captions[:p], torch.arange(p).expand(p, p), "images"
        )
    step(4)
    # A caption may fit several gallery images equally (two lone red circles, both small, both top left):
    # strict R@1 then credits one of them, so even a model that tells apart all that captions can tell
    # apart expects only 1 / (images its caption fits) on such a query.
    retrieval["text_to_image_R@1_ceiling"] = (1.0 / torch.bincount(keys)[keys].float()).mean().item()
    metrics = {
        "split": split,
        "scoring": scoring,
        "zero_shot": {**seen, "n": size},
        **({"zero_shot_paraphrased": {**para["paraphrased"], "n": size}} if para else {}),
        "held_out": {**held_out, "n": max(1, size // 2)},
        "retrieval": {**retrieval, "n": r},
        "compositional": compositional,
    }
    grid = {}
    if image_embeds is not None:  # text-to-image queries: the first test captions against the r images
        q, k = min(grid_queries, r), min(grid_k, r)
        top = (text_embeds[:q] @ image_embeds[:r].T).topk(k, dim=1).indices.cpu()
        grid = {"grid_queries": captions[:q], "grid_top": top, "grid_images": images[top]}
    return ShapesEvaluation(
        metrics=metrics,
        confusion=confusion,
        class_names=names,
        pair_images=images[:p],
        pair_captions=captions[:p],
        similarity=similarity.cpu(),
        **grid,
    )
