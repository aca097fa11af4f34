"""Tests of the variable-reducing preprocessing steps (cdeg.modeling.preprocess): age norms, level summaries,
near-constant and stability filters, correlated groups. Each fitted inside the training folds only: a noise
target stays at AUC 0.5, a planted one is found, and a test patient never changes what was fitted."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from cdeg.modeling import preprocess as pp
from cdeg.modeling.config import PreprocessOptions, resolve_config
from cdeg.modeling.models import TabularClassifier
from cdeg.modeling.names import describe
from cdeg.modeling.simulate import simulate
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from cdeg import measures
from cdeg.errors import CdegError

XGB = {"n_estimators": 60, "max_depth": 2, "learning_rate": 0.1}
HEIGHT = "xray__C5-C6__disc_height_middle_mm"


def _wide(n: int = 100, n_features: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A realistic wide table: clinical columns (age, sex, index level, ...) joined to measurement and radiomics
    columns; the simulated target."""
    feat, clin = simulate(n=n, n_features=n_features, signal=0.0, seed=seed)
    rng = np.random.default_rng(seed)
    clin["index_level"] = rng.choice(["C4-C5", "C5-C6", "C6-C7"], n, p=[0.15, 0.45, 0.4])
    X = pd.concat([clin.drop(columns=["ndi_2y", "poor_outcome_2y", "accelerated"]), feat], axis=1)
    return X.set_index("patient_id").drop(columns=[]), clin["accelerated"].to_numpy()


def _cv_auc(X: pd.DataFrame, y: np.ndarray, options: PreprocessOptions, kind: str = "xgboost") -> float:
    p = np.zeros(len(y))
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        clf = TabularClassifier(kind, params=XGB if kind == "xgboost" else {"C": 0.1}, preprocess=options)
        p[te] = clf.fit(X.iloc[tr], y[tr]).predict_proba(X.iloc[te])[:, 1]
    return float(roc_auc_score(y, p))


def _aging(n: int, seed: int, slope: float = -0.04) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and clinical tables where disc height falls with age and is larger in men (sd 0.3 mm)."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(25, 80, n).round(0)
    sex = rng.choice(["M", "F"], n)
    ids = [f"R{i:04d}" for i in range(n)]
    height = 7 + slope * age + 0.5 * (sex == "M") + rng.normal(0, 0.3, n)
    feat = pd.DataFrame(
        {HEIGHT: height, "xray__C5-C6__original_glcm_Correlation": rng.normal(size=n)}, index=ids
    )
    clin = pd.DataFrame({"age": age, "sex": sex}, index=ids)
    return feat, clin


# --- leakage: noise stays noise, signal is found -----------------------------------------------------------


def test_noise_target_gives_auc_near_half_with_all_steps():
    X, _ = _wide(seed=5)
    y = np.random.default_rng(123).permutation(np.r_[np.ones(35, int), np.zeros(65, int)])
    options = PreprocessOptions(near_constant=0.9, select_k=20)
    auc = _cv_auc(X, y, options)
    assert 0.4 <= auc <= 0.6, auc


def test_target_from_one_feature_is_found_with_all_steps():
    X, _ = _wide(seed=6)
    y = (X[HEIGHT] > X[HEIGHT].median()).to_numpy().astype(int)
    assert _cv_auc(X, y, PreprocessOptions()) > 0.9


# --- age norms ----------------------------------------------------------------------------------------------


