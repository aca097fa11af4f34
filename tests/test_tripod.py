"""TRIPOD+AI answers and limitations generated from a run's metrics (cdeg.modeling.tripod)."""

from __future__ import annotations

import pytest
from cdeg.modeling import tripod as T
from cdeg.modeling.transport import age_shift


def _fit(auc=0.80, ci=(0.74, 0.86), slope=1.0, count=0.70, p=None, definition=None):
    fit = {
        "target": "accelerated",
        "n_patients": 109,
        "events": 22,
        "n_features": 300,
        "cv": {
            "xgboost": {"auc": auc, "auc_ci": list(ci), "calibration_slope": slope, "n_input_variables": 300},
            "logistic": {"auc": 0.5, "auc_ci": [0.4, 0.6], "calibration_slope": 1.0},
        },
        "baselines": {"degeneration_count": {"auc": count, "auc_ci": [0.6, 0.8]}},
    }
    if p is not None:
        fit["permutation_test"] = {"p_value": p, "n_permutations": 19}
    if definition is not None:
        fit["outcome_definition"] = definition
    return fit


def _val(outside=10, n=300, intercept_ci=(-0.3, 0.3), imputed=0.0):
    val = {
        "n_patients": n,
        "primary_model": "xgboost",
        "imputed_share": {"xgboost": imputed},
        "external": {
            "xgboost": {
                "auc": 0.8,
                "calibration_intercept": sum(intercept_ci) / 2,
                "bootstrap": {"calibration_intercept": {"ci": list(intercept_ci)}},
            }
        },
        "subgroups": [
            {"variable": "sex", "group": "F", "n": 150, "observed": 0.2, "mean_risk": 0.2, "auc": 0.84},
            {"variable": "sex", "group": "M", "n": 150, "observed": 0.2, "mean_risk": 0.2, "auc": 0.78},
            {
                "variable": "age",
                "group": "outside the development range (31-62)",
                "n": outside,
                "observed": 0.19,
                "mean_risk": 0.32,
                "auc": 0.83,
            },
        ],
    }
    # what `cdeg validate` writes: the age bands beside the outside row, counted by transport.age_shift
    val["subgroups"].append({"variable": "age", "group": "31-62", "n": n - outside, "observed": 0.2})
    val["subgroups"].append({"variable": "age", "group": "66+", "n": outside, "observed": 0.19})
    val["transport"] = {"age": age_shift(val["subgroups"], [31, 62])}
    return val


def test_a_clean_run_flags_nothing():
    assert T.limitations(_fit(), _val()) == []


@pytest.mark.parametrize(
    ("fit", "val", "words"),
    [
        (_fit(ci=(0.6, 0.9)), None, "imprecise"),
        (_fit(slope=0.6), None, "too extreme"),
        (_fit(slope=1.4), None, "too moderate"),
        (_fit(count=0.85), None, "does not beat the age-blind degeneration count (0.850)"),
        (_fit(p=0.2), None, "does not separate the model from chance"),
        (_fit(definition={"text": "rule", "circular": True}), None, "automates that reading"),
        (_fit(), _val(outside=175), "58% of the external patients have an age outside"),
        (_fit(), _val(intercept_ci=(-1.2, -0.5)), "over-predicts systematically"),
        (_fit(), _val(intercept_ci=(0.2, 0.9)), "under-predicts systematically"),
        (_fit(), _val(imputed=0.2), "20% of the model's input values were missing"),
    ],
)
def test_each_rule_fires_on_its_own_figure(fit, val, words):
    lines = T.limitations(fit, val)
    assert len(lines) == 1
    assert words in lines[0]


def test_the_riley_calculation_and_a_low_ceiling_are_read():
    riley = {"n_required": 2507, "n_params": 28, "r2_cs": 0.095, "r2_source": "15% of max"}
    fit = {**_fit(), "sample_size": {"after_reduction": riley}, "ceilings": {"observable": 0.62}}
    lines = T.limitations(fit)
    assert lines[0].startswith("Exploratory target: its observable ceiling is only 0.62")
    assert lines[1].startswith("109 patients are fewer than the 2,507 the Riley criteria ask for 28")
    assert (
        "need 2,507 patients for 28 candidate parameters after the preprocessing reduction (not met"
        in (T.run_answers(fit)["TRIPOD+AI 10"])
    )
    enough = {**fit, "n_patients": 3000, "ceilings": {"observable": 0.9}}
    assert T.limitations(enough) == []


def test_the_primary_model_decides_which_figures_are_read():
    # The logistic model's interval is wide: flagged only when it is the study's primary model.
    fit = _fit()
    fit["cv"]["logistic"]["auc_ci"] = [0.3, 0.7]
    assert T.limitations(fit) == []
    assert any("imprecise" in x for x in T.limitations(T.with_primary(fit, "logistic")))


def test_answers_name_the_run_figures():
    ans = T.run_answers(_fit(definition={"text": "score above the 90th centile"}), _val(outside=175))
    assert ans["TRIPOD+AI 8a"] == "score above the 90th centile (22 events in 109 patients)"
    assert "300 candidate variables (0.07 events per candidate variable)" in ans["TRIPOD+AI 10"]
    assert ans["TRIPOD+AI 16"].startswith("175 of 300 external patients have an age outside")
    assert "lowest 0.780 (sex M), highest 0.840 (sex F)" in ans["TRIPOD+AI 23a"]
    assert ans["TRIPOD+AI 24"] == "the model was applied unchanged (no recalibration asked for)"
    assert "58% of the external patients" in ans["TRIPOD+AI 26"]


def test_answers_without_validation_say_so():
    ans = T.run_answers(_fit())
    assert ans["TRIPOD+AI 16"] == "no external validation in this run"
    assert ans["TRIPOD+AI 23a"] == "no subgroup table in this run"
    assert ans["TRIPOD+AI 24"] == "no external validation in this run"
    assert ans["TRIPOD+AI 8a"].startswith("column accelerated of the clinical table")
