"""Losses, one family per file."""

from mumo.losses.contrastive import (
    ClipLoss,
    SigLipLoss,
    clip_loss,
    gather_features,
    info_nce,
    row_cross_entropy,
    siglip_loss,
)

__all__ = [
    "ClipLoss",
    "SigLipLoss",
    "clip_loss",
    "gather_features",
    "info_nce",
    "row_cross_entropy",
    "siglip_loss",
]
