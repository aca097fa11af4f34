"""Explanations that match the risk shown: the SHAP values of the outer-fold models (oof_shap.csv) add up to the
cross-validated risks, the waterfalls say the mean risk of the average patient, the share of the 'other' lump,
one bar for a missing scan, and the stability of the top variables across the fold models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cdeg.modeling import plots
from cdeg.modeling.bundle import ModelBundle
from cdeg.modeling.explain import (
    ShapResult,
    absent_modalities,
    fold_importance,
    from_table,
    shap_stability,
    shap_table,
)
from cdeg.modeling.fit import fit
from cdeg.modeling.predict import write_oof_waterfalls
from cdeg.modeling.simulate import simulate

from cdeg.io import write_table
from cdeg.outputs import FitRun

FAST = {"trials": 2, "outer_folds": 3, "repeats": 2, "jobs": 1, "progress": False, "tiers": "none"}


def _expit(x):
    return 1 / (1 + np.exp(-np.asarray(x, float)))


@pytest.fixture(scope="module")
def cv_fit(tmp_path_factory):
    """A small fit (no waterfalls drawn) in which three patients have no MRI."""
    tmp = tmp_path_factory.mktemp("cvx")
    feat, clin = simulate(n=40, n_features=12, signal=2.0, prevalence=0.35, seed=2)
    mri = [c for c in feat.columns if c.startswith("mri__")]
    assert mri
    feat.loc[feat.index[:3], mri] = np.nan
    write_table(tmp / "f.csv", feat)
    write_table(tmp / "c.csv", clin)
    (tmp / "cfg.yaml").write_text("inner_folds: 2\nstartup_trials: 1\nwaterfalls: false\nmodels: [xgboost]\n")
    res = fit(tmp / "f.csv", tmp / "c.csv", "accelerated", tmp / "run", config=tmp / "cfg.yaml", **FAST)
    return tmp, res


def test_fold_model_shap_adds_up_to_the_cross_validated_risk(cv_fit):
    _, res = cv_fit
    folder = FitRun(res.out)
    table, oof = folder.read_oof_shap(), folder.read_oof()
    assert table is not None and not folder.waterfalls.exists()  # waterfalls: false draws nothing
    # every patient is explained once per repeat, by the fold that predicted it
    per = table.groupby(["repeat", "patient_id"])["fold"].nunique()
    assert len(per) == 2 * 40 and (per == 1).all()
    for (r, f), rows in table.groupby(["repeat", "fold"]):
        sr = from_table(rows, "patient_id")
        shown = oof[(oof["repeat"] == r)].set_index("patient_id").loc[sr.data.index]
        assert (shown["fold"] == f).all()
        np.testing.assert_allclose(_expit(sr.log_odds()), shown["xgboost"].to_numpy(), atol=1e-5)
        assert 0 < sr.mean_risk < 1
        # the waterfall of each patient ends at that probability
        rows_i = plots.variable_rows(sr, 0, top=3)
        assert _expit(sr.base_value + sum(w for _, w in rows_i)) == pytest.approx(
            shown["xgboost"].iloc[0], abs=1e-5
        )


def test_stability_and_mean_training_risk_are_recorded(cv_fit):
    tmp, res = cv_fit
    metrics = json.loads(FitRun(res.out).metrics.read_text())
    stab = metrics["shap_stability"]
    assert stab["variables"]["models"] == 6 and stab["level"]["models"] == 6
    assert -1 <= stab["variables"]["mean_spearman"] <= 1
    assert all(1 <= t["folds_in_top"] <= 6 for t in stab["variables"]["top_variables"])
    assert "Spearman" in stab["how"]
    # the final model's "average patient" is the mean of its probabilities on the training patients
    bundle = ModelBundle.load(res.out / "model")
    feat = pd.read_csv(tmp / "f.csv", dtype={"patient_id": str}).set_index("patient_id")
    clin = pd.read_csv(tmp / "c.csv", dtype={"patient_id": str}).set_index("patient_id")
    info = bundle.manifest["models"]["xgboost"]
    X = feat.join(clin)[info["input_columns"]]
    p = bundle.models["xgboost"].predict_proba(X)[:, 1]
    assert info["mean_training_risk"] == pytest.approx(float(p.mean()), abs=1e-9)


def test_cross_validated_waterfalls_are_drawn_per_patient(cv_fit, tmp_path):
    tmp, res = cv_fit
    table = FitRun(res.out).read_oof_shap()
    first3 = table[(table["repeat"] == 0) & table["patient_id"].isin(["P0000", "P0005"])]
    X = pd.read_csv(tmp / "f.csv", dtype={"patient_id": str}).set_index("patient_id")
    files = write_oof_waterfalls(first3, X, FitRun(tmp_path), "accelerated", "patient_id")
    assert {f.relative_to(tmp_path).as_posix() for f in files} == {
        "waterfalls/P0000.svg",
        "waterfalls/by_level/P0000.svg",
        "waterfalls/P0005.svg",
        "waterfalls/by_level/P0005.svg",
    }


# --- waterfall rows on constructed SHAP values ---------------------------------------------------------------

COLUMNS = [
    "xray__C5-C6__disc_height_middle_mm",
    "mri__C5-C6__disc_csf_signal_ratio",
    "mri__discs_mean__degeneration_score__age_z",
    "xray__C4-C5__disc_height_middle_mm",
    "age",
]


def _sr(values: list[float], mean_risk: float | None = None) -> ShapResult:
    data = pd.DataFrame([[5.1, 0.4, 0.2, 4.0, 61.0]], columns=COLUMNS, index=["P1"])
    return ShapResult(np.array([values], dtype=float), -1.0, data, mean_risk)


def test_the_other_lump_shows_its_share_of_the_total_effect() -> None:
    sr = _sr([3.0, -2.0, 1.0, 0.5, -0.5])
    rows = plots.variable_rows(sr, 0, top=2)
    assert [w for _, w in rows[:2]] == [3.0, -2.0]
    text, w = rows[-1]
    # the lump's bar is the sum of the other three; its share is their summed size over all sizes: 2 / 7
    assert w == pytest.approx(1.0)
    assert text == "3 other variables (29% of the total effect)"
    grouped = plots.grouped_rows(sr, 0, top=1)
    assert grouped[-1][0].endswith("of the total effect)")


def test_a_patient_without_mri_gets_one_no_mri_bar() -> None:
    sr = _sr([0.3, -0.4, 0.9, 0.1, -0.2])
    rows = plots.variable_rows(sr, 0, top=10, absent=["mri"])
    texts = [t for t, _ in rows]
    assert "no MRI: imputed values (2 variables)" in texts
    assert dict(rows)["no MRI: imputed values (2 variables)"] == pytest.approx(0.5)
    assert not any("(MRI)" in t for t in texts) and len(rows) == 4  # 3 present variables + the MRI bar
    assert sum(w for _, w in rows) == pytest.approx(sr.values.sum())  # still ends at the patient's log-odds
    grouped = plots.grouped_rows(sr, 0, absent=["mri"])
    assert sum(t.startswith("no MRI") for t, _ in grouped) == 1
    assert sum(w for _, w in grouped) == pytest.approx(sr.values.sum())
    X = pd.DataFrame(
        {
            "mri__C5-C6__disc_csf_signal_ratio": [np.nan, 0.3],
            "xray__C5-C6__disc_height_middle_mm": [5.0, np.nan],
        },
        index=["A", "B"],
    )
    assert absent_modalities(X) == {"A": ["mri"], "B": ["xray"]}


def test_average_patient_is_the_mean_risk_not_the_expit_of_the_base_value() -> None:
    # the mean of probabilities differs from the expit of the mean log-odds: the title must give the former
    log_odds = np.array([-4.0, -3.0, 2.0])
    mean_risk = float(_expit(log_odds).mean())
    base = float(log_odds.mean())
    assert f"{mean_risk:.0%}" != f"{float(_expit(base)):.0%}"
    title = plots.waterfall_title("P1", 0.5, mean_risk, "cross-validated probability")
    assert f"Average patient: {mean_risk:.0%}, the mean predicted risk" in title
    assert title.startswith(f"Patient P1: cross-validated probability {float(_expit(0.5)):.0%}")
    fig = plots.waterfall_figure([("a", 1.5)], base, "accelerated", "P1", "", mean_risk)
    assert "average log-odds" in fig.axes[0].get_xlabel().replace("\n", " ")
    assert f"{float(_expit(base)):.0%}" not in fig.axes[0].get_title(loc="left")


# --- stability ---------------------------------------------------------------------------------------------------


def test_identical_fold_rankings_agree_fully_and_reversed_ones_do_not() -> None:
    imp = pd.Series({f"v{k}": 12.0 - k for k in range(12)})
    same = shap_stability([imp, imp, imp], top=10)
    assert same["mean_spearman"] == pytest.approx(1.0) and same["min_spearman"] == pytest.approx(1.0)
    assert [t["folds_in_top"] for t in same["top_variables"]] == [3] * 10
    assert [t["name"] for t in same["top_variables"]][:3] == ["v0", "v1", "v2"]
    reversed_ = pd.Series(imp.to_numpy()[::-1], index=imp.index)
    opposite = shap_stability([imp, reversed_], top=12)
    assert opposite["mean_spearman"] == pytest.approx(-1.0)
    # fold models that use no variable rank nothing: no agreement to report, no variable in any top
    nothing = shap_stability([imp * 0, imp * 0], top=10)
    assert nothing["mean_spearman"] is None and nothing["pairs"] == 0 and nothing["top_variables"] == []


def test_fold_importance_from_the_table() -> None:
    data = pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], columns=["xray__C5-C6__disc_height_middle_mm", "age"])
    parts = []
    for fold, vals in ((0, [[1.0, -0.5], [-3.0, 0.5]]), (1, [[2.0, 0.0], [2.0, 0.0]])):
        sr = ShapResult(np.array(vals), 0.0, data.set_axis([f"P{fold}a", f"P{fold}b"]), 0.3)
        parts.append(shap_table(sr, list(sr.data.index), 0, fold, "patient_id"))
    table = pd.concat(parts, ignore_index=True)
    imp = fold_importance(table, "patient_id")
    assert imp[(0, 0)].to_dict() == {"xray__C5-C6__disc_height_middle_mm": 2.0, "age": 0.5}
    assert list(imp[(0, 1)].index) == ["xray__C5-C6__disc_height_middle_mm", "age"]
    by_level = fold_importance(table, "patient_id", "level")
    assert by_level[(0, 0)]["clinical"] == pytest.approx(0.5)
    sr0 = from_table(table[table["fold"] == 0], "patient_id")
    np.testing.assert_allclose(sr0.values, [[1.0, -0.5], [-3.0, 0.5]])
    assert sr0.mean_risk == pytest.approx(0.3) and list(sr0.data.index) == ["P0a", "P0b"]


def test_report_says_when_no_rank_agreement_can_be_computed() -> None:
    from cdeg.modeling.report import stability_html

    none = shap_stability([pd.Series({"a": 0.0}), pd.Series({"a": 0.0})])
    some = shap_stability([pd.Series({"a": 2.0, "b": 1.0})] * 2)
    html = "".join(stability_html({"how": "how to read", "variables": none, "level": some}))
    assert "by variable: none to compute" in html
    assert "by level: mean Spearman 1.00" in html and "<td>2 of 2</td>" in html
