"""What `cdeg fit` adds for reviewers: the permutation test, bootstrap intervals, the corrected t-test, age
norms from a reference cohort, and the checklist, through the function and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cdeg.modeling.fit import fit
from cdeg.modeling.models import TabularClassifier
from cdeg.modeling.preprocess import AgeNorm
from click.testing import CliRunner
from tables import measurement_signal_tables

from cdeg.cli import cli

FAST = {"trials": 2, "outer_folds": 3, "repeats": 2, "jobs": 1, "tiers": "none"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmp")
    f, c = measurement_signal_tables(tmp / "data", n=80, effect=1.5)
    return fit(f, c, "accelerated", tmp / "run", permutations=4, progress=False, **FAST)


def test_the_permutation_test_puts_a_planted_signal_above_every_shuffle(run):
    perm = run.metrics["permutation_test"]
    assert perm["n_permutations"] == 4 and len(perm["null"]) == 4
    assert perm["observed"] > max(perm["null"])
    assert perm["p_value"] == pytest.approx(1 / 5)  # the smallest p four shuffles can give
    assert "Permutation test" in (run.out / "report.html").read_text()


def test_bootstrap_intervals_and_the_corrected_t_test_are_in_the_metrics(run):
    for m, s in run.metrics["cv"].items():
        boot = s["bootstrap"]
        for k in ("brier", "calibration_intercept", "calibration_slope"):
            lo, hi = boot[k]["ci"]
            assert lo <= s[k] <= hi, (m, k)
    t = run.metrics["comparison"]["xgboost_vs_logistic"]["corrected_t"]
    # The correction widens the naive paired interval: the folds share training patients.
    assert t["se"] > t["se_naive"] and t["n_folds"] == 6
    html = (run.out / "report.html").read_text()
    assert "corrected resampled t-test" in html and "TRIPOD+AI" in html and "PROBAST+AI" in html


def test_metrics_json_names_the_cv_auc_interval_and_the_report_drops_conservative(run):
    from cdeg.modeling import metrics as M

    from cdeg.outputs import FitRun

    saved = FitRun(run.out).read()
    for m, s in saved["cv"].items():
        assert s["auc_ci_method"] == M.CV_AUC_CI_METHOD, m
        assert s["auc_ci"][0] <= s["auc"] <= s["auc_ci"][1]
        assert len(s["auc_ci_influence_curve"]) == 2 and len(s["auc_ci_delong_pooled"]) == 2
    assert M.CV_AUC_CI_METHOD in saved["protocol"]["auc_ci"]
    html = (run.out / "report.html").read_text()
    assert "corrected resampled t interval" in html and "conservative" not in html


def test_age_norms_from_a_reference_cohort_through_the_command_line(tmp_path):
    f, c = measurement_signal_tables(tmp_path / "dev", n=60)
    rf, rc = measurement_signal_tables(tmp_path / "ref", n=120, seed=9, prefix="R")
    out = tmp_path / "run"
    args = ["fit", "--features", str(f), "--clinical", str(c), "--target", "accelerated", "--out", str(out)]
    args += ["--trials", "2", "--outer-folds", "2", "--repeats", "1", "--jobs", "1", "--tiers", "none"]
    r = CliRunner().invoke(cli, [*args, "--age-reference", str(rf), str(rc)])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "model" / "model.json").read_text())
    assert manifest["config"]["preprocess"]["age_norm"] == "reference"
    files = manifest["models"]["xgboost"]["files"]
    clf = TabularClassifier.load(out / "model", "xgboost", files, manifest["models"]["xgboost"]["params"])
    norm = clf.preprocessor_.step(AgeNorm)
    # Fitted once on the 120 reference patients, not on the 60 development patients.
    assert norm.reference["n_patients"] == 120


def test_an_age_reference_that_is_not_a_cohort_stops_the_study_before_any_work(tmp_path):
    from cdeg.config import ConfigError
    from cdeg.pipeline.config import load_run_config

    data = yaml.safe_load((Path(__file__).parent / "run_tiny.yaml").read_text())
    data["fit"]["age_reference"] = "population"
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="age_reference = 'population' is not a cohort"):
        load_run_config(cfg)
