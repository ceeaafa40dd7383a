"""Moved to :mod:`mumo.losses.weighting`; this alias stays for one release."""

from mumo.losses.weighting import FixedWeighting, UncertaintyWeighting, build_weighting, tie_penalty

__all__ = ["FixedWeighting", "UncertaintyWeighting", "build_weighting", "tie_penalty"]