def test_age_norm_is_fitted_on_training_rows_only():
    feat, clin = _aging(120, seed=1)
    X = clin.join(feat)
    train, test = X.iloc[:80], X.iloc[80:]
    norm = pp.AgeNorm().fit(train)
    state = json.dumps(norm.to_dict())
    Z = norm.transform(test)
    assert json.dumps(norm.to_dict()) == state  # transforming test rows changes nothing fitted
    z = HEIGHT + pp.AGE_Z_SUFFIX
    alone = norm.transform(test.iloc[[0]])[z].iloc[0]
    shuffled = test.iloc[1:].copy()
    shuffled[HEIGHT] = shuffled[HEIGHT].to_numpy()[::-1] + 3.0
    together = norm.transform(pd.concat([test.iloc[[0]], shuffled]))[z].iloc[0]
    assert alone == Z[z].iloc[0] == together  # a test row's z depends on that row only
    assert norm.norms_[HEIGHT]["n"] == 80
    assert norm.norms_[HEIGHT]["sd"] == pytest.approx(0.3, rel=0.25)
    assert abs(Z[z].mean()) < 0.4 and 0.6 < Z[z].std() < 1.5  # ~N(0, 1) on new patients of the same cohort
    assert "xray__C5-C6__original_glcm_Correlation" + pp.AGE_Z_SUFFIX not in Z  # radiomics: no norm
    # A missing age or sex gives a missing z; refitting with the test rows would move the norm.
    row = test.iloc[[1]].copy()
    row["sex"] = None
    assert np.isnan(norm.transform(row)[z].iloc[0])
    assert pp.AgeNorm().fit(X).norms_[HEIGHT]["coef"] != norm.norms_[HEIGHT]["coef"]


def test_age_norm_without_age_column_is_a_recorded_no_op():
    feat, clin = _aging(40, seed=2)
    X = clin.drop(columns="age").join(feat)
    norm = pp.AgeNorm().fit(X)
    assert norm.norms_ == {} and "'age'" in norm.reason_
    pd.testing.assert_frame_equal(norm.transform(X), X)


def test_reference_mode_uses_the_reference_norms(tmp_path):
    ref_feat, ref_clin = _aging(300, seed=3, slope=-0.02)  # the population: a different age slope
    norms = pp.fit_age_norms(ref_feat, ref_clin)
    feat, clin = _aging(60, seed=4)
    X = clin.join(feat)
    norm = pp.AgeNorm(mode="reference", reference=norms).fit(X.iloc[:40])
    assert norm.norms_[HEIGHT] == norms["norms"][HEIGHT] and norm.knots_ == norms["knots"]
    row = X.iloc[[50]]
    coef, sd = norms["norms"][HEIGHT]["coef"], norms["norms"][HEIGHT]["sd"]
    basis = pp.spline_basis(row["age"].to_numpy(dtype=float), norms["knots"])[0]
    expected = coef[0] + basis @ np.asarray(coef[1:-1]) + coef[-1] * (row["sex"].iloc[0] == "M")
    z = norm.transform(row)[HEIGHT + pp.AGE_Z_SUFFIX].iloc[0]
    assert z == pytest.approx((row[HEIGHT].iloc[0] - expected) / sd)
    # Through the configuration: the reference tables on disk, read once, used in every fold.
    f, c = tmp_path / "ref_features.csv", tmp_path / "ref_clinical.csv"
    ref_feat.rename_axis("patient_id").reset_index().to_csv(f, index=False)
    ref_clin.rename_axis("patient_id").reset_index().to_csv(c, index=False)
    options = resolve_config(
        None, {"preprocess.age_norm": "reference", "preprocess.age_reference": [str(f), str(c)]}
    )
    clf = TabularClassifier("logistic", params={"C": 1.0}, preprocess=options.preprocess)
    clf.fit(X, (X[HEIGHT] > X[HEIGHT].median()).astype(int))
    fitted = clf.preprocessor_.step(pp.AgeNorm)
    assert fitted.norms_[HEIGHT]["coef"] == pytest.approx(norms["norms"][HEIGHT]["coef"])


