"""Dataclass configs that validate themselves and round-trip through JSON.

Every config in mumo is a plain ``@dataclass`` that inherits :class:`Config`. This module gives them
``to_dict`` / ``from_dict`` (nested configs included), strict type checks at the edge, and
``replace`` with dotted overrides such as ``{"vision.depth": 2}``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, TypeVar

from mumo.errors import ConfigError

C = TypeVar("C", bound="Config")


def _suggest(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" — did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _is_config_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Config)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert JSON forms (lists, dicts) back."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {args}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if _is_config_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return tp.from_dict(value, where=where)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    return value


@dataclasses.dataclass
class Config:
    """Base of all mumo configs: typed fields, validation in ``validate``, JSON round trip."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            setattr(self, f.name, _coerce(value, hints[f.name], f"{type(self).__name__}.{f.name}"))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` when a value is out of range. Subclasses override."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists, nested configs become dicts)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Config):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], where: str | None = None) -> C:
        """Build from a dict such as ``to_dict`` returns; unknown keys are an error, not ignored."""
        where = where or cls.__name__
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in data if k not in names]
        if unknown:
            k = unknown[0]
            raise ConfigError(f"{where}: unknown field {k!r}{_suggest(k, names)}")
        return cls(**data)

    def replace(self: C, overrides: dict[str, Any] | None = None, **kwargs: Any) -> C:
        """A copy with fields changed. Keys may be dotted (``"vision.depth"``) or nested dicts."""
        merged = self.to_dict()
        for key, value in {**(overrides or {}), **kwargs}.items():
            _set_dotted(merged, key.split("."), value, type(self))
        return type(self).from_dict(merged)


def _unwrap_optional(tp: Any) -> Any:
    """``X | None`` -> ``X`` for a nested config X (an optional tower); any other type unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and _is_config_type(args[0]):
            return args[0]
    return tp


def _set_dotted(tree: dict[str, Any], path: list[str], value: Any, cls: type[Config]) -> None:
    names = {f.name: f for f in dataclasses.fields(cls)}
    head = path[0]
    if head not in names:
        raise ConfigError(f"{cls.__name__}: unknown field {head!r}{_suggest(head, names)}")
    sub = _unwrap_optional(typing.get_type_hints(cls)[head])
    if len(path) > 1 and _is_config_type(sub) and tree[head] is None:
        raise ConfigError(f"{cls.__name__}.{head} is null; cannot set {'.'.join(path)!r}")
    section = _is_config_type(sub) or typing.get_origin(sub) is dict or sub is dict
    into = len(path) > 1 or isinstance(value, dict)  # keys are set inside tree[head]
    if section and into and tree[head] is not None and not isinstance(tree[head], dict):
        # an earlier override replaced the section by a value (`data=1 data.seed=2`)
        what = ".".join(path)
        raise ConfigError(f"{cls.__name__}.{head} is {tree[head]!r}, not a mapping; cannot set {what!r}")
    if len(path) == 1:
        if _is_config_type(sub) and isinstance(value, dict):
            for k, v in value.items():
                _set_dotted(tree[head], k.split("."), v, sub)
        else:
            tree[head] = value.to_dict() if isinstance(value, Config) else value
        return
    if typing.get_origin(sub) is dict or sub is dict:  # a free-form mapping: the rest of the path is one key
        tree[head] = {**(tree[head] or {}), ".".join(path[1:]): value}
        return
    if not _is_config_type(sub):
        raise ConfigError(f"{cls.__name__}.{head} is not a nested config; cannot set {'.'.join(path)!r}")
    _set_dotted(tree[head], path[1:], value, sub)


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
