"""Small two-table inputs of `cdeg fit` (features + clinical) with named columns and a planted signal.

Column names follow `cdeg extract`: ``xray__<level>__<measurement or PyRadiomics feature>``, so the feature
tiers, age norms and level summaries see them as they would real features. Tests import this module from
here (pytest puts tests/ on sys.path), never from another test module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

LEVELS = ("C3-C4", "C4-C5", "C5-C6", "C6-C7")
RADIOMICS = ("original_glcm_Correlation", "original_firstorder_Mean", "original_shape2D_Elongation")


def measurement_signal_tables(
    folder: Path, n: int = 90, seed: int = 3, effect: float = 1.2, prefix: str = "P"
) -> tuple[Path, Path]:
    """features.csv and clinical.csv: disc heights lower by `effect` mm when accelerated = 1 (and with age),
    radiomics columns pure noise. Returns the two paths."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    age = rng.integers(30, 80, n)
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    feat: dict[str, object] = {"patient_id": ids}
    for lv in LEVELS:
        feat[f"xray__{lv}__disc_height_middle_mm"] = 7.0 - 0.03 * age - effect * y + rng.normal(0, 0.8, n)
        for k, name in enumerate(RADIOMICS):
            feat[f"xray__{lv}__{name}"] = rng.normal(k, 1, n)
    clin = pd.DataFrame({"patient_id": ids, "age": age, "sex": rng.choice(["M", "F"], n), "accelerated": y})
    folder.mkdir(parents=True, exist_ok=True)
    f, c = folder / "features.csv", folder / "clinical.csv"
    pd.DataFrame(feat).to_csv(f, index=False)
    clin.to_csv(c, index=False)
    return f, c
