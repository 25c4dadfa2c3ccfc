"""Configs: frozen dataclasses read from YAML (``yaml.safe_load``) with ``--set key=value`` overrides.

Unknown keys are errors, so a typo never silently falls back to a default.
The resolved config is saved next to every output (``run.json``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from sarbridge.runtime.errors import SarbridgeError

T = TypeVar("T")


class ConfigError(SarbridgeError, ValueError):
    """A config file or override that does not fit the schema."""


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"'{where}' must be a mapping, got {type(value).__name__}")
        return from_dict(hint, value, f"{where}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{where}' must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{where}' must be a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{where}' must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{where}' must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{where}' must be true or false, got {value!r}")
        return value
    if hint is str:
        if isinstance(value, bool):
            raise ConfigError(
                f"'{where}' must be a string, got {value!r} (YAML reads an unquoted "
                "off/on/no/yes/false/true as a boolean: quote it)"
            )
        if not isinstance(value, str):
            raise ConfigError(f"'{where}' must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"unknown config keys {sorted(f'{where}{k}' for k in unknown)}; known: {sorted(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"invalid config{' ' + where.rstrip('.') if where else ''}: {exc}"
        ) from exc


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (lists for tuples) of a config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def apply_overrides(data: dict, overrides: list[str], leaves_only: bool = False) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict; with
    ``leaves_only`` a key naming a mapping in ``data`` (a whole section, whose other keys would
    fall back to their defaults) is refused."""
    import yaml

    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{p}' is not a section")
        if leaves_only and isinstance(node.get(parts[-1]), dict):
            raise ConfigError(
                f"override {item!r}: '{key.strip()}' is a whole section; set its keys one by one"
            )
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def with_overrides(cfg: T, overrides: list[str], leaves_only: bool = False) -> T:
    """``cfg`` (a config dataclass) with ``key=value`` overrides applied and checked against its
    schema (:func:`apply_overrides`, :func:`from_dict`)."""
    return from_dict(type(cfg), apply_overrides(to_dict(cfg), overrides, leaves_only))


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Read ``path`` (YAML) into ``cls`` with overrides; None starts from the defaults."""
    import yaml

    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config must be a mapping at the top level")
    data = apply_overrides(data, overrides or [])
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from exc


def config_hash(cfg: Any) -> str:
    """sha256 of the resolved config (for lineage)."""
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()