def test_spline_is_natural_linear_beyond_the_outer_knots():
    knots = [30.0, 45.0, 55.0, 70.0]
    x = np.array([75.0, 80.0, 85.0, 10.0, 15.0, 20.0])
    B = pp.spline_basis(x, knots)
    assert B.shape == (6, 3)
    assert np.allclose(np.diff(B[:3], 2, axis=0), 0) and np.allclose(np.diff(B[3:], 2, axis=0), 0)
    assert np.allclose(B[3:, 1:], 0)  # below the first knot only the linear term


# --- level summaries -----------------------------------------------------------------------------------------


def test_worst_and_index_summaries_on_a_hand_made_table():
    h = "disc_height_middle_mm"
    X = pd.DataFrame(
        {
            "index_level": ["C5-C6", "C4-C5", None],
            f"xray__C4-C5__{h}": [5.0, 4.0, 6.0],
            f"xray__C5-C6__{h}": [3.0, 6.0, np.nan],
            f"xray__C6-C7__{h}": [4.0, 5.5, 5.0],
            "xray__C4-C5__disc_angle_deg": [2.0, 4.0, 6.0],
            "xray__C5-C6__disc_angle_deg": [8.0, 0.0, 1.0],
            "xray__C5__body_height_anterior_mm": [10.0, 11.0, 12.0],
            "xray__C6__body_height_anterior_mm": [12.0, 13.0, 14.0],
        },
        index=["a", "b", "c"],
    )
    Z = pp.LevelSummary().fit(X).transform(X)
    assert Z[f"xray__worst__{h}"].tolist() == [3.0, 4.0, 5.0]  # disc height: lowest is worst; missing skipped
    assert Z[f"xray__mean__{h}"].tolist() == pytest.approx([4.0, 15.5 / 3, 5.5])
    assert Z[f"xray__index__{h}"].tolist()[:2] == [3.0, 4.0] and np.isnan(Z[f"xray__index__{h}"].iloc[2])
    assert Z[f"xray__above_index__{h}"].tolist()[0] == 5.0 and np.isnan(Z[f"xray__above_index__{h}"].iloc[1])
    assert Z[f"xray__below_index__{h}"].tolist()[:2] == [4.0, 6.0]
    assert "xray__worst__disc_angle_deg" not in Z  # no known direction
    assert "xray__mean__disc_angle_deg" in Z
    assert "xray__mean__body_height_anterior_mm" in Z and "xray__index__body_height_anterior_mm" not in Z
    assert set(X.columns) <= set(Z.columns)  # per-level columns stay
    assert pp.LevelSummary(aggregates=[]).fit(X).transform(X).shape == X.shape


def test_degeneration_score_counts_each_sign_once_and_turns_degeneration_positive():
    z = pp.AGE_Z_SUFFIX
    X = pd.DataFrame(
        {
            "age": [40.0, 50.0, 60.0],
            f"mri__C4-C5__disc_height_middle_mm{z}": [-2.0, 0.0, np.nan],
            f"mri__C4-C5__disc_height_index{z}": [-1.0, 0.0, np.nan],
            f"mri__C4-C5__disc_csf_signal_ratio{z}": [-3.0, 1.0, np.nan],
            f"mri__C5-C6__disc_height_middle_mm{z}": [0.0, 0.0, 1.0],
            f"mri__C5-C6__disc_csf_signal_ratio{z}": [-1.0, np.nan, 1.0],
            f"mri__C5-C6__disc_angle_deg{z}": [9.0, 9.0, 9.0],  # no direction: not a sign of degeneration
            f"mri__C5__body_height_anterior_mm{z}": [9.0, 9.0, 9.0],  # a vertebra, not a disc
            "mri__C5-C6__disc_height_middle_mm": [9.0, 9.0, 9.0],  # not age-adjusted
            f"xray__C5-C6__disc_height_middle_mm{z}": [-1.0, -1.0, -1.0],  # one level only: no score
        },
        index=["a", "b", "c"],
    )
    step = pp.DegenerationScore().fit(X)
    name = f"mri__discs_mean__{pp.DEGENERATION_SCORE}{z}"
    assert [s["name"] for s in step.scores_] == [name]
    Z = step.transform(X)
    assert list(Z.columns) == [name, *X.columns]  # first, so the correlation filter keeps it
    # a: C4-C5 height (2 + 1) / 2 = 1.5 and signal 3 -> 2.25; C5-C6 height 0, signal 1 -> 0.5; mean 1.375.
    # b: C4-C5 height 0, signal -1 -> -0.5; C5-C6 height 0 -> 0; mean -0.25. c: one level only -> missing.
    assert Z[name].iloc[:2].tolist() == pytest.approx([1.375, -0.25])
    assert np.isnan(Z[name].iloc[2])
    assert pp.DegenerationScore(min_levels=1).fit(X).transform(X)[name].iloc[2] == pytest.approx(-1.0)
    assert pp.DegenerationScore(enabled=False).fit(X).transform(X).shape == X.shape
    assert step.sources([name, "age"]) == {
        c
        for c in X.columns
        if c.startswith("mri__C") and "__C5__" not in c and "angle" not in c and c.endswith(z)
    } | {"age"}
    again = pp.from_dict(json.loads(json.dumps(step.to_dict())))
    pd.testing.assert_frame_equal(again.transform(X), Z)


