"""Configuration in three layers: dataclass defaults < a YAML file < keyword overrides.

Each stage declares its options as a frozen dataclass whose fields carry their documentation in
``field(metadata={"help": ...})`` and, where useful, a range or a set of choices. This module turns
YAML/dicts into those dataclasses, checking every key and type on the way, so a misspelt key or a
value of the wrong type is reported with its dotted path instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cdeg.errors import CdegError

T = TypeVar("T")


class ConfigError(CdegError):
    """A configuration file or override is invalid."""


def shipped_config(name: str) -> Path:
    """Path of a configuration file shipped in configs/ (``shipped_config("synth.yaml")``)."""
    path = Path(str(resources.files("cdeg.configs").joinpath(name)))
    if not path.is_file():
        available = sorted(p.name for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"no shipped config {name!r}; available: {', '.join(available)}")
    return path


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an unreadable or non-mapping file raises ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("configuration file not found", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {str(e).splitlines()[0]}", path=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("a configuration file must hold a mapping at the top level", path=path)
    return data


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge `override` into a copy of `base` (mappings merge, everything else replaces)."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def from_dict(cls: type[T], data: Mapping[str, Any], path: str = "", source: str | Path | None = None) -> T:
    """Build dataclass `cls` from a mapping, validating keys, types, ranges and choices.

    Missing keys take the dataclass defaults; unknown keys raise ConfigError listing the valid ones.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path or 'configuration'} must be a mapping, got {type(data).__name__}", path=source
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(_unknown_keys(sorted(map(str, unknown)), list(fields), path), path=source)
    kwargs = {}
    for name, value in data.items():
        where = f"{path}.{name}" if path else name
        value = _convert(hints[name], value, where, source)
        _check_meta(fields[name], value, where, source)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, CdegError):
            raise
        raise ConfigError(f"{path or cls.__name__}: {e}", path=source) from None


def _unknown_keys(unknown: list[str], valid: list[str], path: str) -> str:
    """The message for misspelt keys: each by its full dotted name, a close valid key when there is one."""
    import difflib

    named = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=1)
        named.append(f"{path}.{key}" if path else key)
        if close:
            named[-1] += f" (did you mean {close[0]}?)"
    return f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(named)}; valid: {', '.join(valid)}"


def _check_meta(f: dataclasses.Field, value: Any, where: str, source: Any) -> None:
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{where} = {value!r}; valid: {', '.join(map(str, meta['choices']))}", path=source)
    lo, hi = meta.get("range", (None, None))
    values = value if isinstance(value, (tuple, list)) else [value]
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ConfigError(f"{where} = {v!r} is outside [{lo}, {hi}]", path=source)


def _convert(tp: Any, value: Any, where: str, source: Any) -> Any:  # noqa: C901 - one branch per type form
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where, source)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, source)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} = {value!r}; valid: {', '.join(map(str, args))}", path=source)
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}", path=source)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where} must have {len(args)} items, got {len(value)}", path=source)
            return tuple(
                _convert(a, v, f"{where}[{i}]", source)
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        item = args[0] if args else Any
        conv = [_convert(item, v, f"{where}[{i}]", source) for i, v in enumerate(value)]
        return tuple(conv) if origin is tuple else conv
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}", path=source)
        kt, vt = args if args else (Any, Any)
        return {
            _convert(kt, k, where, source): _convert(vt, v, f"{where}.{k}", source) for k, v in value.items()
        }
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}", path=source)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}", path=source)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}", path=source)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}", path=source)
        return value
    if tp is Path:
        return Path(value)
    return value


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> T:
    """Resolve a configuration: `defaults` (or the dataclass defaults) < YAML `path` < `overrides`.

    `overrides` may use dotted keys (``{"mri.noise_sd": 0.02}``).
    """
    data: dict[str, Any] = dict(defaults or {})
    if path is not None:
        data = deep_merge(data, load_yaml(path))
    if overrides:
        data = deep_merge(data, _undot(overrides))
    return from_dict(cls, data, source=path)


def _undot(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def to_dict(obj: Any) -> Any:
    """A dataclass configuration as plain dicts/lists (for YAML/JSON output and manifests)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_yaml(obj: Any) -> str:
    """A configuration dataclass as YAML text (what `--print-config` shows)."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=None, width=100)
