"""Tests of `cdeg fit` / `predict` / `validate` (cdeg.modeling): leakage, signal, persistence, resumption,
missing variables, bad inputs, CLI, report. Real XGBoost, Optuna (SQLite) and SHAP, on small simulated tables."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cdeg.modeling import metrics as M
from cdeg.modeling import preprocess as pp
from cdeg.modeling.bundle import ModelBundle
from cdeg.modeling.config import FitConfig, resolve_config
from cdeg.modeling.fit import fit
from cdeg.modeling.names import describe
from cdeg.modeling.predict import predict
from cdeg.modeling.simulate import SIGNAL_COLUMNS, simulate, write_tables
from cdeg.modeling.validate import validate
from click.testing import CliRunner

from cdeg.cli import cli
from cdeg.errors import CdegError
from cdeg.io import write_table

# Small protocol for tests: the defaults are sized for 109 x 1,000 in minutes, not seconds.
FAST = {"trials": 3, "outer_folds": 3, "repeats": 1, "jobs": 1, "progress": False}
# No feature tiers here: the study-name and resume assertions below count the models' studies.
SIGNAL = {**FAST, "trials": 5, "seed": 1, "tiers": "none"}


def _inner2(tmp: Path) -> Path:
    path = tmp / "inner2.yaml"
    path.write_text("inner_folds: 2\nstartup_trials: 2\n")
    return path


@pytest.fixture(scope="module")
def signal_run(tmp_path_factory):
    """One fit on a strong planted signal, shared by the persistence, predict, validate and report tests."""
    tmp = tmp_path_factory.mktemp("signal")
    tables = write_tables(tmp / "data", n=120, n_features=80, signal=4.0, prevalence=0.3, seed=3)
    res = fit(
        tables.features_path, tables.clinical_path, "accelerated", tmp / "run", config=_inner2(tmp), **SIGNAL
    )
    return tables, res


# --- configuration ----------------------------------------------------------------------------------------


def test_shipped_config_equals_dataclass_defaults():
    assert resolve_config() == FitConfig()


def test_config_layers_and_validation(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("trials: 7\nxgboost:\n  max_depth: [1, 2]\n")
    cfg = resolve_config(y, {"trials": 9, "seed": None})
    assert cfg.trials == 9 and cfg.xgboost.max_depth == (1, 2) and cfg.seed == 0
    y.write_text("trails: 7\n")
    with pytest.raises(CdegError, match="unknown key.*trails"):
        resolve_config(y)
    with pytest.raises(CdegError, match="feature_sets"):
        resolve_config(None, {"feature_sets": ["ct"]})


def test_print_config_cli():
    r = CliRunner().invoke(cli, ["fit", "--print-config", "--trials", "7", "--exclude", "ndi_*,vas*"])
    assert r.exit_code == 0, r.output
    assert "trials: 7" in r.output and "ndi_*" in r.output and "objective: log_loss" in r.output


# --- building blocks ---------------------------------------------------------------------------------------


def test_preprocessor_fits_on_training_rows_and_roundtrips_json():
    rng = np.random.default_rng(0)
    a = rng.normal(size=40)
    X = pd.DataFrame(
        {
            "a": a,
            "a_copy": 2 * a + 1,
            "const": 1.0,
            "b": rng.normal(size=40),
            "smoking": rng.choice(["current", "never"], 40).astype(object),
        }
    )
    X.loc[[0, 5], "b"] = np.nan
    X.loc[3, "smoking"] = None
    y = (a > 0).astype(int)
    train, test = X.iloc[:30], X.iloc[30:]
    pre = pp.Preprocessor(standardize=True).fit(train, y[:30])
    assert "a_copy" not in pre.columns_ and "const" not in pre.columns_  # near-duplicate and constant dropped
    # Two levels: the second dummy is the mirror image of the first (|r| = 1) and goes too.
    assert "smoking=current" in pre.columns_ and "smoking=never" not in pre.columns_
    assert pre.used_inputs_ == ["a", "b", "smoking"]
    assert pre.imputation_["b"] == pytest.approx(float(train["b"].median()))  # training rows only
    again = pp.from_dict(json.loads(json.dumps(pre.to_dict())))
    pd.testing.assert_frame_equal(pre.transform(test), again.transform(test))
    Z = pre.transform(train)
    assert np.allclose(Z.mean(), 0, atol=1e-12)


def test_delong_and_calibration_against_known_answers():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.uniform(size=300) * 0.7, 0, 1)
    auc, lo, hi, var = M.auc_ci(y, p)
    assert auc == pytest.approx(roc_auc_score(y, p))
    boot = []
    for _ in range(400):
        i = rng.integers(0, 300, 300)
        boot.append(roc_auc_score(y[i], p[i]))
    assert np.sqrt(var) == pytest.approx(np.std(boot), rel=0.25)
    assert lo < auc < hi
    same = M.compare_repeats(y, [p], [p])
    assert same["auc_difference"] == 0 and same["p_value"] == 1.0
    # Calibrated predictions: intercept ~0, slope ~1; predictions twice too extreme: slope ~0.5.
    pt = rng.uniform(0.02, 0.98, 20000)
    yt = (rng.uniform(size=20000) < pt).astype(int)
    a, b = M.calibration(yt, pt)
    assert abs(a) < 0.05 and abs(b - 1) < 0.06
    lg = np.log(pt / (1 - pt)) * 2
    _a2, b2 = M.calibration(yt, 1 / (1 + np.exp(-lg)))
    assert abs(b2 - 0.5) < 0.04


def test_clinical_words_for_variable_names():
    assert describe("xray__C5-C6__disc_height_middle_mm").label == "disc height C5-C6 (radiograph), mm"
    assert describe("mri__C5-C6__original_shape_MeshVolume").label == "volume of disc C5-C6 (MRI), mm³"
    assert describe("mri__C5__original_firstorder_Mean").label == "mean signal of vertebra C5 (MRI), a.u."
    assert describe("xray__C2-C7__cobb_c2c7_deg").label == "C2-C7 Cobb angle (radiograph), deg"
    assert describe("smoking=current").label == "smoking: current"
    assert describe("age").label == "age, years"
    assert describe("some_column_mm").label == "some column, mm"


# --- the protocol ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_noise_target_gives_auc_near_half(tmp_path):
    """Pure-noise target, many features, selection inside the folds: any leak would push the AUC up."""
    feat, clin = simulate(n=120, n_features=400, signal=0.0, prevalence=0.35, seed=11)
    clin["accelerated"] = np.random.default_rng(5).permutation(clin["accelerated"].to_numpy())
    write_table(tmp_path / "f.csv", feat)
    write_table(tmp_path / "c.csv", clin.drop(columns=["ndi_2y", "poor_outcome_2y"]))
    cfg = tmp_path / "sel.yaml"
    cfg.write_text("inner_folds: 2\nstartup_trials: 2\npreprocess:\n  select_k: 30\n")
    res = fit(
        tmp_path / "f.csv",
        tmp_path / "c.csv",
        "accelerated",
        tmp_path / "run",
        config=cfg,
        **{**FAST, "repeats": 2},
    )
    for m in ("xgboost", "logistic"):
        assert abs(res.metrics["cv"][m]["auc"] - 0.5) < 0.12, (m, res.metrics["cv"][m]["auc"])


@pytest.mark.slow
def test_planted_signal_is_found_and_ranks_first_in_shap(signal_run):
    _tables, res = signal_run
    cv = res.metrics["cv"]
    assert cv["xgboost"]["auc"] > 0.8 and cv["logistic"]["auc"] > 0.8
    assert cv["xgboost"]["auc_ci"][0] < cv["xgboost"]["auc"] < cv["xgboost"]["auc_ci"][1]
    assert res.metrics["shap_top"][0]["variable"] in SIGNAL_COLUMNS
    # Leakage rule: post-operative outcomes are never predictors.
    assert {"ndi_2y", "poor_outcome_2y"} <= set(res.metrics["data"]["leakage_excluded"])
    manifest = json.loads((res.out / "model" / "model.json").read_text())
    for info in manifest["models"].values():
        assert "ndi_2y" not in info["input_columns"] and "accelerated" not in info["input_columns"]
    assert manifest["models"]["clinical_only"]["input_columns"] == [
        "age",
        "sex",
        "bmi",
        "smoking",
        "ndi_baseline",
    ]
    assert set(manifest["versions"]) >= {"cdeg", "xgboost", "scikit-learn", "optuna", "shap", "python"}
    oof = pd.read_csv(res.out / "oof_predictions.csv")
    assert len(oof) == 120 and set(oof["fold"]) == {0, 1, 2} and oof["patient_id"].is_unique


@pytest.mark.slow
def test_saved_model_reloads_from_json_and_predicts_identically(signal_run):
    tables, res = signal_run
    model_dir = res.out / "model"
    assert {p.suffix for p in model_dir.rglob("*") if p.is_file()} <= {".json", ".csv", ".png"}  # no pickle
    bundle = ModelBundle.load(model_dir)
    X = tables.features.set_index("patient_id").join(tables.clinical.set_index("patient_id"))
    for m, clf in res.models.items():
        cols = bundle.manifest["models"][m]["input_columns"]
        Xm = X[cols].astype({c: object for c in cols if X[c].dtype != float})
        assert np.array_equal(clf.predict_proba(Xm), bundle.models[m].predict_proba(Xm)), m


@pytest.mark.slow
def test_optuna_studies_live_in_sqlite_and_a_rerun_resumes(signal_run, tmp_path):
    import optuna

    tables, res = signal_run
    run = tmp_path / "run"
    shutil.copytree(res.out, run)
    url = f"sqlite:///{run / 'optuna.db'}"
    studies = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)}
    key = res.metrics["protocol"]["run_key"]
    expected = {
        f"cdeg-{key}-{m}-{s}" for m in ("xgboost", "logistic") for s in ("final", "r0-f0", "r0-f1", "r0-f2")
    }
    assert set(studies) == expected and set(studies.values()) == {5}
    kwargs = dict(config=_inner2(tmp_path), **SIGNAL)
    again = fit(tables.features_path, tables.clinical_path, "accelerated", run, **kwargs)
    assert again.metrics["new_trials"] == 0  # every study reused
    assert again.metrics["cv"]["xgboost"]["auc"] == res.metrics["cv"]["xgboost"]["auc"]
    more = fit(tables.features_path, tables.clinical_path, "accelerated", run, **{**kwargs, "trials": 6})
    assert more.metrics["new_trials"] == len(expected)  # one more trial per study, the first five kept
    assert {s.n_trials for s in optuna.get_all_study_summaries(url)} == {6}


@pytest.mark.slow
def test_predict_imputes_missing_variables_with_a_warning(signal_run, tmp_path, caplog):
    _tables, res = signal_run
    feat, clin = simulate(n=30, n_features=80, signal=4.0, prevalence=0.3, seed=4)
    feat = feat.drop(columns=[c for c in feat.columns if c.startswith("xray__")])
    write_table(tmp_path / "f.csv", feat)
    write_table(tmp_path / "c.csv", clin.drop(columns=["ndi_baseline"]))
    with caplog.at_level(logging.WARNING, logger="cdeg.modeling"):
        out = predict(
            res.out / "model",
            tmp_path / "f.csv",
            tmp_path / "pred",
            clinical=tmp_path / "c.csv",
            progress=False,
        )
    assert any("imputed with the development values" in r.message for r in caplog.records)
    used = json.loads((res.out / "model" / "model.json").read_text())["models"]["xgboost"]["used_columns"]
    dropped = [c for c in used if c.startswith("xray__") or c == "ndi_baseline"]
    assert dropped and set(out.missing["xgboost"]) == set(dropped)
    share = out.imputed_share["xgboost"]
    assert share >= len(dropped) / len(used) - 1e-9
    report = json.loads((tmp_path / "pred" / "predict.json").read_text())
    assert report["imputed_share"]["xgboost"] == pytest.approx(share)
    preds = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    assert (
        len(preds) == 30 and preds["probability"].between(0, 1).all() and (preds["imputed_share"] > 0).all()
    )
    assert len(list((tmp_path / "pred" / "waterfalls").glob("*.svg"))) == 30


@pytest.mark.slow
def test_validate_reports_external_metrics_beside_development(signal_run, tmp_path):
    _tables, res = signal_run
    feat, clin = simulate(n=150, n_features=80, signal=4.0, prevalence=0.3, seed=9)
    write_table(tmp_path / "f.csv", feat)
    write_table(tmp_path / "c.csv", clin)
    v = validate(res.out / "model", tmp_path / "f.csv", tmp_path / "c.csv", "accelerated", tmp_path / "val")
    ext = v.metrics["external"]["xgboost"]
    assert ext["auc"] > 0.7 and ext["auc_ci"][0] < ext["auc"] < ext["auc_ci"][1]
    assert set(ext) >= {"brier", "calibration_intercept", "calibration_slope"}
    lo, hi = ext["bootstrap"]["brier"]["ci"]
    assert lo <= ext["brier"] <= hi  # patient-bootstrap interval, as for the development estimates
    assert v.metrics["development"]["cv"]["xgboost"]["auc"] == res.metrics["cv"]["xgboost"]["auc"]
    _assert_self_contained(tmp_path / "val" / "report.html", min_images=3)


@pytest.mark.slow
def test_fit_report_is_self_contained(signal_run):
    _, res = signal_run
    _assert_self_contained(res.out / "report.html", min_images=8)
    # The Riley sample size of the primary model's candidate parameters, in metrics.json and the report.
    ss = json.loads((res.out / "metrics.json").read_text())["sample_size"]
    assert ss["n_patients"] == 120 and ss["after_reduction"]["n_params"] >= 1 and ss["raw"]["n_params"] >= 80
    assert (
        f"The Riley criteria need {ss['after_reduction']['n_required']} patients"
        in (res.out / "report.html").read_text()
    )
    for name in ("roc", "calibration", "decision_curve", "shap_beeswarm", "shap_bar", "shap_dependence_1"):
        assert (res.out / "plots" / f"{name}.png").stat().st_size > 1000


def _assert_self_contained(path: Path, min_images: int) -> None:
    html = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert html.count('src="data:image/png;base64,') >= min_images


# --- bad inputs --------------------------------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path):
    feat, clin = simulate(n=40, n_features=12, signal=2.0, prevalence=0.35, seed=2)
    return tmp_path, feat, clin


def _fit_tiny(tmp: Path, feat: pd.DataFrame, clin: pd.DataFrame, target: str = "accelerated", **kw):
    write_table(tmp / "f.csv", feat)
    write_table(tmp / "c.csv", clin)
    return fit(tmp / "f.csv", tmp / "c.csv", target, tmp / "run", **{**FAST, **kw})


def test_duplicate_ids_are_reported_with_the_file(tiny):
    tmp, feat, clin = tiny
    feat.loc[5, "patient_id"] = feat.loc[4, "patient_id"]
    with pytest.raises(CdegError, match=r"f\.csv: duplicate patient_id: P0004"):
        _fit_tiny(tmp, feat, clin)


def test_non_numeric_feature_value_names_patient_column_and_file(tiny):
    tmp, feat, clin = tiny
    col = feat.columns[3]
    feat[col] = feat[col].astype(object)
    feat.loc[7, col] = "n/a?"
    with pytest.raises(
        CdegError, match=rf"patient P0007 / .*f\.csv: non-numeric value 'n/a\?' in feature column '{col}'"
    ):
        _fit_tiny(tmp, feat, clin)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.assign(accelerated=0), r"c\.csv: target 'accelerated' is constant"),
        # 2 is outside accelerated's range in configs/check.yaml: those patients are left out (one log line
        # each) and the rest has no event.
        (lambda c: c.assign(accelerated=c["accelerated"] * 2), r"c\.csv: target 'accelerated' is constant"),
        # 0.5 is inside the range but not 0/1: left out the same way (one line each); --strict stops (below).
        (lambda c: c.assign(accelerated=c["accelerated"] * 0.5), r"c\.csv: target 'accelerated' is constant"),
        (lambda c: c.drop(columns=["accelerated"]), r"c\.csv: no target column 'accelerated'"),
        (lambda c: c.assign(accelerated=[1, 1] + [0] * 38), r"too few events"),
    ],
)
def test_bad_targets_give_one_line_messages(tiny, change, message):
    tmp, feat, clin = tiny
    with pytest.raises(CdegError, match=message) as e:
        _fit_tiny(tmp, feat, change(clin))
    assert "\n" not in str(e.value)


def test_a_target_that_is_not_0_or_1_leaves_out_only_that_patient(tiny, caplog):
    tmp, feat, clin = tiny
    clin = clin.astype({"accelerated": float})
    clin.loc[3, "accelerated"] = 0.5
    with pytest.raises(
        CdegError, match=r"patient P0003 / .*c\.csv: target 'accelerated' must be 0 or 1, found 0.5"
    ):
        _fit_tiny(tmp, feat, clin, strict=True)
    res = _fit_tiny(tmp, feat, clin)
    assert res.metrics["n_patients"] == len(clin) - 1
    assert any("P0003" in r.getMessage() and "left out" in r.getMessage() for r in caplog.records)


def test_rows_without_target_and_unmatched_ids_are_reported(tiny, caplog):
    tmp, feat, clin = tiny
    clin = clin.astype({"accelerated": float})
    clin.loc[0, "accelerated"] = np.nan
    feat = feat.drop(index=[1])
    write_table(tmp / "f.csv", feat)
    write_table(tmp / "c.csv", clin)
    from cdeg.modeling.data import load_dataset

    with caplog.at_level(logging.WARNING):
        ds = load_dataset(
            tmp / "f.csv",
            tmp / "c.csv",
            "accelerated",
            "patient_id",
            leakage_columns=FitConfig().leakage_columns,
        )
    assert ds.report["ids_without_target"] == ["P0000"] and ds.report["ids_only_in_clinical"] == ["P0001"]
    assert len(ds.y) == 38 and "without a value" in caplog.text


def test_exclude_accepts_names_and_globs(tiny):
    from cdeg.modeling.data import load_dataset

    tmp, feat, clin = tiny
    write_table(tmp / "f.csv", feat)
    write_table(tmp / "c.csv", clin)
    ds = load_dataset(tmp / "f.csv", tmp / "c.csv", "accelerated", "patient_id", exclude=("xray__*", "bmi"))
    assert not [c for c in ds.X.columns if c.startswith("xray__") or c == "bmi"]
    assert any(c.startswith("mri__") for c in ds.X.columns)


# --- command line ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_fit_predict_validate_in_process(tiny):
    tmp, feat, clin = tiny
    write_table(tmp / "f.csv", feat)
    write_table(tmp / "c.csv", clin)
    cfg = _inner2(tmp)
    runner = CliRunner()
    common = ["--features", str(tmp / "f.csv"), "--clinical", str(tmp / "c.csv")]
    r = runner.invoke(
        cli,
        [
            "--no-progress",
            "fit",
            *common,
            "--target",
            "accelerated",
            "--trials",
            "2",
            "--outer-folds",
            "2",
            "--repeats",
            "1",
            "--jobs",
            "1",
            "--config",
            str(cfg),
            "--exclude",
            "bmi",
            "--out",
            str(tmp / "run"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert re.search(r"xgboost\tAUC 0\.\d{3} \[", r.output)
    metrics = json.loads((tmp / "run" / "metrics.json").read_text())
    assert set(metrics) >= {"target", "n_patients", "n_features", "prevalence", "cv"}
    assert set(metrics["cv"]["logistic"]) >= {
        "auc",
        "auc_ci",
        "brier",
        "calibration_intercept",
        "calibration_slope",
    }
    assert "bmi" in metrics["data"]["user_excluded"]
    r = runner.invoke(
        cli,
        [
            "--no-progress",
            "predict",
            "--model",
            str(tmp / "run" / "model"),
            *common,
            "--out",
            str(tmp / "pred"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp / "pred" / "predictions.csv")) == 40
    r = runner.invoke(
        cli,
        [
            "--no-progress",
            "validate",
            "--model",
            str(tmp / "run" / "model"),
            *common,
            "--target",
            "accelerated",
            "--out",
            str(tmp / "val"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "external AUC" in r.output and (tmp / "val" / "report.html").is_file()
    # The baselines (nothing fitted) beside the models, in both metrics files and reports.
    from sklearn.metrics import roc_auc_score

    val = json.loads((tmp / "val" / "metrics.json").read_text())
    for m in (metrics, val):
        assert set(m["baselines"]) == {"age", "degeneration_count", "definitions"}
        assert m["baselines"]["age"]["n"] == 40
    assert val["baselines"]["age"]["auc"] == pytest.approx(roc_auc_score(clin["accelerated"], clin["age"]))
    for report in (tmp / "run" / "report.html", tmp / "val" / "report.html"):
        assert "degeneration count (age-blind)" in report.read_text()


def test_cli_bad_input_is_one_line_error(tiny):
    tmp, feat, clin = tiny
    write_table(tmp / "f.csv", feat)
    write_table(tmp / "c.csv", clin.drop(columns=["accelerated"]))
    r = CliRunner().invoke(
        cli,
        [
            "fit",
            "--features",
            str(tmp / "f.csv"),
            "--clinical",
            str(tmp / "c.csv"),
            "--target",
            "accelerated",
            "--out",
            str(tmp / "run"),
        ],
    )
    assert r.exit_code == 1
    assert re.search(r"^Error: .*c\.csv: no target column 'accelerated'", r.output, re.M)
    assert "Traceback" not in r.output


@pytest.mark.slow
def test_worker_processes_give_the_same_numbers(tiny):
    tmp, feat, clin = tiny
    cfg = _inner2(tmp)
    one = _fit_tiny(tmp, feat, clin, config=cfg, trials=2, outer_folds=2)
    shutil.rmtree(tmp / "run")
    two = _fit_tiny(tmp, feat, clin, config=cfg, trials=2, outer_folds=2, jobs=2)
    pd.testing.assert_frame_equal(one.oof, two.oof)


def test_parquet_features_table_is_read(tiny):
    from cdeg.modeling.data import load_dataset

    tmp, feat, clin = tiny
    write_table(tmp / "f.parquet", feat)
    write_table(tmp / "c.csv", clin)
    ds = load_dataset(tmp / "f.parquet", tmp / "c.csv", "accelerated", "patient_id")
    assert (
        len(ds.y) == 40 and ds.ids[0] == "P0000" and ds.column_sets["xray__C3-C4__disc_angle_deg"] == "xray"
    )
