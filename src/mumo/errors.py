"""Typed exceptions raised by the library; the CLI turns them into one clear line and a non-zero exit."""

from __future__ import annotations


class MumoError(Exception):
    """Base class of every error mumo raises on purpose."""


class ConfigError(MumoError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class UnknownModelError(ConfigError):
    """A model name is not in the registry."""


class CheckpointError(MumoError):
    """A checkpoint folder is missing files or does not match its config."""


class TokenizerError(MumoError, ValueError):
    """A tokenizer cannot be trained, loaded or used as asked."""


class DataError(MumoError, ValueError):
    """Input data is malformed: an annotation file, its columns, or tensors handed to a metric."""


class TrainingError(MumoError):
    """Training cannot go on (e.g. the loss became NaN or infinite)."""


class ExportError(MumoError):
    """A model cannot be exported (e.g. to ONNX), or the exported graph does not match PyTorch."""


class MissingExtraError(MumoError, ImportError):
    """An optional dependency is not installed; the message names its extra (``pip install 'mumo[serve]'``).

    Also an :class:`ImportError`, so code that probes for a package keeps working."""


class ProgramError(MumoError):
    """A program mumo runs (Java, for METEOR) is missing or failed; the message says what to install."""
