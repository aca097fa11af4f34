"""Transport of a validated model: the development-vs-external table of its top variables, and recalibration
as an explicit, separately reported update (`cdeg validate --recalibrate`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cdeg.modeling.recalibration import apply_update, cross_validated, fit_update, recalibration
from cdeg.modeling.transport import (
    COLUMNS,
    age_shift,
    summarise,
    transport_rows,
    transport_sentence,
    transport_summary,
)
from cdeg.modeling.validate import validate
from click.testing import CliRunner

from cdeg.cli import cli
from cdeg.config import ConfigError
from cdeg.io import write_table
from cdeg.outputs import ValidationRun
from cdeg.pipeline.config import load_run_config

TINY = Path(__file__).with_name("run_tiny.yaml")


# ----------------------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------------------


def _summary() -> dict:
    """A hand-made development summary: x uniform on 0..10 (101 values), flag 0/1 half and half."""
    x = pd.Series(np.linspace(0, 10, 101))
    flag = pd.Series([0.0, 1.0] * 50)
    return {
        "model": "xgboost",
        "variables": [
            {"variable": "x", "label": "x, mm", "mean_abs_shap": 0.5, **summarise(x)},
            {"variable": "flag", "label": "flag", "mean_abs_shap": 0.2, **summarise(flag)},
        ],
    }


def test_transport_rows_count_values_outside_the_development_range_and_imputed_ones():
    ext = pd.DataFrame(
        {
            # 10 patients: 2 missing, 2 below 0, 3 above 10, 3 inside
            "x": [np.nan, np.nan, -1.0, -0.5, 11.0, 12.0, 20.0, 1.0, 5.0, 9.0],
            "flag": [1.0] * 8 + [0.0, np.nan],
        }
    )
    rows = transport_rows(_summary(), ext)
    assert [r["variable"] for r in rows] == ["x", "flag"] and rows[0]["rank"] == 1
    x = rows[0]
    assert set(x) == set(COLUMNS)
    assert x["external_imputed_share"] == pytest.approx(0.2)
    assert x["external_n"] == 8
    assert x["external_below_min"] == pytest.approx(2 / 8)
    assert x["external_above_max"] == pytest.approx(3 / 8)
    assert x["external_outside_range"] == pytest.approx(5 / 8)
    assert (x["development_min"], x["development_median"], x["development_max"]) == (0.0, 5.0, 10.0)
    e = ext["x"].dropna()
    dev = np.linspace(0, 10, 101)
    expected = (e.mean() - dev.mean()) / np.sqrt((dev.std() ** 2 + e.std(ddof=0) ** 2) / 2)
    assert x["smd"] == pytest.approx(expected)
    f = rows[1]
    # a 0/1 variable: the pooled SD is that of two proportions, sqrt((p1 q1 + p2 q2) / 2)
    p_dev, p_ext = 0.5, 8 / 9
    assert f["smd"] == pytest.approx((p_ext - p_dev) / np.sqrt((p_dev * 0.5 + p_ext * (1 - p_ext)) / 2))
    assert f["external_outside_range"] == 0.0 and f["external_imputed_share"] == pytest.approx(0.1)


def test_a_variable_absent_from_the_external_cohort_is_all_imputed():
    rows = transport_rows(_summary(), pd.DataFrame({"flag": [0.0, 1.0]}))
    x = rows[0]
    assert x["external_imputed_share"] == 1.0 and x["external_n"] == 0
    assert x["external_outside_range"] is None and x["smd"] is None


def test_the_sentence_counts_the_variables_outside_the_range_and_the_imputed_ones():
    ext = pd.DataFrame({"x": [np.nan, 11.0, 12.0, 5.0], "flag": [0.0, 1.0, 1.0, 0.0]})
    rows = transport_rows(_summary(), ext)
    text = transport_sentence(rows, "xgboost")
    assert text.startswith("1 of the 2 top variables have more than 10% of external values outside")
    assert "(x, mm)" in text and "trees predict there as at the development extremes" in text
    assert "1 of them are missing for more than 10% of the external patients" in text
    s = transport_summary(rows, "xgboost")
    assert (s["n_variables"], s["n_outside_range"], s["n_imputed"]) == (2, 1, 1)
    inside = transport_rows(_summary(), pd.DataFrame({"x": [1.0, 2.0], "flag": [0.0, 1.0]}))
    assert transport_sentence(inside, "logistic").startswith("None of the 2 top variables")


def test_the_age_shift_reads_the_outside_subgroup():
    rows = [
        {"variable": "age", "group": "50-59", "n": 40, "mean_risk": 0.2, "observed": 0.2},
        {"variable": "age", "group": "66+", "n": 60, "mean_risk": 0.3, "observed": 0.2},
        {"variable": "age", "group": "outside the development range (31-62)", "n": 60,
         "mean_risk": 0.32, "observed": 0.19},
    ]  # fmt: skip
    a = age_shift(rows, [31.0, 62.0])
    assert a["share_outside"] == pytest.approx(0.6) and a["n_with_age"] == 100
    assert a["sentence"] == (
        "60% of the external patients are outside the development ages (31-62 years); the model over-predicts "
        "there: mean risk 32% against 19% observed."
    )


# ----------------------------------------------------------------------------------------------------------
# recalibration
# ----------------------------------------------------------------------------------------------------------


def _miscalibrated(a: float, b: float, n: int = 20000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Model probabilities p and outcomes drawn from the truth logit P(y=1) = a + b * logit(p)."""
    rng = np.random.default_rng(seed)
    lp = rng.normal(-1.0, 1.2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(a + b * lp)))).astype(int)
    return y, 1 / (1 + np.exp(-lp))


