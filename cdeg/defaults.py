"""Defaults of a stage's options, read from its shipped YAML in ``configs/``: the one place they are written.

An option dataclass declares each field's type, documentation and range with :func:`doc_field`, and no value.
:func:`shipped_defaults` makes every field default to the value the shipped file holds in the class's section,
so e.g. ``ModelConfig()`` (configs/synth.yaml) or ``PostprocessOptions()`` (configs/segment.yaml) is the
shipped configuration and the file documents every default (the literature or modelling choice behind each
number). The configuration loaders start from the same files, so a user's YAML needs only the keys it changes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from cdeg.config import ConfigError, from_dict, load_yaml, shipped_config

T = TypeVar("T")

#: The shipped configuration file of the synthetic generator, the default of ``file`` below (in configs/).
SHIPPED_FILE = "synth.yaml"


def doc_field(help: str, range: tuple[float | None, float | None] | None = None, **meta: Any) -> Any:
    """A dataclass field with its documentation (and optional range or choices) in the metadata.

    It has no default of its own: :func:`shipped_defaults` gives it the shipped value.
    """
    md: dict[str, Any] = {"help": help, **meta}
    if range is not None:
        md["range"] = range
    return dataclasses.field(metadata=md)


def shipped_defaults(section: str, file: str = SHIPPED_FILE) -> Callable[[type[T]], type[T]]:
    """Class decorator, below ``@dataclass``: each field defaults to its value in configs/`file`.

    Parameters
    ----------
    section : str
        Dotted path of the class's mapping in the shipped file (``"model.disc"``). Every field of the
        class must be declared with :func:`doc_field` and given in that mapping.
    file : str
        The shipped YAML (``synth.yaml``, ``segment.yaml``).
    """

    def decorate(cls: type[T]) -> type[T]:
        for name in cls.__annotations__:
            f = cls.__dict__.get(name)
            if not isinstance(f, dataclasses.Field):
                raise TypeError(f"{cls.__name__}.{name} must be declared with doc_field()")
            f.default_factory = functools.partial(_default, cls, section, name, file)
        return cls

    return decorate


def shipped_section(section: str, file: str = SHIPPED_FILE) -> dict[str, Any]:
    """The mapping at dotted `section` of the shipped file (``"model"``, ``"render.mri"``)."""
    path = shipped_config(file)
    node: Any = load_yaml(path)
    for key in section.split("."):
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            raise ConfigError(f"the shipped file has no mapping {section}", path=path)
        node = node[key]
    return node


def _default(cls: type, section: str, name: str, file: str) -> Any:
    """The default of field `name`: its value in the shipped `section` (a fresh copy of a mapping)."""
    value = getattr(_shipped(cls, section, file), name)
    return dict(value) if isinstance(value, dict) else value


@functools.cache
def _shipped(cls: type, section: str, file: str) -> Any:
    """`cls` built from the shipped `section`, which must give every field (read once per class)."""
    node = shipped_section(section, file)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in node]
    if missing:
        raise ConfigError(
            f"{section} lacks {', '.join(missing)}; the shipped file must give every default",
            path=shipped_config(file),
        )
    return from_dict(cls, node, section, shipped_config(file))