def test_degeneration_score_reads_a_patient_offset_better_than_any_level():
    # A patient offset spread over six discs, each level read with noise (heights and signal): the score, whose
    # norms are fitted in the preprocessor, separates the offset better than the best single level does.
    rng = np.random.default_rng(3)
    n = 400
    age = rng.uniform(20, 70, n)
    u = rng.normal(size=n)
    y = (u > 0.8).astype(int)
    cols = {"age": age, "sex": rng.choice(["M", "F"], n)}
    for level in ("C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1"):
        d = 0.03 * age + u + rng.normal(0, 1.0, n)
        cols[f"mri__{level}__disc_height_middle_mm"] = 6 - 0.4 * d + rng.normal(0, 0.3, n)
        cols[f"mri__{level}__disc_csf_signal_ratio"] = np.exp(-0.3 * d + rng.normal(0, 0.2, n))
    X = pd.DataFrame(cols)
    pre = pp.Preprocessor(
        corr_threshold=1.0, near_constant=1.0, level_summary=[], radiomics_mean=False, select_k=0
    )
    Z = pre.fit(X.iloc[:200]).transform(X.iloc[200:])
    name = f"mri__discs_mean__{pp.DEGENERATION_SCORE}{pp.AGE_Z_SUFFIX}"
    auc = {c: roc_auc_score(y[200:], Z[c]) for c in Z.columns if c.endswith(pp.AGE_Z_SUFFIX)}
    best_level = max(abs(a - 0.5) for c, a in auc.items() if c != name) + 0.5
    assert auc[name] > 0.9 and auc[name] > best_level + 0.05  # measured: 0.94 against 0.85


def test_univariate_selection_keeps_the_clinical_columns_outside_its_count():
    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 2, n)
    X = pd.DataFrame({"age": rng.uniform(20, 70, n), "smoking": rng.integers(0, 2, n)})
    for j in range(30):
        X[f"mri__C5-C6__original_firstorder_F{j}"] = rng.normal(size=n) + (j < 3) * 1.5 * y
    step = pp.UnivariateSelector(k=3).fit(X, y)
    assert step.columns_ == ["age", "smoking"] + [f"mri__C5-C6__original_firstorder_F{j}" for j in range(3)]
    assert set(step.scores_) == {f"mri__C5-C6__original_firstorder_F{j}" for j in range(3)}
    assert pp.UnivariateSelector(k=30).fit(X, y).columns_ == list(X.columns)  # k >= image variables: all


