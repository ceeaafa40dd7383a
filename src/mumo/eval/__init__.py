"""Evaluation: pure metrics on embeddings, and thin wrappers that embed with a model first."""

from mumo.eval.compositional import compositional_probe, compositional_probe_from_texts
from mumo.eval.embed import embed_image_files, embed_images, embed_texts, images_under, list_images
from mumo.eval.linear_probe import LogisticRegression, ProbeResult, fit_logistic_regression, linear_probe
from mumo.eval.retrieval import match_ranks, retrieval_metrics
from mumo.eval.zero_shot import (
    ZERO_SHOT_TEMPLATES,
    build_classifier,
    class_ranks,
    confusion_matrix,
    zero_shot_accuracy,
    zero_shot_probs,
)

__all__ = [
    "LogisticRegression",
    "ProbeResult",
    "ZERO_SHOT_TEMPLATES",
    "build_classifier",
    "class_ranks",
    "compositional_probe",
    "compositional_probe_from_texts",
    "confusion_matrix",
    "embed_image_files",
    "embed_images",
    "embed_texts",
    "fit_logistic_regression",
    "images_under",
    "linear_probe",
    "list_images",
    "match_ranks",
    "retrieval_metrics",
    "zero_shot_accuracy",
    "zero_shot_probs",
]
