"""Model registry: named configs, the architectures that build them, and ``create_model``.

A named config is a small function decorated with :func:`register_model` that returns a config; an
architecture maps a config's ``model_type`` to its config and model classes, so a ``config.json`` alone
says how to rebuild the model.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from mumo._config import Config
from mumo._io import read_json
from mumo.errors import ConfigError, UnknownModelError

F = TypeVar("F", bound=Callable[[], Config])

# Filled once, by decorators, when the model modules are imported; read-only afterwards.
_NAMED_CONFIGS: dict[str, Callable[[], Config]] = {}
_ARCHITECTURES: dict[str, tuple[type[Config], type[nn.Module]]] = {}


def register_model(fn: F) -> F:
    """Register ``fn`` (no arguments, returns a config) under its function name."""
    if fn.__name__ in _NAMED_CONFIGS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _NAMED_CONFIGS[fn.__name__] = fn
    return fn


def register_architecture(model_type: str, config_cls: type[Config], model_cls: type[nn.Module]) -> None:
    """Declare that configs tagged ``model_type`` are ``config_cls`` and build ``model_cls(config)``."""
    _ARCHITECTURES[model_type] = (config_cls, model_cls)


def capabilities(model: nn.Module) -> frozenset[str]:
    """What a model can do, as it declares it (``capabilities`` on its class), so that callers ask instead of
    testing its class:

        embed     encode_image / encode_text and a temperature (``scale_and_bias``): zero-shot, retrieval
        match     an image-text matching head (``itm_logits``)
        generate  text from a prompt (``generate``); caption: from an image too
        classify  class logits of images
    """
    return frozenset(getattr(model, "capabilities", ()))


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching a shell-style ``pattern`` (``'clip_vit_*'``)."""
    return sorted(n for n in _NAMED_CONFIGS if fnmatch.fnmatch(n, pattern))


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a config from its ``to_dict()`` form (or a checkpoint's config.json), by ``model_type``.

    Raises:
        ConfigError: ``data`` is not a mapping, has no ``model_type`` or an unknown one, or a field is wrong.
    """
    if not isinstance(data, dict):  # a config.json holding a list, a number, ...
        raise ConfigError(f"a model config must be a JSON object, not a {type(data).__name__}")
    data = {k: v for k, v in data.items() if k != "mumo_version"}  # provenance, not a field
    known = ", ".join(sorted(_ARCHITECTURES))
    if "model_type" not in data:
        raise ConfigError(f"the model config has no model_type; known architectures: {known}")
    model_type = data["model_type"]
    if not isinstance(model_type, str) or model_type not in _ARCHITECTURES:
        close = difflib.get_close_matches(str(model_type), list(_ARCHITECTURES), n=1, cutoff=0.6)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown model_type {model_type!r}{hint} (known architectures: {known})")
    return _ARCHITECTURES[model_type][0].from_dict(data)


def get_model_config(name_or_path: str | Path, **overrides: Any) -> Config:
    """The config of a registered model name or of a JSON file, with ``overrides`` applied.

    Overrides may be dotted (``**{"vision.depth": 2}``) or nested (``vision={"depth": 2}``).
    """
    name = str(name_or_path)
    if name in _NAMED_CONFIGS:
        config = _NAMED_CONFIGS[name]()
    elif name.endswith(".json") or Path(name).is_file():
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = read_json(path)  # names the file when it is not JSON
        try:
            config = config_from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"config file {path}: {e}") from e
    else:
        close = difflib.get_close_matches(name, list(_NAMED_CONFIGS), n=3, cutoff=0.6)
        hint = f" — did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint} (see `mumo models` for the list)")
    return config.replace(overrides) if overrides else config


def build_model(config: Config) -> nn.Module:
    """Instantiate the architecture that ``config.model_type`` names."""
    model_type = getattr(config, "model_type", None)
    if model_type not in _ARCHITECTURES:
        raise ConfigError(f"no architecture is registered for model_type {model_type!r}")
    return _ARCHITECTURES[model_type][1](config)


def create_model(name_or_path: str | Path, seed: int | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model (or one described by a JSON config file) with random weights.

    Args:
        name_or_path: a name from :func:`list_models` or a ``config.json`` path.
        seed: seeds the initialisation without touching the global RNG; None uses the global RNG.
        **overrides: config fields to change, dotted or nested.

    Example:
        >>> model = create_model("clip_vit_tiny", seed=0, **{"vision.depth": 1})
    """
    config = get_model_config(name_or_path, **overrides)
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        return build_model(config)