def test_per_level_false_keeps_only_summaries_and_other_columns():
    h = "disc_height_middle_mm"
    X = pd.DataFrame(
        {
            "age": [40.0, 50.0, 60.0, 70.0],
            "index_level": ["C5-C6", "C4-C5", "C5-C6", "C4-C5"],
            f"xray__C4-C5__{h}": [5.0, 4.0, 6.0, 5.0],
            f"xray__C5-C6__{h}": [3.0, 6.0, 4.0, 5.0],
            "mri__C4-C5__original_firstorder_Mean": [1.0, 2.0, 3.0, 4.0],
            "mri__C5-C6__original_firstorder_Mean": [2.0, 2.0, 5.0, 1.0],
            "lab__crp": [1.0, 3.0, 2.0, 4.0],
        }
    )
    kw = {"age_norm": "off", "corr_threshold": 1.0, "near_constant": 1.0}
    kept = pp.Preprocessor(per_level=False, **kw).fit(X).columns_
    assert not [c for c in kept if "__C4-C5__" in c or "__C5-C6__" in c]
    assert f"xray__mean__{h}" in kept and f"xray__index__{h}" in kept
    assert "mri__discs_mean__original_firstorder_Mean" in kept and "lab__crp" in kept and "age" in kept
    every = pp.Preprocessor(per_level=True, **kw).fit(X).columns_
    assert f"xray__C4-C5__{h}" in every and f"xray__mean__{h}" in every


def test_degeneration_sign_covers_known_measurements_only():
    assert set(measures.DEGENERATION_SIGN) <= set(measures.UNITS)
    assert measures.DEGENERATION_SIGN["disc_height_index"] == -1
    assert measures.DEGENERATION_SIGN.get("disc_angle_deg", 0) == 0


# --- filters -------------------------------------------------------------------------------------------------


def test_near_constant_filter_keeps_flags_with_five_percent_minority():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "rare": np.r_[np.ones(4), np.zeros(96)],
            "flag": np.r_[np.ones(5), np.zeros(95)],
            "x": rng.normal(size=100),
            "one": np.ones(100),
        }
    )
    f = pp.ConstantFilter(0.95).fit(X)
    assert f.columns_ == ["flag", "x"] and f.dropped_["rare"] == pytest.approx(0.96)
    assert pp.ConstantFilter().fit(X).columns_ == ["rare", "flag", "x"]  # 1.0: single values only


def test_correlated_groups_keep_the_measurement_and_are_recorded():
    rng = np.random.default_rng(1)
    h = rng.normal(size=60)
    X = pd.DataFrame(
        {
            "mri__C5-C6__original_shape_MinorAxisLength": h + rng.normal(0, 0.01, 60),  # first in the table
            HEIGHT: h,
            "age": rng.normal(size=60),
            "bmi_copy_of_age": None,
        }
    )
    X["bmi_copy_of_age"] = X["age"] * 2
    f = pp.CorrelationFilter(0.95).fit(X)
    assert f.columns_ == [HEIGHT, "age"]  # table order kept; the measurement outlives its radiomics copy
    assert f.groups_ == {HEIGHT: ["mri__C5-C6__original_shape_MinorAxisLength"], "age": ["bmi_copy_of_age"]}
    assert json.loads(json.dumps(f.to_dict()))["state"]["groups_"] == f.groups_


def test_correlation_filter_stays_fast_on_a_wide_table():
    feat, _ = simulate(n=87, n_features=3000, signal=0.0, missing=0.0, seed=2)
    X = feat.drop(columns="patient_id")
    t0 = time.perf_counter()
    f = pp.CorrelationFilter(0.95).fit(X)
    assert time.perf_counter() - t0 < 3.0  # ~0.5 s on one core
    assert 0 < len(f.columns_) <= 3000