def test_intercept_recalibration_recovers_the_known_offset():
    y, p = _miscalibrated(-0.7, 1.0)
    a, b = fit_update(y, p, "intercept")
    assert b == 1.0 and a == pytest.approx(-0.7, abs=0.06)


def test_logistic_recalibration_recovers_the_known_intercept_and_slope():
    y, p = _miscalibrated(0.3, 0.6)
    a, b = fit_update(y, p, "logistic")
    assert a == pytest.approx(0.3, abs=0.08) and b == pytest.approx(0.6, abs=0.05)
    # applied, the update calibrates the predictions (cross-validated within the cohort)
    from cdeg.modeling import metrics as M

    ci, cs = M.calibration(y, cross_validated(y, p, "logistic"))
    assert abs(ci) < 0.05 and cs == pytest.approx(1.0, abs=0.06)
    assert np.allclose(apply_update(p, 0.0, 1.0), p, atol=1e-9)


def test_recalibration_none_changes_nothing_and_the_others_keep_the_auc():
    y, p = _miscalibrated(0.5, 0.7, n=2000)
    assert recalibration(y, {"xgboost": p}, "none") == {
        "method": "none",
        "words": "none (the model applied unchanged)",
        "applied": False,
        "text": "the model was applied unchanged (no recalibration asked for)",
    }
    rec = recalibration(y, {"xgboost": p}, "logistic")
    from cdeg.modeling import metrics as M

    m = rec["models"]["xgboost"]
    assert m["apparent"]["auc"] == pytest.approx(M.summarize(y, p)["auc"])  # a monotone update
    assert m["apparent"]["calibration_slope"] == pytest.approx(1.0, abs=1e-6)
    assert rec["folds"] == 5 and "cross-validation" in rec["evaluation"]
    assert rec["text"].startswith("logistic recalibration") and f"slope {m['slope']:.3f}" in rec["text"]
    with pytest.raises(ValueError, match="valid: none, intercept, logistic"):
        fit_update(y, p, "platt")


# ----------------------------------------------------------------------------------------------------------
# cdeg validate end to end
# ----------------------------------------------------------------------------------------------------------


def test_the_model_folder_keeps_only_summaries_of_the_top_variables(small_fit):
    model = json.loads((small_fit["dir"] / "run" / "model" / "model.json").read_text())
    dist = model["development"]["distribution"]
    assert dist["model"] == model["primary_model"] and 1 <= len(dist["variables"]) <= 15
    v = dist["variables"][0]
    assert {"variable", "label", "mean_abs_shap", "n", "missing", "median", "q1", "q3", "min", "max"} <= set(
        v
    )
    shap = [x["mean_abs_shap"] for x in dist["variables"]]
    assert shap == sorted(shap, reverse=True)
    assert v["n"] <= len(small_fit["clinical"])


