"""AUC intervals: the cross-validated AUC's influence-curve interval (LeDell et al. 2015), DeLong on the logit
scale, and the coverage simulation of benchmarks/bench_coverage.py in a tiny configuration."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from cdeg.modeling import metrics as M
from sklearn.metrics import roc_auc_score

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_coverage.py"


def test_cv_auc_interval_matches_a_hand_computation():
    # Fold 0: positives 0.9, 0.3 and negative 0.4 -> AUC 0.5; placements 1, 0 (positives), 0.5 (negative).
    # Fold 1: positive 0.8, negatives 0.2 and 0.8 (a tie counts one half) -> AUC 0.75; placements 0.75; 1, 0.5.
    # Weights n / n_pos = n / n_neg = 2. IC: fold 0 (1, -1, 0), mean square 2/3; fold 1 (0, 0.5, -0.5), 1/6.
    # sigma^2 = (2/3 + 1/6) / 2 = 5/12; var = sigma^2 / n = 5/72; cvAUC = (0.5 + 0.75) / 2 = 0.625.
    y = np.array([1, 0, 1, 0, 1, 0])
    p = np.array([0.9, 0.4, 0.3, 0.2, 0.8, 0.8])
    folds = np.array([0, 0, 0, 1, 1, 1])
    r = M.cv_auc_ic(y, p, folds)
    assert r["fold_auc"] == pytest.approx([0.5, 0.75])
    assert r["auc"] == pytest.approx(0.625)
    assert r["var"] == pytest.approx(5 / 72)
    half = 1.959963984540054 * np.sqrt(5 / 72)
    assert r["ci"] == pytest.approx([0.625 - half, 1.0])  # the upper end is clipped, as in ci.cvAUC
    assert r["skipped_folds"] == 0


def test_one_fold_gives_the_delong_variance_up_to_the_degrees_of_freedom():
    # With one fold the influence curve is DeLong's placement values: the same variance, with 1/m in place of
    # 1/(m - 1) in each class's sample variance.
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = y * 0.8 + rng.normal(size=200)
    r = M.cv_auc_ic(y, p, np.zeros(200))
    var = M.auc_ci(y, p)[3]
    m, n = int(y.sum()), int((1 - y).sum())
    assert r["auc"] == pytest.approx(roc_auc_score(y, p))
    assert var * min(m - 1, n - 1) / min(m, n) <= r["var"] * (1 + 1e-12)
    assert r["var"] <= var * max(m - 1, n - 1) / max(m, n) * (1 + 1e-12)


def test_a_single_class_fold_is_left_out_and_counted():
    y = np.array([1, 0, 1, 0, 0, 0])
    p = np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.4])
    r = M.cv_auc_ic(y, p, np.array([0, 0, 0, 0, 1, 1]))
    assert r["skipped_folds"] == 1 and r["fold_auc"] == [1.0]
    with pytest.raises(ValueError, match="both classes"):
        M.cv_auc_ic(np.zeros(4), np.arange(4.0), np.array([0, 0, 1, 1]))


def test_logit_delong_interval_stays_inside_0_1_where_the_plain_one_is_clipped():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 15)
    p = y * 2.0 + rng.normal(size=30)  # AUC 0.987
    a, lo, hi, _ = M.auc_ci(y, p)
    _, lo_plain, hi_plain, _ = M.auc_ci(y, p, scale="auc")
    assert 0.95 < a < 1 and hi_plain == 1.0
    assert 0 < lo < a < hi < 1
    assert lo < lo_plain  # asymmetric: longer towards 0.5
    assert M.auc_ci(y, np.where(y == 1, 2.0, 1.0))[1:3] == (1.0, 1.0)  # AUC exactly 1: no logit


def test_logit_delong_interval_matches_the_plain_one_near_one_half():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    p = rng.normal(size=2000) + 0.02 * y
    a, lo, hi, _ = M.auc_ci(y, p)
    _, lo_plain, hi_plain, _ = M.auc_ci(y, p, scale="auc")
    assert abs(a - 0.5) < 0.03
    assert lo == pytest.approx(lo_plain, abs=2e-4) and hi == pytest.approx(hi_plain, abs=2e-4)
    with pytest.raises(ValueError, match="scale"):
        M.auc_ci(y, p, scale="probit")


def test_corrected_t_interval_matches_a_hand_computation():
    # Two repeats x two folds of 4 patients (n = 8, n_test / n_train = 1): fold AUCs 1, 0.5, 0.75, 0.25.
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    p1 = np.array([0.9, 0.8, 0.1, 0.2, 0.6, 0.3, 0.5, 0.4])
    f1 = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p2 = np.array([0.9, 0.2, 0.1, 0.3, 0.1, 0.5, 0.4, 0.9])
    f2 = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    r = M.cv_auc_corrected_t(y, [p1, p2], [f1, f2])
    aucs = [1.0, 0.5, 0.75, 0.25]
    assert [roc_auc_score(y[f == k], p[f == k]) for p, f in ((p1, f1), (p2, f2)) for k in (0, 1)] == aucs
    se = np.sqrt((1 / 4 + 4 / 4) * np.var(aucs, ddof=1))  # var 0.1041667: se 0.3608
    assert r["auc"] == pytest.approx(0.625) and r["se"] == pytest.approx(se) and r["df"] == 3
    assert r["ci"] == pytest.approx([0.0, 1.0])  # 0.625 -+ 3.18 (t, 3 df) x 0.36: clipped on both sides
    r = M.cv_auc_corrected_t(y, [p1, p2], [f1, f2], level=0.5)
    half = 0.7648923284 * se  # the 75% quantile of t with 3 df
    assert r["ci"] == pytest.approx([0.625 - half, 0.625 + half])


def test_summarize_repeats_reports_the_cv_auc_and_keeps_the_other_intervals_beside_it():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 90)
    P = [y * 0.7 + rng.normal(size=90) for _ in range(2)]
    F = [rng.permutation(np.arange(90) % 3) for _ in range(2)]
    s = M.summarize_repeats(y, P, folds=F)
    ct = M.cv_auc_corrected_t(y, P, F)
    assert s["auc"] == pytest.approx(ct["auc"]) and s["auc_ci"] == ct["ci"] and s["auc_se"] == ct["se"]
    assert s["auc_ci_method"] == M.CV_AUC_CI_METHOD and "conservative" not in s["auc_ci_method"]
    assert "95.3%" in s["auc_ci_coverage"]
    per = [M.cv_auc_ic(y, p, f) for p, f in zip(P, F, strict=True)]
    half = 1.959963984540054 * np.sqrt(np.mean([r["var"] for r in per]))
    ic = np.mean([r["auc"] for r in per])
    assert ic == pytest.approx(s["auc"])  # equal folds: the same point estimate
    assert s["auc_ci_influence_curve"] == pytest.approx([ic - half, ic + half])
    old = M.summarize_repeats(y, P)  # without folds: the pooled DeLong interval
    assert s["auc_pooled"] == pytest.approx(old["auc"]) and s["auc_ci_delong_pooled"] == old["auc_ci"]
    assert old["auc_ci_method"] == M.POOLED_DELONG_METHOD
    assert M.summarize(y, P[0])["auc_ci_method"] == M.AUC_CI_METHOD


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("bench_coverage", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_the_coverage_simulation_runs_in_a_tiny_configuration(bench, tmp_path):
    args = ["--out", str(tmp_path), "--cohorts", "4", "--n", "60", "--big", "600", "--seed", "5"]
    res = bench.main(args)
    saved = json.loads((tmp_path / "coverage.json").read_text())
    assert saved["methods"] == res["methods"]
    assert saved["conditions"]["cohorts"] == 4 and saved["conditions"]["n"] == 60
    for method in bench.METHODS:
        m = saved["methods"][method]
        assert m["mean_width"] > 0
        for truth in bench.TRUTHS:
            c = m["coverage"][truth]
            assert c["hits"] <= 4 and c["ci"][0] <= c["coverage"] <= c["ci"][1]
    # Seeded: the same arguments give the same figures.
    assert bench.main(args)["methods"] == res["methods"]


def test_the_study_report_quotes_the_interval_method_and_its_measured_coverage():
    from cdeg.report.sections import _interval_note

    s = {"auc_ci_method": M.CV_AUC_CI_METHOD, "auc_ci_coverage": M.CV_AUC_CI_COVERAGE}
    note = _interval_note({"cv": {"xgboost": s}})
    assert "corrected resampled t interval" in note and "95.3%" in note
    assert _interval_note({"cv": {"xgboost": {"auc_ci_method": "DeLong"}}}) == ""  # an older fit run
