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
from mumo.losses.language import causal_lm_loss, mask_tokens, masked_lm_loss
from mumo.losses.matching import build_itm_batch, itm_loss, mine_hard_negatives

__all__ = [
    "ClipLoss",
    "SigLipLoss",
    "clip_loss",
    "gather_features",
    "info_nce",
    "row_cross_entropy",
    "siglip_loss",
    "build_itm_batch",
    "causal_lm_loss",
    "itm_loss",
    "mask_tokens",
    "masked_lm_loss",
    "mine_hard_negatives",
]