def test_stable_features_drop_unreliable_radiomics_first(tmp_path):
    path = tmp_path / "icc.csv"
    pd.DataFrame(
        {
            "feature": ["mri__original_glcm_Correlation", "mri__C5-C6__original_firstorder_Mean", HEIGHT],
            "icc": [0.5, 0.9, 0.1],
        }
    ).to_csv(path, index=False)
    icc = pp.read_icc_table(path)
    X = pd.DataFrame(
        {
            "mri__C4-C5__original_glcm_Correlation": [1.0, 2.0],
            "mri__C5-C6__original_glcm_Correlation": [1.0, 3.0],
            "mri__C5-C6__original_firstorder_Mean": [2.0, 1.0],
            "mri__C5-C6__original_glrlm_RunEntropy": [2.0, 1.0],
            HEIGHT: [5.0, 6.0],
        }
    )
    f = pp.StableFeatureFilter(icc, 0.75).fit(X)
    assert f.columns_ == [
        "mri__C5-C6__original_firstorder_Mean",
        "mri__C5-C6__original_glrlm_RunEntropy",
        HEIGHT,
    ]
    assert f.unrated_ == 1  # kept, counted


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(CdegError, match="stable_features.*not found") as e:
        resolve_config(None, {"preprocess.stable_features": str(tmp_path / "nope.csv")})
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,value\na,1\n")
    with pytest.raises(CdegError, match="feature.*icc"):
        resolve_config(None, {"preprocess.stable_features": str(bad)})
    with pytest.raises(CdegError, match="age_reference must name two tables"):
        resolve_config(None, {"preprocess.age_norm": "reference"})
    with pytest.raises(CdegError, match="level_summary"):
        resolve_config(None, {"preprocess.level_summary": ["median"]})


# --- the chain ---------------------------------------------------------------------------------------------------


def test_radiomics_means_over_discs_and_over_vertebrae_are_kept_apart():
    f = "original_firstorder_Mean"
    X = pd.DataFrame(
        {
            f"mri__C4-C5__{f}": [1.0, 2.0],
            f"mri__C5-C6__{f}": [3.0, np.nan],
            f"mri__C5__{f}": [10.0, 20.0],
            f"mri__C6__{f}": [30.0, 40.0],
            f"mri__C7__{f}": [50.0, 60.0],
            "mri__C7-T1__original_glcm_Correlation": [0.1, 0.2],  # one disc only: no mean
        },
        index=["a", "b"],
    )
    Z = pp.LevelSummary(aggregates=[]).fit(X).transform(X)
    assert Z[f"mri__discs_mean__{f}"].tolist() == [2.0, 2.0]  # a missing level is left out of the mean
    assert Z[f"mri__vertebrae_mean__{f}"].tolist() == [30.0, 40.0]
    assert not any("glcm" in c for c in Z.columns if "_mean__" in c)
    off = pp.LevelSummary(aggregates=[], radiomics_mean=False).fit(X).transform(X)
    assert off.shape == X.shape
    assert describe(f"mri__discs_mean__{f}").label == "mean signal, mean over the discs (MRI), a.u."


def test_preprocessor_defaults_equal_the_shipped_options():
    opt, pre = PreprocessOptions(), pp.Preprocessor()
    for name in (
        "max_missing",
        "corr_threshold",
        "select_k",
        "near_constant",
        "age_norm",
        "age_column",
        "sex_column",
        "index_column",
        "min_icc",
        "radiomics_mean",
        "degeneration_score",
    ):
        assert getattr(pre, name) == getattr(opt, name), name
    assert tuple(pre.level_summary) == opt.level_summary


