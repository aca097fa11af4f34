"""Baselines a reviewer expects beside the models: age alone, and the age-blind degeneration count.

Neither is fitted to the outcome. Each is a score whose direction is fixed before the study (older = higher
risk; more degenerated = higher risk), so its AUC needs no cross-validation and means the same in the
development and the external cohort:

* ``age``: the patient's age;
* ``degeneration_count``: how degenerated the discs are, ignoring age. Per disc, each sign of degeneration of
  :data:`cdeg.measures.DEGENERATION_KIND` (height loss, signal loss) is the mean of its measurements,
  standardised over the cohort's patients and signed so that degeneration is positive
  (:data:`cdeg.measures.DEGENERATION_SIGN`); the disc's value is the mean of its signs, the patient's the mean
  over the discs and over the modalities. It is :class:`cdeg.modeling.preprocess.DegenerationScore` without the
  age norm: the number of degenerated discs a radiologist would count.

A model that predicts "degeneration beyond age" must beat both: age alone says nothing about it by
definition, and the age-blind count is what a model learns when it merely counts degenerated discs.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

#: The baselines, in report order, and their words.
BASELINES: dict[str, str] = {
    "age": "age alone",
    "degeneration_count": "degeneration count (age-blind)",
}
#: What each baseline is, in one line (metrics.json and the reports).
DEFINITIONS: dict[str, str] = {
    "age": "AUC of age as the score (older = higher risk); nothing fitted",
    "degeneration_count": (
        "AUC of the mean over discs and modalities of disc height loss and signal loss, each measurement "
        "standardised over the cohort and signed so that degeneration is positive, age ignored; nothing fitted"
    ),
}
#: Fewest disc levels with a value for a patient's count (as the degeneration score).
MIN_LEVELS = 2


def degeneration_count(features: pd.DataFrame) -> pd.Series:
    """The age-blind degeneration count of each row of a features table (NaN without enough discs)."""
    from cdeg.modeling.preprocess import degeneration_mean, degeneration_members

    members = degeneration_members(features.columns, age_adjusted=False)
    used = sorted(
        {
            c
            for levels in members.values()
            for kinds in levels.values()
            for cols in kinds.values()
            for c, _ in cols
        }
    )
    Z = features[used].apply(_z)
    per_modality = [
        degeneration_mean(Z, levels, MIN_LEVELS) for levels in members.values() if len(levels) >= MIN_LEVELS
    ]
    if not per_modality:
        return pd.Series(np.nan, index=features.index, name="degeneration_count")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a patient without any modality: missing
        out = np.nanmean(np.column_stack(per_modality), axis=1)
    return pd.Series(out, index=features.index, name="degeneration_count")


def _z(values: pd.Series) -> pd.Series:
    """Standardised over the cohort (missing values left out); constant or empty: missing."""
    v = pd.to_numeric(values, errors="coerce")
    sd = v.std(ddof=0)
    return (v - v.mean()) / sd if sd > 0 else v * np.nan


def baseline_scores(features: pd.DataFrame, age: pd.Series | None) -> dict[str, pd.Series]:
    """The score of each baseline for the rows of `features` (age aligned to them); a baseline without any
    value (no age column, no disc measurement) is left out."""
    scores: dict[str, pd.Series] = {}
    if age is not None:
        scores["age"] = pd.to_numeric(age.reindex(features.index), errors="coerce")
    scores["degeneration_count"] = degeneration_count(features)
    return {k: v for k, v in scores.items() if v.notna().any()}


def baseline_metrics(y: np.ndarray, scores: dict[str, pd.Series]) -> dict[str, Any]:
    """AUC with its DeLong 95% CI of each baseline score, on the patients with a value (``n``), and the
    definitions; {} when there is none."""
    from cdeg.modeling import metrics as M

    out: dict[str, Any] = {}
    for name, score in scores.items():
        s = score.to_numpy(dtype=float)
        ok = np.isfinite(s)
        yy = np.asarray(y)[ok]
        if ok.sum() < 4 or len(np.unique(yy)) < 2:
            continue
        auc, lo, hi, _ = M.auc_ci(yy, s[ok])
        out[name] = {"auc": float(auc), "auc_ci": [float(lo), float(hi)], "n": int(ok.sum())}
    if out:
        out["definitions"] = {k: DEFINITIONS[k] for k in out}
    return out
