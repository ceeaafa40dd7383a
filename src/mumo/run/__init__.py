"""Runs: train -> evaluate -> report (``mumo train``, ``finetune``, ``demo``), comparisons of recipes, and the
recipes themselves (package data, so an installed mumo has them)."""
