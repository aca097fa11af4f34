"""The generator's operational label (truth/patients.csv ``accelerated_operational``): `cdeg label`'s rule on the
true measurements against a large population-profile sample."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cdeg.cohort import Cohort
from cdeg.io import read_table
from cdeg.synth import load_synth_config, oplabel, synthesize
from cdeg.synth.ceiling import CACHE_ENV
from cdeg.synth.model import sample_cohort
from cdeg.synth.oplabel import OPERATIONAL_COLUMN, operational_labels, true_features

N_REFERENCE = 2000  # the reference sample of these tests (the shipped one has 20,000 patients)
CFG = load_synth_config(None).model


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A cache folder of this module's own, so nothing is read from or written to ~/.cache; the references an
    earlier test of the same worker process fitted (kept in memory) are forgotten, so this module fits and
    caches its own."""
    path = tmp_path_factory.mktemp("cdeg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(path))
        mp.setattr(oplabel, "_FITTED", {})
        yield path


def test_true_disc_height_index_is_the_middle_height_over_the_depth_above():
    tables = sample_cohort(CFG, "neck", 3, seed=4)
    wide = true_features(tables)
    lv = tables.levels.set_index(["patient_id", "level"])
    pid = tables.patients["patient_id"].iloc[1]
    expected = lv.loc[(pid, "C5-C6"), "disc_height_middle_mm"] / lv.loc[(pid, "C5"), "body_depth_mm"]
    assert wide.loc[pid, "mri__C5-C6__disc_height_index"] == pytest.approx(expected)
    assert wide.loc[pid, "mri__C5-C6__disc_csf_signal_ratio"] == lv.loc[(pid, "C5-C6"), "t2_signal"]


def test_a_tenth_of_another_population_sample_is_labelled_per_sex(cache_dir):
    tables = sample_cohort(CFG, "population", 3000, seed=11)
    label = operational_labels(CFG, tables, n=N_REFERENCE)
    assert list(label.index) == list(tables.patients["patient_id"])
    sex = tables.patients["sex"].to_numpy()
    for s in ("F", "M"):
        share = label[sex == s].dropna().astype(float).mean()
        assert 0.07 < share < 0.13, (s, share)
    no_mri = tables.patients["has_mri"].to_numpy() == 0
    assert no_mri.any() and label[no_mri].isna().all()
    assert any((cache_dir / "oplabel").glob("*.json"))


def test_the_label_column_is_added_and_nothing_else_changes(tmp_path, cache_dir):
    config = tmp_path / "small.yaml"
    config.write_text(f"ceiling:\n  n: {N_REFERENCE}\n")
    common = {"n": 4, "seed": 3, "config": config, "modalities": "xray", "progress": False}
    on = synthesize(tmp_path / "on", **common)
    off = synthesize(tmp_path / "off", ceiling=False, **common)
    patients = read_table(Cohort.open(on).truth_patients_path, dtype={"patient_id": str})
    assert patients.columns[-1] == OPERATIONAL_COLUMN
    assert patients[OPERATIONAL_COLUMN].dropna().isin([0, 1]).all()
    plain = read_table(Cohort.open(off).truth_patients_path, dtype={"patient_id": str})
    pd.testing.assert_frame_equal(patients[list(plain.columns)], plain)
    for f in sorted(p.relative_to(on) for p in on.rglob("*") if p.is_file()):
        if f.name not in ("patients.csv", "cohort.json"):
            assert (on / f).read_bytes() == (off / f).read_bytes(), f


# --- acceleration as a rate (model.degeneration.acceleration) ---------------------------------------------------


def _rate_config(tmp_path):
    from cdeg.synth.model import load_model_config

    path = tmp_path / "rate.yaml"
    path.write_text("model:\n  degeneration:\n    acceleration: rate\n")
    return load_model_config(path)


def test_quadrature_oracle_equals_the_closed_form_of_the_offset_model():
    from cdeg.synth.model import _index_positions, oracle_probability, posterior_tail, threshold_u

    tables = sample_cohort(CFG, "neck", 300, seed=21)
    pat = tables.patients
    age, index = pat["age"].to_numpy(float), pat["index_level"].to_numpy()
    d = tables.levels[tables.levels["structure"] == "disc"]["d_latent"].to_numpy(float).reshape(300, 6)
    smoking = np.random.default_rng(0).choice(["never", "former", "current"], 300)
    closed = oracle_probability(CFG, "neck", age, d, smoking, index)
    tail = posterior_tail(CFG, age, d, smoking, _index_positions(index, 300), threshold_u(CFG, "neck"))
    np.testing.assert_allclose(tail, closed, atol=1e-5)  # trapezoid error ~2e-6


def test_rate_model_degenerates_faster_with_age_and_its_oracle_is_calibrated(tmp_path):
    from sklearn.metrics import roc_auc_score

    rate = _rate_config(tmp_path)
    assert rate.degeneration.acceleration == "rate" and CFG.degeneration.acceleration == "offset"
    tables = sample_cohort(rate, "population", 6000, seed=22)
    pat = tables.patients
    mean_d = (
        tables.levels[tables.levels["structure"] == "disc"]
        .groupby("patient_id", sort=False)["d_latent"]
        .mean()
    )
    mean_d = mean_d.reindex(pat["patient_id"]).to_numpy()
    age, acc = pat["age"].to_numpy(float), pat["accelerated"].to_numpy() == 1
    slope = {k: np.polyfit(age[acc == k], mean_d[acc == k], 1)[0] for k in (True, False)}
    assert slope[True] > 1.2 * slope[False]  # the gap widens with age
    p = pat["p_oracle"].to_numpy()
    assert abs(p.mean() - acc.mean()) < 0.02
    for lo, hi in ((0.0, 0.2), (0.2, 0.6), (0.6, 1.0)):  # calibrated in bands of predicted risk
        band = (p >= lo) & (p < hi)
        assert abs(p[band].mean() - acc[band].mean()) < 0.05, (lo, hi)
    assert roc_auc_score(acc, p) > 0.8


def test_default_offset_model_is_unchanged_by_the_switch(tmp_path):
    from cdeg.synth.model import load_model_config

    path = tmp_path / "offset.yaml"
    path.write_text("model:\n  degeneration:\n    acceleration: offset\n    rate_loading: 1.0\n")
    a = sample_cohort(CFG, "neck", 50, seed=23)
    b = sample_cohort(load_model_config(path), "neck", 50, seed=23)
    pd.testing.assert_frame_equal(a.patients, b.patients)
    pd.testing.assert_frame_equal(a.levels, b.levels)
    pd.testing.assert_frame_equal(a.clinical, b.clinical)
