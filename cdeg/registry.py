"""Every stage's configuration in one table: its schema, its shipped YAML and the function that resolves it.

Each entry's loader takes the user's part of the configuration in any of three forms and returns the
resolved, validated object the stage function accepts:

* ``None``: the shipped values;
* a mapping: keys of the shipped YAML to change (e.g. written inline in a study file); errors name each key
  by its full dotted path, prefixed with `where` (``segmentation.overrides.presets.fast.cpu.mri.epochs``),
  and the file the mapping came from (`source`);
* a path: a YAML file of such keys; errors name that file, and `where` (the study key that named the file)
  starts the message.

So ``cdeg run`` checks every section of a study before its first stage runs, with the same code each stage
uses when it is run on its own. The stage modules are imported only when their entry is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdeg.config import ConfigError, deep_merge, from_dict, load_yaml, shipped_config

#: What a loader accepts: None (shipped values), a mapping of keys to change, or a YAML file of them.
Source = Mapping[str, Any] | str | Path | None


@dataclass(frozen=True)
class StageConfig:
    """One stage's configuration.

    Attributes
    ----------
    name : str
        Registry key (synth, segment, radiomics, fit, check).
    shipped : tuple of str
        Its files in configs/ (the defaults; PyRadiomics has one per modality).
    schema : str
        Where the schema is declared (``module:attribute``).
    load : callable
        ``load(source=None, where="", source_file=None)``: the resolved, validated configuration.
    """

    name: str
    shipped: tuple[str, ...]
    schema: str
    load: Callable[..., Any]


@contextlib.contextmanager
def _named(where: str) -> Iterator[None]:
    """Prefix the message of a ConfigError raised for a separate file with the study key that named it."""
    try:
        yield
    except ConfigError as e:
        if not where:
            raise
        raise ConfigError(f"{where}: {e.message}", patient=e.patient, path=e.path) from None


def _shipped_over(name: str, data: Mapping[str, Any]) -> dict[str, Any]:
    return deep_merge(load_yaml(shipped_config(name)), data)


def load_synth(source: Source = None, where: str = "", source_file: str | Path | None = None) -> Any:
    """The synthetic-cohort generator's configuration (:class:`cdeg.synth.SynthConfig`), configs/synth.yaml."""
    from cdeg.synth import SECTIONS, load_synth_config, synth_config_from_data

    if not isinstance(source, Mapping):
        with _named(where):
            return load_synth_config(source)
    unknown = sorted(set(source) - set(SECTIONS))
    if unknown:
        named = ", ".join(f"{where}.{k}" if where else k for k in unknown)
        raise ConfigError(f"unknown key {named}; valid: {', '.join(SECTIONS)}", path=source_file)
    return synth_config_from_data(_shipped_over("synth.yaml", source), where, source_file)


def load_segment(source: Source = None, where: str = "", source_file: str | Path | None = None) -> Any:
    """Segmentation presets, prediction and post-processing options (:class:`SegmentConfig`), configs/segment.yaml."""
    from cdeg.segmentation.presets import load_segment_config

    if isinstance(source, Mapping):
        return load_segment_config(source, where=where, source=source_file)
    with _named(where):
        return load_segment_config(source)


def load_radiomics(
    source: Source = None, where: str = "", source_file: str | Path | None = None, modality: str = "mri"
) -> dict[str, Any]:
    """A PyRadiomics parameter set, validated against PyRadiomics' own schema.

    A mapping is a whole parameter set (PyRadiomics files are not layered); None is the shipped
    ``configs/radiomics_<modality>.yaml``.
    """
    from cdeg.features.radiomics_features import validate_params

    if source is None:
        from cdeg.features.extract import DEFAULT_PARAMS

        source = shipped_config(DEFAULT_PARAMS[modality])
    if isinstance(source, Mapping):
        try:
            return validate_params(source, where=where)
        except ConfigError as e:
            raise ConfigError(e.message, path=source_file) from None
    with _named(where):
        return validate_params(source)


def load_fit(source: Source = None, where: str = "", source_file: str | Path | None = None) -> Any:
    """Options of `cdeg fit` (:class:`cdeg.modeling.config.FitConfig`), configs/fit.yaml."""
    from cdeg.modeling.config import CONFIG_NAME, FitConfig, resolve_config

    if isinstance(source, Mapping):
        return from_dict(FitConfig, _shipped_over(CONFIG_NAME, source), where, source_file)
    with _named(where):
        return resolve_config(source)


def load_check(source: Source = None, where: str = "", source_file: str | Path | None = None) -> Any:
    """What a valid cohort looks like (:class:`cdeg.check.CheckConfig`), configs/check.yaml."""
    from cdeg.check import CheckConfig, load_check_config

    if isinstance(source, Mapping):
        return from_dict(CheckConfig, _shipped_over("check.yaml", source), where, source_file)
    with _named(where):
        return load_check_config(source)


#: Stage configuration name -> its entry. The one list of stage configurations.
REGISTRY: dict[str, StageConfig] = {
    "synth": StageConfig("synth", ("synth.yaml",), "cdeg.synth:SynthConfig", load_synth),
    "segment": StageConfig(
        "segment", ("segment.yaml",), "cdeg.segmentation.presets:SegmentConfig", load_segment
    ),
    "radiomics": StageConfig(
        "radiomics",
        ("radiomics_mri.yaml", "radiomics_xray.yaml"),
        "radiomics:getParameterValidationFiles",
        load_radiomics,
    ),
    "fit": StageConfig("fit", ("fit.yaml",), "cdeg.modeling.config:FitConfig", load_fit),
    "check": StageConfig("check", ("check.yaml",), "cdeg.check:CheckConfig", load_check),
}


def load_stage_config(
    name: str, source: Source = None, where: str = "", source_file: str | Path | None = None
) -> Any:
    """Resolve and validate stage configuration `name` (a :data:`REGISTRY` key) from `source`.

    Raises
    ------
    ConfigError
        The configuration is invalid; the message names the key by its dotted path.
    ValueError
        `name` is not a registry entry.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown stage configuration {name!r}; valid: {', '.join(REGISTRY)}")
    return REGISTRY[name].load(source, where=where, source_file=source_file)
