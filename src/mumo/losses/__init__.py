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
from mumo.losses.matching import itm_loss, itm_pair_indices, mine_hard_negatives, random_negatives
from mumo.losses.weighting import FixedWeighting, UncertaintyWeighting, build_weighting, tie_penalty

__all__ = [
    "FixedWeighting",
    "UncertaintyWeighting",
    "build_weighting",
    "tie_penalty",
    "ClipLoss",
    "SigLipLoss",
    "clip_loss",
    "gather_features",
    "info_nce",
    "row_cross_entropy",
    "siglip_loss",
    "causal_lm_loss",
    "itm_loss",
    "itm_pair_indices",
    "mask_tokens",
    "masked_lm_loss",
    "mine_hard_negatives",
    "random_negatives",
]