def test_validate_writes_the_table_and_a_separate_recalibration(small_fit, tmp_path):
    tmp, feat, clin = small_fit["dir"], small_fit["features"], small_fit["clinical"]
    older = clin.assign(age=clin["age"] + 30)
    write_table(tmp_path / "c_old.csv", older)
    ext = feat.copy()
    ext.iloc[:20, 1:] = np.nan  # a third of the external patients without image features
    write_table(tmp_path / "f_ext.csv", ext)
    model = tmp / "run" / "model"
    args = ["--no-progress", "validate", "--model", str(model), "--features", str(tmp_path / "f_ext.csv"),
            "--clinical", str(tmp_path / "c_old.csv"), "--target", "accelerated", "--max-imputed", "1"]  # fmt: skip
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, [*args, "--recalibrate", "logistic", "--out", str(tmp_path / "rec")])
    assert r.exit_code == 0, r.output
    assert "logistic recalibration: intercept" in r.output
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    rec = json.loads((tmp_path / "rec" / "metrics.json").read_text())
    # the original external figures are the same with and without the update
    assert rec["external"] == plain["external"]
    assert plain["recalibration"]["applied"] is False and "models" not in plain["recalibration"]
    primary = rec["primary_model"]
    upd = rec["recalibration"]["models"][primary]
    assert np.isfinite(upd["intercept"]) and np.isfinite(upd["slope"])
    assert upd["apparent"]["auc"] == pytest.approx(rec["external"][primary]["auc"])
    assert ValidationRun(tmp_path / "rec").plot("recalibration").is_file()
    assert not ValidationRun(tmp_path / "plain").plot("recalibration").exists()
    page = (tmp_path / "rec" / "report.html").read_text()
    assert "Recalibration (model updating)" in page and "never replaces" in page
    assert "No model updating" in (tmp_path / "plain" / "report.html").read_text()
    # the TRIPOD+AI answers read these keys (items 12f and 24: updating; 16 and 20c: differences)
    from cdeg.modeling.tripod import differences_answer, updating_answer

    assert updating_answer(plain) == "the model was applied unchanged (no recalibration asked for)"
    assert updating_answer(rec).startswith(
        "logistic recalibration"
    ) and "reported separately" in updating_answer(rec)
    assert rec["transport"]["text"] and rec["transport"]["text"] in differences_answer(rec)
    _check_transport(rec["transport"], tmp_path / "rec", ext, older, model)


def _check_transport(transport: dict, out: Path, ext: pd.DataFrame, clin: pd.DataFrame, model: Path) -> None:
    """The table's rows against the raw external tables, for the variables that are input columns."""
    assert transport["available"] and transport["rows"]
    table = pd.read_csv(ValidationRun(out).transport)
    assert list(table.columns) == list(COLUMNS) and len(table) == len(transport["rows"])
    dist = json.loads((model / "model.json").read_text())["development"]["distribution"]
    dev = {v["variable"]: v for v in dist["variables"]}
    raw = ext.merge(clin, on="patient_id")
    checked = 0
    for r in transport["rows"]:
        if r["variable"] not in raw.columns:
            continue  # derived by the preprocessing (age norm, level summary)
        v = pd.to_numeric(raw[r["variable"]], errors="coerce")
        assert r["external_imputed_share"] == pytest.approx(v.isna().mean())
        lo, hi = dev[r["variable"]]["min"], dev[r["variable"]]["max"]
        assert r["external_above_max"] == pytest.approx((v.dropna() > hi).mean())
        assert r["external_below_min"] == pytest.approx((v.dropna() < lo).mean())
        checked += 1
    assert checked, "no top variable is an input column"
    assert transport["summary"]["sentence"]
    age = transport["age"]
    assert age["share_outside"] > 0.5 and age["sentence"].startswith(
        f"{age['share_outside']:.0%} of the external"
    )


def test_an_unknown_recalibration_is_refused_before_any_work(small_fit, tmp_path):
    tmp = small_fit["dir"]
    with pytest.raises(ValueError, match="--recalibrate 'slope'; valid: none, intercept, logistic"):
        validate(tmp / "run" / "model", tmp / "f.csv", tmp / "c.csv", "accelerated", tmp_path / "v",
                 recalibrate="slope", progress=False)  # fmt: skip
    assert not (tmp_path / "v").exists()
    r = CliRunner().invoke(
        cli,
        ["validate", "--model", str(tmp / "run" / "model"), "--features", str(tmp / "f.csv"), "--clinical",
         str(tmp / "c.csv"), "--target", "accelerated", "--out", str(tmp_path / "v"), "--recalibrate", "slope"],
    )  # fmt: skip
    assert r.exit_code == 2 and "'slope' is not one of 'none', 'intercept', 'logistic'" in r.output


# ----------------------------------------------------------------------------------------------------------
# the study configuration
# ----------------------------------------------------------------------------------------------------------


def _study(tmp_path: Path, recalibrate: str) -> Path:
    data = yaml.safe_load(TINY.read_text())
    data["out"] = str(tmp_path / "run")
    data["targets"]["accelerated"]["recalibrate"] = recalibrate
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_study_key_recalibrate_is_validated(tmp_path: Path):
    cfg = load_run_config(_study(tmp_path, "intercept"))
    assert cfg.targets["accelerated"].recalibrate == "intercept"
    assert cfg.targets["poor_outcome_2y"].recalibrate == "none"
    with pytest.raises(
        ConfigError, match=r"targets.accelerated.recalibrate = 'slope'; valid: none, intercept"
    ):
        load_run_config(_study(tmp_path, "slope"))
