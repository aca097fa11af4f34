"""Riley et al. minimum sample size (cdeg.modeling.samplesize), its place in metrics.json and the reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cdeg.modeling.data import Dataset
from cdeg.modeling.fit import sample_size, truth_ceilings
from cdeg.modeling.report import EXPLORATORY_CEILING, ceiling_block, exploratory_note, sample_size_text
from cdeg.modeling.samplesize import cox_snell_from_c, max_cox_snell, riley_sample_size
from scipy.special import ndtri


# pmsampsize's own tests (tests/testthat/test_bin.R): R2cs, parameters, prevalence -> criteria 1, 2, 3 and the
# minimum, and the events per parameter at the minimum. 4.1 is the package's documented example.
@pytest.mark.parametrize(
    ("r2", "p", "prevalence", "ns", "epp"),
    [
        (0.288, 24, 0.174, (623, 668, 221, 668), 4.84),
        (0.55, 24, 0.174, (255, 532, 221, 532), 3.86),
        (0.288, 36, 0.174, (934, 1002, 221, 1002), 4.84),
        (0.288, 24, 0.25, (623, 583, 289, 623), 6.49),
    ],
)
def test_riley_criteria_match_pmsampsize(r2, p, prevalence, ns, epp):
    r = riley_sample_size(p, prevalence, r2_cs=r2)
    assert (r.n_shrinkage, r.n_optimism, r.n_risk, r.n_required) == ns
    assert round(r.epp_required, 2) == epp
    assert r.r2_source == "given" and r.events_required == pytest.approx(ns[3] * prevalence)


def test_cox_snell_from_c_is_what_pmsampsize_simulates():
    # pmsampsize's cstat2rsq: two normal linear predictors, a logistic calibration fit, R2 = 1 - exp(-LR/n).
    from sklearn.linear_model import LogisticRegression

    c, prevalence, n = 0.75, 0.3, 200_000
    rng = np.random.default_rng(0)
    events = int(prevalence * n)
    lp = np.r_[rng.normal(np.sqrt(2) * ndtri(c), 1, events), rng.normal(0, 1, n - events)]
    y = np.r_[np.ones(events), np.zeros(n - events)]
    fit = LogisticRegression(C=np.inf).fit(lp[:, None], y)
    p = fit.predict_proba(lp[:, None])[:, 1]
    gain = np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)) - (
        events * np.log(prevalence) + (n - events) * np.log(1 - prevalence)
    )
    simulated = 1 - np.exp(-2 * gain / n)
    assert cox_snell_from_c(c, prevalence) == pytest.approx(simulated, abs=0.004)
    r = riley_sample_size(10, prevalence, c_statistic=c)
    assert r.r2_source == "c_statistic" and r.r2_cs == pytest.approx(cox_snell_from_c(c, prevalence))


def test_default_r2_and_bad_inputs():
    r = riley_sample_size(12, 0.26)
    assert r.r2_source == "15% of max" and r.r2_cs == pytest.approx(0.15 * max_cox_snell(0.26))
    # More candidate parameters need more patients; the overall-risk criterion does not depend on them.
    more = riley_sample_size(40, 0.26)
    assert more.n_required > r.n_required and more.n_risk == r.n_risk
    for kwargs, words in (
        ({"n_params": 0, "prevalence": 0.2}, "n_params"),
        ({"n_params": 5, "prevalence": 1.0}, "proportion"),
        ({"n_params": 5, "prevalence": 0.2, "r2_cs": 0.9}, "Cox-Snell"),
        ({"n_params": 5, "prevalence": 0.2, "c_statistic": 0.4}, "C-statistic"),
    ):
        with pytest.raises(ValueError, match=words):
            riley_sample_size(**kwargs)


def test_fit_metrics_and_report_sentence():
    metrics = {
        "n_patients": 109,
        "events": 28,
        "prevalence": 28 / 109,
        "cv": {"xgboost": {"n_variables_final": 14, "n_input_variables": 90}},
    }
    ss = sample_size(metrics, "xgboost")
    assert ss["after_reduction"]["n_params"] == 14 and ss["raw"]["n_params"] == 90
    assert ss["after_reduction"]["n_required"] == riley_sample_size(14, 28 / 109).n_required
    text = sample_size_text(ss)
    need = ss["after_reduction"]["n_required"]
    assert f"The Riley criteria need {need} patients" in text and "14 candidate parameters" in text
    assert "this study has 109 (28 events): too few" in text and "90 input columns" in text


def test_exploratory_wording_for_a_low_ceiling():
    low = {"observable": 0.62, "latent": 0.65}
    note = exploratory_note(low)
    assert note and note.startswith("Exploratory target") and "observable ceiling is only 0.62" in note
    assert exploratory_note({"observable": 0.80, "latent": 0.90}) is None
    assert exploratory_note({"latent": EXPLORATORY_CEILING - 0.01}) is not None  # the latent when alone
    assert exploratory_note({}) is None
    assert "Exploratory target" in ceiling_block(low) and "Exploratory" not in ceiling_block({"latent": 0.9})
    # The study report's target section uses the same sentence from the development ceilings.
    from cdeg.report.sections import _exploratory

    by_role = {"observable": {"development": 0.6, "external": None}, "latent": {"development": 0.66}}
    assert _exploratory(by_role) == exploratory_note({"observable": 0.6, "latent": 0.66})


def test_truth_ceilings_read_beside_the_clinical_table(tmp_path):
    ids = [f"P{i}" for i in range(8)]
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    ds = Dataset(
        X=pd.DataFrame({"age": np.arange(8.0)}, index=ids), y=y, target="poor_outcome_2y", column_sets={},
        categorical=[],
    )  # fmt: skip
    clinical = tmp_path / "clinical.csv"
    assert truth_ceilings(clinical, ds) == {}  # a real cohort: no truth
    (tmp_path / "truth").mkdir()
    pd.DataFrame({
        "patient_id": ids,
        "p_observable_poor_outcome_2y": [0.1, 0.2, 0.3, 0.9, 0.4, 0.5, 0.6, 0.7],
        "p_latent_poor_outcome_2y": np.linspace(0.1, 0.8, 8),
    }).to_csv(tmp_path / "truth" / "patients.csv", index=False)  # fmt: skip
    got = truth_ceilings(clinical, ds)
    assert got == {"observable": pytest.approx(0.75), "latent": pytest.approx(1.0)}
