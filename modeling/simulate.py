"""Simulated wide tables for tests and benchmarks: many noisy, correlated image features, a few clinical columns
and a binary target driven by a planted signal in a handful of columns (or by nothing at all).

The tables look like `cdeg extract` output (``<modality>__<level>__<feature>`` columns) joined to a clinical
table with post-operative outcome columns that must never be used as predictors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cdeg.cohort import CLINICAL_CSV
from cdeg.io import write_table
from cdeg.outputs import FeatureFolder

LEVELS = ("C3-C4", "C4-C5", "C5-C6", "C6-C7")
_RADIOMICS = (
    "original_shape_MeshVolume",
    "original_shape_SurfaceArea",
    "original_shape_Sphericity",
    "original_firstorder_Mean",
    "original_firstorder_Median",
    "original_firstorder_Entropy",
    "original_glcm_Contrast",
    "original_glcm_Correlation",
    "original_glrlm_RunEntropy",
    "original_firstorder_90Percentile",
)
_MEASURES = ("disc_height_middle_mm", "disc_height_anterior_mm", "disc_height_index", "disc_angle_deg")
#: The planted signal (when signal > 0): disc height lowers the risk, MRI disc volume and age raise it.
SIGNAL_COLUMNS = ("xray__C5-C6__disc_height_middle_mm", "mri__C5-C6__original_shape_MeshVolume")


@dataclass(frozen=True)
class WideTables:
    """Paths and frames of one simulated data set."""

    features: pd.DataFrame
    clinical: pd.DataFrame
    features_path: Path | None = None
    clinical_path: Path | None = None


def feature_names(n_features: int) -> list[str]:
    """Column names like `cdeg extract` writes, cycling through modalities, levels and features."""
    names = [f"xray__{lv}__{m}" for lv in LEVELS for m in _MEASURES]
    names += [f"mri__{lv}__{f}" for lv in LEVELS for f in _RADIOMICS]
    k = 0
    while len(names) < n_features:
        names.append(f"mri__{LEVELS[k % len(LEVELS)]}__wavelet-LLH_glcm_Feature{k}")
        k += 1
    names = names[:n_features]
    for k, s in enumerate(SIGNAL_COLUMNS):  # small tables keep the planted columns
        if s not in names:
            names[-(k + 1)] = s
    return names


def simulate(
    n: int = 109,
    n_features: int = 1000,
    signal: float = 1.5,
    prevalence: float = 0.25,
    missing: float = 0.02,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and clinical frames (with ``patient_id`` first); target column ``accelerated``.

    Parameters
    ----------
    signal : float
        Log-odds per SD of each planted column; 0 gives a target that is pure noise.
    missing : float
        Share of feature values set missing at random.
    """
    rng = np.random.default_rng(seed)
    ids = [f"P{i:04d}" for i in range(n)]
    names = feature_names(n_features)
    # Correlated blocks: 20 latent factors, each column loads on one, plus noise; some near-duplicates.
    # Units (loadings, scales, offsets) come from a fixed generator: cohorts of any seed share them, like two
    # centres measuring the same quantities.
    units = np.random.default_rng(20240601)
    load = units.integers(0, 20, n_features)
    weight = units.uniform(0.3, 1.0, n_features)
    scale, offset = units.uniform(0.5, 20.0, n_features), units.uniform(0, 100, n_features)
    factors = rng.normal(size=(n, 20))
    A = (factors[:, load] * weight + rng.normal(size=(n, n_features))) * scale + offset
    feat = pd.DataFrame(A, columns=names)
    age = np.clip(rng.normal(47, 9, n), 18, 65).round(0)
    sex = rng.choice(["M", "F"], n, p=[0.55, 0.45])
    smoking = rng.choice(["current", "former", "never"], n, p=[0.3, 0.3, 0.4])
    s = np.zeros(n)
    for c in SIGNAL_COLUMNS:
        z = (feat[c] - feat[c].mean()) / feat[c].std()
        s += (-1 if "height" in c else 1) * z.to_numpy()
    s = signal * s + 0.3 * signal * (age - 47) / 9
    lp = np.log(prevalence / (1 - prevalence)) + s
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-lp))).astype(int)
    mask = rng.uniform(size=feat.shape) < missing
    feat = feat.mask(mask)
    feat.insert(0, "patient_id", ids)
    ndi0 = np.clip(rng.normal(44, 15, n), 0, 100).round(0)
    clin = pd.DataFrame(
        {
            "patient_id": ids,
            "age": age,
            "sex": sex,
            "bmi": rng.normal(27, 4, n).round(1),
            "smoking": smoking,
            "ndi_baseline": ndi0,
            # Post-operative outcomes, correlated with the target: a leak if ever used as predictors.
            "ndi_2y": np.clip(ndi0 * 0.4 + 15 * y + rng.normal(0, 8, n), 0, 100).round(0),
            "poor_outcome_2y": (rng.uniform(size=n) < 0.2 + 0.6 * y).astype(int),
            "accelerated": y,
        }
    )
    return feat, clin


def write_tables(folder: str | Path, **kwargs: object) -> WideTables:
    """Simulate (see :func:`simulate`) and write ``features.csv`` and ``clinical.csv`` into `folder`."""
    folder = Path(folder)
    feat, clin = simulate(**kwargs)  # type: ignore[arg-type]
    features, clinical = FeatureFolder(folder).features_csv, folder / CLINICAL_CSV
    write_table(features, feat)
    write_table(clinical, clin)
    return WideTables(feat, clin, features, clinical)
