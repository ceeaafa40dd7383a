"""The WiSE-FT evaluation (Wortsman et al., 2022): mix a fine-tuned classifier with its zero-shot start at
several alphas and measure, at each, the target task and the zero-shot ability pretraining gave.

    alpha = 0: the zero-shot classifier (pretrained weights, head from class prompts)
    alpha = 1: the fine-tuned classifier
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from mumo.data.shapes import ShapesConfig
from mumo.eval.classify import predict
from mumo.eval.shapes_suite import evaluate_shapes
from mumo.models.interpolate import interpolate_models


def wise_ft_sweep(
    start: nn.Module,
    finetuned: nn.Module,
    alphas: Sequence[float],
    evaluate: Callable[[nn.Module], dict[str, float]],
    progress: Callable[[float, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """``evaluate`` the weight mix ``(1 - alpha) * start + alpha * finetuned`` at each alpha.

    Args:
        start, finetuned: two models of one architecture (e.g. :func:`mumo.run.heads.zero_shot_start`).
        alphas: mixing weights in [0, 1].
        evaluate: model -> named scores (e.g. target accuracy and zero-shot accuracy).
        progress: called with (alpha, scores) after each evaluation.

    Returns:
        One row per alpha: ``{"alpha": alpha, **scores}``.
    """
    rows = []
    for alpha in alphas:
        scores = evaluate(interpolate_models(start, finetuned, alpha))
        rows.append({"alpha": float(alpha), **scores})
        if progress is not None:
            progress(alpha, scores)
    return rows


def target_and_zero_shot(
    tokenizer: Any, target: tuple[Tensor, Tensor], size: int = 1000
) -> Callable[[nn.Module], dict[str, float]]:
    """The sweep's evaluation of a classifier: ``target`` accuracy on (images (N, 3, H, W) normalised,
    labels (N,)), and zero-shot accuracy of the CLIP inside on ``size`` test scenes of the built-in data
    (all 36 colour-shape classes)."""

    images, labels = target

    def evaluate(model: nn.Module) -> dict[str, float]:
        preds = predict(model, images)
        shapes = ShapesConfig(image_size=model.image_size)
        result = evaluate_shapes(model.clip, tokenizer, shapes, split="test", size=size)
        return {
            "target": float((preds == labels).double().mean()),
            "zero_shot": result.metrics["zero_shot"]["top1"],
        }

    return evaluate
