"""The operational label of a synthetic cohort: `cdeg label`'s rule applied to the true measurements.

In the generator, ``accelerated = u > threshold`` for a predisposition ``u`` no study observes. A real study
defines its label operationally instead (:mod:`cdeg.modeling.label`): an age- and sex-standardised
degeneration score above a centile of a population cohort. truth/patients.csv's ``accelerated_operational``
is that label computed by the same code from the true measurements (a perfect reading of the images), with
the norms and centiles of a large population-profile sample drawn without images, so a synthetic study can
show how far the operational label is from the latent truth it stands for.

True measurements (truth/levels.csv, disc rows): the disc heights as they are; the disc height index = middle
disc height / AP depth of the vertebral body above (:mod:`cdeg.measures`); the disc/CSF T2 signal ratio is
``t2_signal``, which the renderer multiplies into the nucleus signal against a fixed CSF signal, so the ratio
is proportional to it and its SD from the norm (scale-free) is the same.

The reference sample is ``ceiling.n`` population-profile patients (configs/synth.yaml, 20,000 by default)
drawn with seed :data:`REFERENCE_SEED`, above any study seed. Its norms and thresholds are cached as JSON in
``$CDEG_CACHE_DIR/oplabel/`` (default ``~/.cache/cdeg``) under the SHA-256 of everything they depend on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cdeg import __version__
from cdeg.cohort import ID_COLUMN
from cdeg.config import to_dict
from cdeg.modeling.label import LabelRule, score
from cdeg.synth.ceiling import CACHE_ENV, CEILING_SEED
from cdeg.synth.model import CohortTables, ModelConfig, sample_cohort

log = logging.getLogger(__name__)

#: The truth/patients.csv column.
OPERATIONAL_COLUMN = "accelerated_operational"
#: The rule: `cdeg label`'s defaults (MRI disc height index and disc/CSF signal ratio, 90th centile, by sex).
RULE = LabelRule()
REFERENCE_PROFILE = "population"
#: Seed of the reference sample: above every study seed, and not the ceiling's large cohort.
REFERENCE_SEED = CEILING_SEED + 1
# Bump when the true measurements or the rule's computation change: cached references are then refitted.
_METHOD_VERSION = 1
#: truth/levels.csv column of each measurement the rule may read (disc_height_index is derived).
TRUE_COLUMNS: dict[str, str] = {
    "disc_height_anterior_mm": "disc_height_anterior_mm",
    "disc_height_middle_mm": "disc_height_middle_mm",
    "disc_height_posterior_mm": "disc_height_posterior_mm",
    "disc_csf_signal_ratio": "t2_signal",
}


def true_features(tables: CohortTables, rule: LabelRule = RULE) -> pd.DataFrame:
    """Age, sex and the rule's true measurements per disc (``<modality>__<disc>__<measurement>``), one row per
    patient, indexed by patient id."""
    lv = tables.levels
    discs = lv[lv["structure"] == "disc"].set_index([ID_COLUMN, "level"])
    bodies = lv[lv["structure"] == "vertebra"].set_index([ID_COLUMN, "level"])["body_depth_mm"]
    out = {}
    for m in rule.measurements:
        if m == "disc_height_index":
            upper = [str(d).split("-")[0] for d in discs.index.get_level_values("level")]
            above = bodies.reindex(pd.MultiIndex.from_arrays([discs.index.get_level_values(0), upper]))
            values = discs["disc_height_middle_mm"].to_numpy(float) / above.to_numpy(float)
        elif m in TRUE_COLUMNS:
            values = discs[TRUE_COLUMNS[m]].to_numpy(float)
        else:
            raise ValueError(
                f"no true value of {m} in the synthetic truth; valid: disc_height_index, {', '.join(TRUE_COLUMNS)}"
            )
        wide = pd.Series(values, index=discs.index).unstack("level")
        for d in wide.columns:
            out[f"{rule.modality}__{d}__{m}"] = wide[d]
    pat = tables.patients.set_index(ID_COLUMN)
    return pd.concat([pat[[rule.age_column, rule.sex_column]], pd.DataFrame(out)], axis=1)


def _key(cfg: ModelConfig, n: int, rule: LabelRule) -> str:
    data = {
        "model": to_dict(cfg),
        "n": n,
        "seed": REFERENCE_SEED,
        "rule": asdict(rule),
        "method": _METHOD_VERSION,
        "cdeg": __version__,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def reference(cfg: ModelConfig, n: int, rule: LabelRule = RULE) -> dict[str, Any]:
    """The rule's norms (stratum -> fitted AgeNorm) and thresholds (stratum -> score centile) on the reference
    sample: from the cache, else fitted and cached."""
    from cdeg.modeling.preprocess import from_dict

    key = _key(cfg, n, rule)
    if key not in _FITTED:
        _FITTED[key] = _reference_data(key, cfg, n, rule)
    data = _FITTED[key]
    return {"norms": {s: from_dict(d) for s, d in data["norms"].items()}, "thresholds": data["thresholds"]}


#: The references fitted or loaded in this process, by key (each synthesize call would otherwise read the file).
_FITTED: dict[str, dict[str, Any]] = {}


def cache_path(key: str) -> Path:
    """``$CDEG_CACHE_DIR/oplabel/<key>.json`` (default ``~/.cache/cdeg/oplabel``)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cdeg"
    return Path(root) / "oplabel" / f"{key[:16]}.json"


def _reference_data(key: str, cfg: ModelConfig, n: int, rule: LabelRule) -> dict[str, Any]:
    from cdeg.io import atomic_path

    path = cache_path(key)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("key") == key:
                return data
        except (OSError, ValueError) as e:  # our own cache file: whatever is wrong, the cure is a refit
            log.warning("the operational label cache %s cannot be used (%s); fitting again", path, e)
    data = _fit_reference(cfg, n, rule)
    data["key"] = key
    try:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(data), encoding="utf-8")
    except OSError as e:
        log.warning("could not cache the operational label reference in %s (%s)", path, e)
    return data


def _fit_reference(cfg: ModelConfig, n: int, rule: LabelRule) -> dict[str, Any]:
    from cdeg.modeling.label import _thresholds, fit_norms

    sample = true_features(sample_cohort(cfg, REFERENCE_PROFILE, n, REFERENCE_SEED), rule)
    norms = fit_norms(sample, rule)
    thresholds = _thresholds(score(sample, rule, norms), rule, Path("<reference sample>"))
    return {"norms": {s: nm.to_dict() for s, nm in norms.items()}, "thresholds": thresholds}


def operational_labels(cfg: ModelConfig, tables: CohortTables, n: int, rule: LabelRule = RULE) -> pd.Series:
    """The operational label of each patient of `tables` (truth/patients.csv order; nullable 0/1): empty for a
    patient without an image of the rule's modality."""
    ref = reference(cfg, n, rule)
    cohort = true_features(tables, rule)
    scores = score(cohort, rule, ref["norms"])
    thr = scores["stratum"].map(ref["thresholds"]).astype(float)
    label = pd.array(np.where(scores["score"] > thr, 1, 0), dtype="Int64")
    label[~np.isfinite(scores["score"].to_numpy(float))] = pd.NA
    has = tables.patients.set_index(ID_COLUMN)[f"has_{rule.modality}"].reindex(cohort.index).to_numpy() == 1
    label[~has] = pd.NA
    out = pd.Series(label, index=cohort.index, name=OPERATIONAL_COLUMN)
    return out.reindex(tables.patients[ID_COLUMN].to_numpy())
