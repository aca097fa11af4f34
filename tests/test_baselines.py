"""The baselines beside the models: age alone and the age-blind degeneration count (nothing fitted)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cdeg.modeling.baselines import baseline_metrics, baseline_scores, degeneration_count
from sklearn.metrics import roc_auc_score


def test_degeneration_count_standardises_signs_and_counts_each_sign_once():
    X = pd.DataFrame(
        {
            # heights: lower = degenerated; two height measurements of one disc are one sign
            "mri__C4-C5__disc_height_middle_mm": [4.0, 6.0, 5.0],
            "mri__C4-C5__disc_height_index": [0.2, 0.4, 0.3],
            "mri__C4-C5__disc_csf_signal_ratio": [0.2, 0.6, 0.4],
            "mri__C5-C6__disc_height_middle_mm": [4.0, 6.0, np.nan],
            "mri__C5-C6__disc_angle_deg": [9.0, -9.0, 0.0],  # no direction: ignored
            "xray__C5-C6__disc_height_middle_mm": [1.0, 2.0, 3.0],  # one level only: no radiograph count
            "mri__C4-C5__disc_height_middle_mm__age_z": [9.0, 9.0, 9.0],  # age-adjusted: ignored (age-blind)
        },
        index=["a", "b", "c"],
    )
    count = degeneration_count(X)
    z = np.sqrt(1.5)  # the standardised values of (low, high, middle) are (-z, +z, 0)
    # a: C4-C5 height z, signal z -> z; C5-C6 height 1 (two values: -1, +1) -> mean (z + 1) / 2.
    assert count["a"] == pytest.approx((z + 1) / 2)
    assert count["b"] == pytest.approx(-(z + 1) / 2)
    assert np.isnan(count["c"])  # one disc with a value
    assert count.name == "degeneration_count"


def test_baseline_metrics_are_the_aucs_of_the_fixed_direction_scores():
    rng = np.random.default_rng(0)
    n = 200
    age = pd.Series(rng.uniform(20, 70, n))
    d = rng.normal(size=n)
    y = (d + rng.normal(0, 0.5, n) > 0.5).astype(int)
    X = pd.DataFrame(
        {
            f"mri__{lv}__disc_height_middle_mm": 6 - d + rng.normal(0, 0.5, n)
            for lv in ("C4-C5", "C5-C6", "C6-C7")
        }
    )
    X["lab__crp"] = rng.normal(size=n)
    scores = baseline_scores(X, age)
    out = baseline_metrics(y, scores)
    assert out["age"]["auc"] == pytest.approx(roc_auc_score(y, age))
    assert out["degeneration_count"]["auc"] > 0.8  # more degenerated = higher risk, without fitting
    lo, hi = out["degeneration_count"]["auc_ci"]
    assert lo < out["degeneration_count"]["auc"] < hi and out["degeneration_count"]["n"] == n
    assert set(out["definitions"]) == {"age", "degeneration_count"}
    # No age column and no disc measurement: nothing to report.
    assert baseline_metrics(y, baseline_scores(X[["lab__crp"]], None)) == {}


def test_validation_report_compares_the_model_with_the_count_of_the_same_cohort_only():
    from cdeg.modeling.report import baselines_block

    dev = {"degeneration_count": {"auc": 0.9, "auc_ci": [0.8, 1.0], "n": 50}}
    html = baselines_block(dev, {}, primary=("xgboost", 0.7))  # no baseline in the external cohort
    assert "AUC external" not in html and html.count("<td>") == 2  # one row, two cells
    assert "beat" not in html and "above" not in html  # no external AUC against a development count
    ext = {"degeneration_count": {"auc": 0.6, "auc_ci": [0.5, 0.7], "n": 80}}
    html = baselines_block(dev, ext, primary=("xgboost", 0.7))
    assert "AUC external" in html and "above the age-blind degeneration count (0.600, external)" in html
