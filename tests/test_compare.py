"""Model comparison on cross-validation folds, bootstrap intervals, permutation tests (cdeg.modeling.compare)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from cdeg.modeling import compare as C
from cdeg.modeling import metrics as M
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RepeatedStratifiedKFold


def _oof(n: int = 109, repeats: int = 2, folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """An out-of-fold table shaped like nested_cv's: a good model, a weaker one and a noise column."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(2 * x - 0.8)))).astype(int)
    rskf = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    fold = np.empty((repeats, n), int)
    for i, (_, te) in enumerate(rskf.split(np.zeros(n), y)):
        fold[i // folds, te] = i % folds
    rows = []
    for r in range(repeats):
        jitter = rng.normal(scale=0.3, size=n)
        rows.append(
            pd.DataFrame(
                {
                    "patient_id": [f"P{i:03d}" for i in range(n)],
                    "target": y,
                    "repeat": r,
                    "fold": fold[r],
                    "good": 1 / (1 + np.exp(-(2 * x - 0.8 + jitter))),
                    "weak": 1 / (1 + np.exp(-(0.7 * x - 0.8 + jitter))),
                    "noise": rng.uniform(0.1, 0.6, n),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


# -- corrected resampled t-test ----------------------------------------------------------------------------------
def test_corrected_ttest_matches_hand_computation():
    # d = [.02, .05, -.01, .04]: mean .025, s^2 = (25 + 625 + 1225 + 225)e-6 / 3 = 700e-6;
    # corrected variance (1/4 + 20/80) * 700e-6 = 350e-6, se = sqrt(3.5e-4); t = .025 / se = 1.33631 on 3 df.
    res = C.corrected_ttest([0.02, 0.05, -0.01, 0.04], n_train=80, n_test=20)
    assert res["difference"] == pytest.approx(0.025)
    assert res["se"] == pytest.approx(math.sqrt(3.5e-4))
    assert res["se_naive"] == pytest.approx(math.sqrt(700e-6 / 4))
    assert res["t"] == pytest.approx(1.3363062)
    assert res["df"] == 3
    assert res["p_value"] == pytest.approx(0.2737648, abs=1e-6)
    half = 3.1824463 * math.sqrt(3.5e-4)
    assert res["ci"] == pytest.approx([0.025 - half, 0.025 + half])


def test_corrected_se_is_larger_than_naive():
    fd = C.fold_differences(_oof(), "good", "weak", "auc")
    res = C.corrected_ttest(fd.differences, fd.n_train, fd.n_test)
    assert res["n_folds"] == 10
    assert res["se"] > res["se_naive"] * 1.5  # sqrt((1/10 + 1/4) / (1/10)) = 1.87 for 5-fold


def test_identical_models_give_zero_difference_and_p_one():
    oof = _oof()
    oof["copy"] = oof["good"]
    for metric in ("auc", "brier"):
        res = C.cv_ttest(oof, "copy", "good", metric)
        assert res["difference"] == 0
        assert res["p_value"] == 1.0
        assert res["ci"] == [0.0, 0.0]


def test_better_model_wins_on_auc_and_brier():
    rows = C.compare_models(_oof(), "target", ["good", "weak", "noise"], reference="noise")
    by = {(r["model"], r["metric"]): r for r in rows}
    assert set(by) == {("good", "auc"), ("good", "brier"), ("weak", "auc"), ("weak", "brier")}
    assert by["good", "auc"]["difference"] > 0.2 and by["good", "auc"]["p_value"] < 0.01
    assert by["good", "brier"]["difference"] < 0  # lower Brier is better
    assert by["good", "auc"]["delong_p_value"] < 0.01
    assert by["good", "auc"]["delong_ci"][0] > 0
    assert by["good", "brier"]["delong_difference"] is None
    json.dumps(rows, allow_nan=False)


def test_delong_part_matches_compare_repeats():
    oof = _oof()
    row = C.compare_models(oof, "target", ["good"], "weak", metrics=("auc",))[0]
    y, P1 = C.repeat_predictions(oof, "good")
    _, P2 = C.repeat_predictions(oof, "weak")
    assert row["delong_difference"] == pytest.approx(M.compare_repeats(y, P1, P2)["auc_difference"])


def test_single_class_fold_is_skipped_and_counted():
    oof = _oof()
    one = (oof["repeat"] == 0) & (oof["fold"] == 0)
    oof.loc[one, "target"] = 0
    res = C.cv_ttest(oof, "good", "weak", "auc")
    assert res["skipped_folds"] == 1 and res["n_folds"] == 9
    assert C.cv_ttest(oof, "good", "weak", "brier")["skipped_folds"] == 0


def test_repeats_out_of_order_need_the_id_column():
    oof = _oof()
    shuffled = pd.concat([oof[oof["repeat"] == 0], oof[oof["repeat"] == 1].sample(frac=1, random_state=1)])
    with pytest.raises(ValueError, match="id_col"):
        C.repeat_predictions(shuffled, "good")
    y, P = C.repeat_predictions(shuffled, "good", id_col="patient_id")
    y0, P0 = C.repeat_predictions(oof, "good")
    assert np.array_equal(y, y0) and np.allclose(P[1], P0[1])


def test_unknown_metric_names_the_valid_ones():
    with pytest.raises(ValueError, match="auc, brier"):
        C.compare_models(_oof(), "target", ["good"], "weak", metrics=("accuracy",))


# -- bootstrap -------------------------------------------------------------------------------------------------
def test_bootstrap_ci_contains_estimate_and_is_seeded():
    oof = _oof()
    res = C.bootstrap_oof(oof, "weak", n_boot=300, seed=3)
    y, P = C.repeat_predictions(oof, "weak")
    ref = M.summarize_repeats(y, P)
    for name in ("brier", "calibration_intercept", "calibration_slope"):
        lo, hi = res[name]["ci"]
        assert lo < res[name]["estimate"] < hi
        assert res[name]["estimate"] == pytest.approx(ref[name])
    assert res == C.bootstrap_oof(oof, "weak", n_boot=300, seed=3)
    assert res != C.bootstrap_oof(oof, "weak", n_boot=300, seed=4)
    json.dumps(res, allow_nan=False)


def test_bootstrap_of_1000_replicates_on_109_patients_is_quick():
    import time

    oof = _oof()
    t0 = time.perf_counter()
    res = C.bootstrap_oof(oof, "good", n_boot=1000, seed=0)
    assert time.perf_counter() - t0 < 20  # about 1-2 s on one core; generous for shared CI machines
    assert res["n_failed"] == 0


# -- permutation test ------------------------------------------------------------------------------------------
def _table(signal: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(109, 4))
    y = (rng.uniform(size=109) < 1 / (1 + np.exp(-(signal * X[:, 0] - 0.8)))).astype(int)
    return X, y


def _score(X: np.ndarray):
    return lambda yy: C.cheap_cv_auc(X, yy, lambda: LogisticRegression(solver="liblinear"), folds=5, seed=0)


def test_permutation_test_finds_planted_signal():
    X, y = _table(signal=2.0)
    res = C.permutation_test(_score(X), y, n_permutations=39, seed=0)
    assert res["observed"] > 0.75
    assert res["p_value"] == 1 / 40  # no shuffle reaches the real AUC
    assert len(res["null"]) == 39
    json.dumps(res, allow_nan=False)


def test_permutation_test_on_noise_is_not_small():
    X, y = _table(signal=0.0)
    res = C.permutation_test(_score(X), y, n_permutations=39, seed=0)
    assert res["p_value"] > 0.1
    assert res == C.permutation_test(_score(X), y, n_permutations=39, seed=0)


def test_cheap_cv_auc_takes_a_dataframe():
    X, y = _table(signal=2.0)
    a = C.cheap_cv_auc(pd.DataFrame(X), y, lambda: LogisticRegression(solver="liblinear"))
    assert a == pytest.approx(C.cheap_cv_auc(X, y, lambda: LogisticRegression(solver="liblinear")))


def test_constant_nonzero_difference_is_significant_and_json_safe():
    res = C.corrected_ttest([0.1, 0.1, 0.1, 0.1], n_train=80, n_test=20)
    assert res["p_value"] == 0.0 and res["t"] is None and res["ci"] == pytest.approx([0.1, 0.1])
    json.dumps(res, allow_nan=False)
