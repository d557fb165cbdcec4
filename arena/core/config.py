"""Frozen typed configs built from dicts, where an unknown key fails with a did-you-mean suggestion."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from arena.core.errors import ArenaError

T = TypeVar("T")


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest option, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ArenaError(f"field '{name}' wants true/false, got {value!r}")
        return bool(value)
    if hint in (int, float, str):
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise ArenaError(f"field '{name}' wants {hint.__name__}, got {value!r}") from None
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        args = typing.get_args(hint)
        inner = args[0] if args else str
        return tuple(_coerce(v, inner, name) for v in items)
    return value


def replace_strict(cfg: T, changes: Mapping[str, Any]) -> T:
    """``dataclasses.replace`` that rejects unknown fields with a suggestion and coerces strings to field types."""
    assert dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    clean: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in fields:
            raise ArenaError(f"unknown field '{key}'{did_you_mean(key, fields)}")
        clean[key] = _coerce(value, hints[key], key)
    return dataclasses.replace(cfg, **clean)


def from_dict_strict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build a dataclass from a dict; unknown keys fail with a suggestion. Nested dataclasses are built too."""
    assert dataclasses.is_dataclass(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ArenaError(f"unknown field '{key}' in {cls.__name__}{did_you_mean(key, fields)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            kwargs[key] = from_dict_strict(hint, value)  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(value, hint, key)
    return cls(**kwargs)