def test_saved_model_with_new_steps_predicts_the_same(tmp_path):
    X, _ = _wide(n=80, n_features=120, seed=7)
    y = (X[HEIGHT].fillna(X[HEIGHT].median()) > X[HEIGHT].median()).to_numpy().astype(int)
    icc = tmp_path / "icc.csv"
    pd.DataFrame({"feature": ["mri__original_firstorder_Mean"], "icc": [0.2]}).to_csv(icc, index=False)
    options = PreprocessOptions(stable_features=str(icc))
    train, test = X.iloc[:60], X.iloc[60:]
    for kind, params in (("logistic", {"C": 0.5}), ("xgboost", XGB)):
        clf = TabularClassifier(kind, params=params, preprocess=options).fit(train, y[:60])
        names = clf.preprocessor_.columns_
        assert any(c.endswith(pp.AGE_Z_SUFFIX) for c in clf.preprocessor_.step(pp.AgeNorm).columns_)
        assert "xray__worst__disc_height_middle_mm__age_z" in clf.preprocessor_.step(pp.LevelSummary).columns_
        assert "mri__C5-C6__original_firstorder_Mean" not in names
        files = clf.save(tmp_path, kind)
        again = TabularClassifier.load(tmp_path, kind, files, params=params)
        np.testing.assert_array_equal(clf.predict_proba(test), again.predict_proba(test))
        assert again.used_inputs_ == clf.used_inputs_


def test_used_inputs_follow_derived_variables():
    feat, clin = _aging(80, seed=9)
    X = clin.join(feat)
    y = (X[HEIGHT] > X[HEIGHT].median()).astype(int).to_numpy()
    pre = pp.Preprocessor(corr_threshold=1.0).fit(X, y)
    assert HEIGHT + pp.AGE_Z_SUFFIX in pre.columns_
    again = pp.from_dict(json.loads(json.dumps(pre.to_dict())))
    pd.testing.assert_frame_equal(pre.transform(X), again.transform(X))
    # An age-adjusted variable alone needs its measurement, age and sex.
    needed = {HEIGHT + pp.AGE_Z_SUFFIX}
    for step in reversed(pre.steps_):
        needed = step.sources(needed)
    assert needed == {HEIGHT, "age", "sex"}
    assert set(pre.used_inputs_) == {HEIGHT, "age", "sex", "xray__C5-C6__original_glcm_Correlation"}


# --- names -------------------------------------------------------------------------------------------------------


def test_describe_reads_the_new_names():
    assert (
        describe("xray__C5-C6__disc_height_middle_mm__age_z").label
        == "disc height C5-C6 (radiograph), SD from the age norm"
    )
    assert describe("xray__worst__disc_height_middle_mm").label == "disc height, worst level (radiograph), mm"
    assert (
        describe("mri__index__disc_csf_signal_ratio").label
        == "disc/CSF T2 signal ratio, at the index level (MRI)"
    )
    assert (
        describe("xray__above_index__disc_height_index").label
        == "disc height index, level above the index (radiograph)"
    )
    assert (
        describe("xray__below_index__disc_height_middle_mm__age_z").label
        == "disc height, level below the index (radiograph), SD from the age norm"
    )
    assert describe("xray__mean__disc_angle_deg").label == "disc angle, mean over levels (radiograph), deg"
    assert (
        describe(f"mri__discs_mean__{pp.DEGENERATION_SCORE}{pp.AGE_Z_SUFFIX}").label
        == "disc degeneration score, mean over the discs (MRI), SD from the age norm"
    )


def test_univariate_auc_is_each_columns_mann_whitney_auc():
    """All columns at once (ranks with missing values left out per column) equal one column at a time."""
    import numpy as np
    from cdeg.modeling.data import univariate_auc
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    A = rng.normal(size=(40, 30)).round(1)  # rounding makes ties
    A[rng.random(A.shape) < 0.2] = np.nan
    A[:, 4] = np.nan  # no value at all
    y = (rng.random(40) < 0.3).astype(int)
    A[y == 1, 7] = np.nan  # no positive patient with a value
    got = univariate_auc(A, y)
    for j in range(A.shape[1]):
        ok = ~np.isnan(A[:, j])
        if len(set(y[ok])) < 2:
            assert np.isnan(got[j]), j
        else:
            assert got[j] == pytest.approx(roc_auc_score(y[ok], A[ok, j]), abs=1e-12), j
