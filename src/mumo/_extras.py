"""Optional dependencies: a missing one is a one-line error naming the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from mumo.errors import MissingExtraError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` saying ``pip install 'mumo[extra]'``.

    Args:
        module: the import name, e.g. ``"fastapi"``.
        extra: the mumo extra that installs it, e.g. ``"serve"``.
        purpose: what needs it, for the message, e.g. ``"mumo serve"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed: pip install 'mumo[{extra}]'"
        ) from e
