"""The ceilings of the synthetic cohorts (cdeg.synth.ceiling): tables, models, cache, truth columns."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from cdeg.cli import cli
from cdeg.cohort import TRUTH_CEILINGS, Cohort
from cdeg.config import ConfigError, from_dict, load_yaml, shipped_config
from cdeg.io import read_table
from cdeg.synth import load_synth_config, synthesize
from cdeg.synth.ceiling import (
    CACHE_ENV,
    CeilingConfig,
    cache_folder,
    ceiling_columns,
    ceiling_models,
    ceiling_probabilities,
    latent_table,
    observable_table,
)
from cdeg.synth.model import PATIENT_COLUMNS, load_model_config, sample_cohort

CFG = load_model_config()
N_LARGE = 2000  # the large cohort of these tests (the shipped one has 20,000 patients)
SMALL_CONFIG = f"ceiling:\n  n: {N_LARGE}\n"
# Anything that a study cannot observe, or that is an outcome.
FORBIDDEN = (
    "predisposition", "d_latent", "p_oracle", "threshold", "accelerated", "_1y", "_2y", "recovery",
    "poor_outcome", "reoperation", "p_latent", "p_observable",
)  # fmt: skip


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A cache folder of this module's own, so the models are fitted once here and never read from ~/.cache."""
    path = tmp_path_factory.mktemp("cdeg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(path))
        yield path


@pytest.fixture(scope="module")
def neck_test(cache_dir):
    """A 2000-patient neck cohort (not the large one) and its ceiling probabilities."""
    tables = sample_cohort(CFG, "neck", 2000, seed=3)
    return tables, ceiling_probabilities(CFG, "neck", tables, n=N_LARGE)


@pytest.fixture(scope="module")
def population_test(cache_dir):
    tables = sample_cohort(CFG, "population", 2000, seed=4)
    return tables, ceiling_probabilities(CFG, "population", tables, n=N_LARGE)


# --- tables ------------------------------------------------------------------------------------------------------
def test_observable_table_shows_only_what_images_and_clinic_show():
    tables = sample_cohort(CFG, "neck", 300, seed=5)
    obs = observable_table(tables)
    assert list(obs.index) == list(tables.patients["patient_id"])
    leaked = [c for c in obs.columns if any(word in c for word in FORBIDDEN)]
    assert leaked == []
    assert all(dtype.kind == "f" for dtype in obs.dtypes)
    # The markers are the truth's values: C5-C6 KL grade of the patients with a radiograph.
    levels = tables.levels.set_index(["patient_id", "level"])
    with_xray = tables.patients.loc[tables.patients.has_xray == 1, "patient_id"]
    expected = levels.loc[[(p, "C5-C6") for p in with_xray], "kl_grade"].astype(float).to_numpy()
    assert np.array_equal(obs.loc[with_xray, "C5-C6_kl_grade"].to_numpy(), expected)
    # An image not taken shows nothing: no Miyazaki grade without an MRI, heights from the radiograph.
    no_mri = tables.patients.loc[tables.patients.has_mri == 0, "patient_id"]
    assert len(no_mri) > 0
    assert obs.loc[no_mri, "C5-C6_miyazaki_grade"].isna().all()
    assert obs.loc[no_mri, "C5-C6_disc_height_middle_mm"].notna().all()
    # Blanked clinical values stay missing (HistGradientBoosting takes NaN as it is).
    assert obs["bmi"].isna().sum() == tables.clinical["bmi"].isna().sum() > 0


def test_latent_table_has_the_true_degeneration_instead_of_the_markers():
    tables = sample_cohort(CFG, "population", 50, seed=6)
    lat = latent_table(tables)
    assert "C5-C6_d_latent" in lat and not any("kl_grade" in c or "p_oracle" in c for c in lat.columns)
    assert not any(c.startswith("index_") or c.startswith("arm_") for c in lat.columns)  # not operated
    d = tables.levels.query("level == 'C5-C6'")["d_latent"].to_numpy()
    assert np.allclose(lat["C5-C6_d_latent"].to_numpy(), d)


# --- the ceilings -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["neck_test", "population_test"])
def test_observable_ceiling_is_below_the_latent_oracle(fixture, request):
    tables, probs = request.getfixturevalue(fixture)
    y = tables.clinical["accelerated"]
    latent = roc_auc_score(y, probs["p_latent_accelerated"])
    observable = roc_auc_score(y, probs["p_observable_accelerated"])
    assert latent == pytest.approx(roc_auc_score(y, tables.patients["p_oracle"]))
    assert 0.75 < observable < latent, (observable, latent)


def test_poor_outcome_ceilings_only_where_there_is_surgery(neck_test, population_test):
    assert list(neck_test[1].columns) == ["patient_id", *ceiling_columns(("accelerated", "poor_outcome_2y"))]
    assert list(population_test[1].columns) == ["patient_id", *ceiling_columns(("accelerated",))]
    tables, probs = neck_test
    for kind, column in TRUTH_CEILINGS["poor_outcome_2y"].items():
        p = probs[column]
        assert p.between(0, 1).all() and p.std() > 0.01, kind
        # Clinical prognostic factors and degeneration give the outcome some signal, far from certainty (the
        # observable model of these tests is fitted on 2,000 patients only: lower than the shipped 20,000's).
        low = 0.6 if kind == "latent" else 0.53
        assert low < roc_auc_score(tables.clinical["poor_outcome_2y"], p) < 0.75, kind
    # The latent ceiling is the exact oracle the generator wrote, not a fitted model.
    assert np.allclose(probs["p_latent_poor_outcome_2y"], tables.oracles["poor_outcome_2y"])


def test_held_out_metrics_compare_both_estimators(neck_test):
    m = ceiling_models(CFG, "neck", N_LARGE)
    for target in ("accelerated", "poor_outcome_2y"):  # both have an exact latent oracle: no latent model
        assert m.metrics[target]["latent"]["exact_auc"] > m.metrics[target]["observable"]["hgb_auc"] - 0.02
        assert (target, "latent") not in m.models
    for target, kind in (("accelerated", "observable"), ("poor_outcome_2y", "observable")):
        entry = m.metrics[target][kind]
        best = max(entry["hgb_auc"], entry["logistic_auc"])
        assert entry[f"{entry['chosen']}_auc"] == best
        assert entry["n_train"] + entry["n_held_out"] == N_LARGE


# --- the cache ---------------------------------------------------------------------------------------------------
def _only_entry(folder):
    files = list(folder.glob("population-*.joblib"))
    assert len(files) == 1, files
    return files[0]


def test_cache_hit_then_miss_when_the_configuration_changes(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    first = ceiling_models(CFG, "population", 500)
    entry = _only_entry(cache_folder())
    stamp = entry.stat().st_mtime_ns
    again = ceiling_models(CFG, "population", 500)
    assert entry.stat().st_mtime_ns == stamp and again.key == first.key
    assert again.fit_seconds == first.fit_seconds  # the recorded fit, not a new one
    other = load_model_config(overrides={"degeneration.noise_sd": 0.5})
    changed = ceiling_models(other, "population", 500)
    assert changed.key != first.key and len(list(cache_folder().glob("population-*.joblib"))) == 2
    assert ceiling_models(CFG, "population", 600).key not in (first.key, changed.key)


def test_a_corrupt_cache_entry_is_refitted_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    tables = sample_cohort(CFG, "population", 40, seed=9)
    before = ceiling_probabilities(CFG, "population", tables, n=500)
    entry = _only_entry(cache_folder())
    entry.write_bytes(b"not a pickle")
    with caplog.at_level(logging.WARNING, logger="cdeg.synth.ceiling"):
        after = ceiling_probabilities(CFG, "population", tables, n=500)
    assert "cannot be used" in caplog.text and entry.name in caplog.text
    pd.testing.assert_frame_equal(before, after)  # seeded: the refit is the same model
    caplog.clear()
    ceiling_models(CFG, "population", 500)
    assert "cannot be used" not in caplog.text  # the refit was cached again


# --- configuration and truth/patients.csv -------------------------------------------------------------------------
def test_ceiling_section_is_validated(tmp_path):
    data = load_yaml(shipped_config("synth.yaml"))
    assert from_dict(CeilingConfig, data["ceiling"], "ceiling") == CeilingConfig()
    assert load_synth_config().ceiling == CeilingConfig()
    path = tmp_path / "mine.yaml"
    path.write_text("ceiling:\n  n: 10\n")
    with pytest.raises(ConfigError, match=r"ceiling\.n"):
        load_synth_config(path)
    path.write_text("ceiling:\n  size: 2000\n")
    with pytest.raises(ConfigError, match=r"ceiling\.size"):
        load_synth_config(path)


def test_synthesize_writes_the_ceilings_after_the_patient_columns(tmp_path, cache_dir):
    config = tmp_path / "small.yaml"
    config.write_text(SMALL_CONFIG)
    out = synthesize(tmp_path / "c", n=3, seed=2, config=config, modalities="xray", progress=False)
    patients = read_table(Cohort.open(out).truth_patients_path)
    expected = ceiling_columns(("accelerated", "poor_outcome_2y"))
    assert list(patients.columns) == [*PATIENT_COLUMNS, *expected, "accelerated_operational"]
    probs = ceiling_probabilities(CFG, "neck", sample_cohort(CFG, "neck", 3, seed=2), n=N_LARGE)
    assert np.allclose(patients[expected].to_numpy(), probs[expected].to_numpy(), atol=1e-4)
    assert np.allclose(patients["p_latent_accelerated"], patients["p_oracle"])


def test_no_ceiling_flag_leaves_the_truth_as_before(tmp_path, cache_dir):
    config = tmp_path / "small.yaml"
    config.write_text(SMALL_CONFIG)
    out = tmp_path / "c"
    args = ["synth", "--out", str(out), "--n", "1", "--modality", "xray", "--config", str(config)]
    result = CliRunner().invoke(cli, [*args, "--no-ceiling"])
    assert result.exit_code == 0, result.output
    assert list(read_table(Cohort.open(out).truth_patients_path).columns) == list(PATIENT_COLUMNS)


def test_cohort_summary_shows_both_ceilings(tmp_path, neck_test):
    from cdeg.cohort import CohortMeta, write_cohort_json
    from cdeg.io import write_table
    from cdeg.summary import format_summary, summarize

    tables, probs = neck_test
    write_table(tmp_path / "clinical.csv", tables.clinical)
    write_table(tmp_path / "truth" / "levels.csv", tables.levels)
    write_table(tmp_path / "truth" / "patients.csv", tables.patients.merge(probs, on="patient_id"))
    write_cohort_json(tmp_path, CohortMeta(name="c", profile="neck", n_patients=2000, synthetic=True))
    s = summarize(tmp_path)
    aucs = s["truth"]["ceiling_auc"]
    y = tables.clinical["accelerated"]
    assert aucs["accelerated"]["observable"] == round(roc_auc_score(y, probs["p_observable_accelerated"]), 3)
    assert aucs["accelerated"]["latent"] == s["truth"]["oracle_auc"] > aucs["accelerated"]["observable"]
    assert set(aucs["poor_outcome_2y"]) == {"latent", "observable"}
    text = format_summary(s)
    assert "ceiling AUC of accelerated (synthetic truth): latent" in text and "observable" in text
