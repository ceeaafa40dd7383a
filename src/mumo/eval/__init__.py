"""Evaluation: metrics on embeddings and model outputs (embedding itself is :mod:`mumo.inference`)."""

# Moved to mumo.inference; re-exported here for one release.
from mumo.data.pairs import list_images  # noqa: E402
from mumo.eval.compositional import compositional_probe, compositional_probe_from_texts
from mumo.eval.linear_probe import LogisticRegression, ProbeResult, fit_logistic_regression, linear_probe
from mumo.eval.retrieval import match_ranks, retrieval_metrics
from mumo.eval.zero_shot import class_ranks, confusion_matrix, zero_shot_accuracy
from mumo.inference import (  # noqa: E402
    ZERO_SHOT_TEMPLATES,
    build_classifier,
    embed_image_files,
    embed_images,
    embed_texts,
    images_under,
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
