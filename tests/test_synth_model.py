"""The synthetic cohort model (cdeg.synth.model): domain figures, geometry, oracle, determinism, config."""

import dataclasses
import math
import time
import typing

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr
from sklearn.metrics import roc_auc_score

from cdeg import labels
from cdeg.config import ConfigError, from_dict, load_yaml, shipped_config
from cdeg.measures import quadratic_profile
from cdeg.synth.model import (
    CLINICAL_COLUMNS,
    LEVEL_COLUMNS,
    PATIENT_COLUMNS,
    POPULATION_CLINICAL_COLUMNS,
    ModelConfig,
    load_model_config,
    oracle_probability,
    sample_cohort,
    threshold_u,
)
from cdeg.synth.model_config import AgeDistribution

N = 3000
CFG = ModelConfig()


def _discs(tables):
    lv = tables.levels[tables.levels.structure == "disc"]
    return lv.merge(tables.patients[["patient_id", "age", "sex"]], on="patient_id")


def _with_population_ages(cfg, **age):
    pop = dataclasses.replace(cfg.profiles.population, age=AgeDistribution(**age))
    return dataclasses.replace(cfg, profiles=dataclasses.replace(cfg.profiles, population=pop))


@pytest.fixture(scope="module")
def neck():
    return sample_cohort(CFG, "neck", N, seed=7)


@pytest.fixture(scope="module")
def population():
    return sample_cohort(CFG, "population", N, seed=7)


@pytest.fixture(scope="module")
def all_ages():
    """Not-operated patients spread over 18-90 years, to check degeneration against age."""
    return sample_cohort(
        _with_population_ages(CFG, mean=54.0, sd=40.0, min=18.0, max=90.0), "population", N, seed=3
    )


# --- configuration -------------------------------------------------------------------------------------
def test_shipped_yaml_is_the_dataclass_default():
    data = load_yaml(shipped_config("synth.yaml"))["model"]
    assert from_dict(ModelConfig, data, "model") == ModelConfig()
    assert load_model_config() == ModelConfig()


def _undocumented(cls: type, data: dict, where: str) -> list[str]:
    """Options of `cls` (recursively) that hold a literal default or are missing from the mapping `data`."""
    hints = typing.get_type_hints(cls)
    bad = []
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}"
        if f.default is not dataclasses.MISSING:
            bad.append(f"{key} has a literal default")
        if f.name not in data:
            bad.append(f"{key} is not in the file")
            continue
        tp, value = hints[f.name], data[f.name]
        if dataclasses.is_dataclass(tp):
            bad += _undocumented(tp, value, key)
        elif typing.get_args(tp) and dataclasses.is_dataclass(typing.get_args(tp)[-1]):  # dict of dataclasses
            bad += [
                b for k, v in value.items() for b in _undocumented(typing.get_args(tp)[-1], v, f"{key}.{k}")
            ]
    return bad


def test_shipped_yaml_is_the_only_source_of_defaults():
    """configs/synth.yaml writes every option's default; the dataclasses read theirs from it."""
    from cdeg.synth.render import RenderConfig

    data = load_yaml(shipped_config("synth.yaml"))
    assert _undocumented(ModelConfig, data["model"], "model") == []
    assert _undocumented(RenderConfig, data["render"], "render") == []


def test_user_config_changes_only_its_keys(tmp_path):
    from cdeg.synth import load_synth_config

    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  disc:\n    loss_sd: 0.08\nrender:\n  mri:\n    noise: [0.02, 0.03]\n")
    cfg = load_synth_config(path)
    assert cfg.model.disc.loss_sd == 0.08 and cfg.render.mri.noise == (0.02, 0.03)
    assert dataclasses.replace(cfg.model, disc=CFG.disc) == CFG
    assert cfg.model.disc == dataclasses.replace(CFG.disc, loss_sd=0.08)
    path.write_text("model:\n  disc:\n    loss_sdd: 0.08\n")
    with pytest.raises(ConfigError, match=r"unknown key model\.disc\.loss_sdd"):
        load_synth_config(path)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"degeneration.nosie_sd": 0.5}, "nosie_sd"),
        ({"predisposition.accelerated_quantile": 1.5}, "outside"),
        ({"degeneration.level_weights": {"C9-C10": 1.0}}, "C9-C10"),
        ({"profiles.neck.smoking": {"never": 0.5, "former": 0.3, "current": 0.3}}, "sum to 1"),
        ({"clinical.arms": ["ACD", "XYZ"]}, "XYZ"),
        ({"grading.miyazaki_cuts": [0.5, 0.4, 2.5, 3.5]}, "increasing"),
    ],
)
def test_invalid_config_raises_config_error(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_model_config(overrides=overrides)


def test_overrides_reach_the_model():
    cfg = load_model_config(overrides={"missing.no_mri_fraction": 0.5, "profiles.neck.id_prefix": "S"})
    t = sample_cohort(cfg, "neck", 400, seed=1)
    assert 0.4 < 1 - t.patients.has_mri.mean() < 0.6
    assert t.clinical.patient_id.iloc[0] == "S0001"


def test_bad_arguments_raise_value_error():
    for kwargs in ({"profile": "icu"}, {"n": 0}, {"seed": -1}, {"n": 2.5}):
        args = {"profile": "neck", "n": 3, "seed": 1, **kwargs}
        with pytest.raises(ValueError):
            sample_cohort(CFG, **args)


# --- table layout -------------------------------------------------------------------------------------
def test_tables_have_the_documented_columns_and_order(neck):
    assert tuple(neck.clinical.columns) == CLINICAL_COLUMNS
    assert tuple(neck.patients.columns) == PATIENT_COLUMNS
    assert tuple(neck.levels.columns) == LEVEL_COLUMNS
    assert list(neck.clinical.patient_id[:3]) == ["NECK0001", "NECK0002", "NECK0003"]
    assert (neck.clinical.patient_id == neck.patients.patient_id).all()
    n_s = len(labels.STRUCTURES)
    assert len(neck.levels) == N * n_s
    first = neck.levels.iloc[:n_s]
    assert list(first.level) == [s.name for s in labels.STRUCTURES]
    assert list(first.label) == [labels.label_of(s.name) for s in labels.STRUCTURES]
    assert list(first.structure) == [s.kind for s in labels.STRUCTURES]
    lv = neck.levels
    vert, disc = lv[lv.structure == "vertebra"], lv[lv.structure == "disc"]
    assert disc[["body_depth_mm", "body_wedge_deg", "dens_height_mm"]].isna().all().all()
    assert vert[["d_latent", "disc_height_middle_mm", "kl_grade", "is_index"]].isna().all().all()
    assert vert.loc[vert.level == "C2", "dens_height_mm"].between(12, 18).all()
    assert vert.loc[vert.level != "C2", "dens_height_mm"].isna().all()
    assert (neck.clinical.accelerated.values == neck.patients.accelerated.values).all()


def test_ids_widen_beyond_9999_patients():
    t = sample_cohort(CFG, "population", 10000, seed=1)
    assert t.clinical.patient_id.iloc[0] == "POP00001" and t.clinical.patient_id.iloc[-1] == "POP10000"


def test_population_profile_has_no_surgical_columns(population, neck):
    assert tuple(population.clinical.columns) == POPULATION_CLINICAL_COLUMNS
    assert (population.patients.index_level == "").all()
    assert (population.levels.is_index.dropna() == 0).all()
    age = population.patients.age
    assert age.min() >= 45 and age.max() <= 90 and 63 <= age.mean() <= 67
    # older, so more degenerated than the surgical patients
    assert _discs(population).miyazaki_grade.mean() > _discs(neck).miyazaki_grade.mean() + 0.2


# --- determinism ----------------------------------------------------------------------------------------
def test_same_seed_same_tables_and_prefix_property():
    small = sample_cohort(CFG, "neck", 10, seed=5)
    large = sample_cohort(CFG, "neck", 50, seed=5)
    again = sample_cohort(CFG, "neck", 10, seed=5)
    for name in ("clinical", "patients", "levels"):
        a, b = getattr(small, name), getattr(large, name)
        pd.testing.assert_frame_equal(a, getattr(again, name))
        pd.testing.assert_frame_equal(a, b.iloc[: len(a)].reset_index(drop=True))
    other = sample_cohort(CFG, "neck", 10, seed=6)
    assert not np.allclose(other.patients.predisposition_u, small.patients.predisposition_u)


def test_fast_enough():
    t0 = time.perf_counter()
    sample_cohort(CFG, "neck", 1000, seed=2)
    assert time.perf_counter() - t0 < 2.0  # ~0.05 s on the 2-core reference machine


# --- predisposition and oracle --------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["neck", "population"])
def test_threshold_is_the_exact_mixture_quantile(profile):
    thr = threshold_u(CFG, profile)
    mix = CFG.profiles.get(profile).smoking.as_dict()
    shift = CFG.predisposition.smoking_shift
    cdf = sum(p * ndtr(thr - shift[s]) for s, p in mix.items())
    assert cdf == pytest.approx(0.78, abs=1e-9)


def test_accelerated_prevalence(neck, population):
    for t in (neck, population):
        assert 0.18 <= t.patients.accelerated.mean() <= 0.26
        assert (t.patients.accelerated == (t.patients.predisposition_u > t.patients.threshold_u)).all()


def test_oracle_is_informative_but_not_perfect_and_calibrated(neck, population):
    for t in (neck, population):
        pt = t.patients
        auc = roc_auc_score(pt.accelerated, pt.p_oracle)
        assert 0.75 < auc < 0.97, f"oracle AUC {auc:.3f}"  # measured 0.91 (neck) with the defaults
        assert pt.p_oracle.mean() == pytest.approx(pt.accelerated.mean(), abs=0.025)
        bins = pd.qcut(pt.p_oracle, 5, duplicates="drop")
        grouped = pt.groupby(bins, observed=True)
        diff = (grouped.accelerated.mean() - grouped.p_oracle.mean()).abs()
        assert diff.max() < 0.07, diff


def test_oracle_recomputed_from_the_tables(neck):
    disc = neck.levels[neck.levels.structure == "disc"]
    d = disc.d_latent.to_numpy().reshape(N, len(labels.DISC_NAMES))
    p = oracle_probability(
        CFG, "neck", neck.clinical.age, d, neck.patients.merge(neck.clinical, on="patient_id").smoking,
        neck.patients.index_level,
    )  # fmt: skip
    assert np.allclose(p, neck.patients.p_oracle)
    # more degeneration than age explains -> higher probability
    assert (
        oracle_probability(CFG, "neck", [50], d[:1] + 1.0, ["never"], ["C5-C6"])[0]
        > oracle_probability(CFG, "neck", [50], d[:1], ["never"], ["C5-C6"])[0]
    )
    with pytest.raises(ValueError, match="shape"):
        oracle_probability(CFG, "neck", [50, 60], d[:1], ["never"] * 2)
    with pytest.raises(ValueError, match="index level"):
        oracle_probability(CFG, "neck", [50], d[:1], ["never"], ["C9-C10"])


# --- degeneration against the domain figures ------------------------------------------------------------
def test_c5_c6_is_the_most_degenerated_level(neck, population):
    for t in (neck, population):
        disc = _discs(t)
        by_level = disc[disc.is_index == 0].groupby("level").d_latent.mean()
        order = list(by_level.sort_values(ascending=False).index)
        assert order[:3] == ["C5-C6", "C6-C7", "C4-C5"], order
        assert set(order[-2:]) == {"C2-C3", "C7-T1"}


def test_grade_iv_v_share_by_decade(all_ages, population):
    disc = _discs(all_ages)
    severe = disc.miyazaki_grade >= 4
    share = {
        "20s": severe[disc.age.between(20, 29)].mean(),
        "40s": severe[disc.age.between(40, 49)].mean(),
    }
    pop = _discs(population)
    share["60+"] = (pop[pop.age >= 60].miyazaki_grade >= 4).mean()
    # domain: ~5% in the 20s, 15-25% in the 40s, ~43% at 60+ (measured 0.05, 0.19, 0.42)
    assert 0.02 <= share["20s"] <= 0.09, share
    assert 0.14 <= share["40s"] <= 0.26, share
    assert 0.36 <= share["60+"] <= 0.50, share
    assert share["20s"] < share["40s"] < share["60+"]


def test_any_radiographic_change_by_age(all_ages):
    disc = _discs(all_ages)
    any_kl = disc.groupby("patient_id").agg(age=("age", "first"), kl=("kl_grade", "max"))
    changed = any_kl.kl >= 1
    under30 = changed[any_kl.age < 30].mean()
    at40 = changed[any_kl.age.between(37, 43)].mean()
    at60 = changed[any_kl.age.between(60, 65)].mean()
    # domain: almost none under 30, ~50% at 40, 70-95% at 60-65 (measured 0.03, 0.59, 0.90)
    assert under30 < 0.08 and 0.35 <= at40 <= 0.70 and 0.70 <= at60 <= 0.97, (under30, at40, at60)


def test_modic_changes(neck):
    disc = _discs(neck)
    any_modic = (disc.groupby("patient_id").modic_type.max() > 0).mean()
    assert 0.13 <= any_modic <= 0.24, any_modic  # domain ~18% (measured 0.18)
    changed = disc[disc.modic_type > 0]
    assert changed.modic_type.value_counts().idxmax() == 2  # type II most common
    assert changed.level.isin(["C5-C6", "C6-C7"]).mean() > 0.6


def test_index_level_is_more_degenerated(neck):
    disc = _discs(neck)
    index = disc[disc.is_index == 1]
    assert len(index) == N and (index.groupby("patient_id").size() == 1).all()
    assert (index.level.to_numpy() == neck.patients.index_level.to_numpy()).all()
    same = disc[(disc.is_index == 0) & disc.level.isin(["C5-C6", "C6-C7"])]
    lvl = index[index.level.isin(["C5-C6", "C6-C7"])]
    assert lvl.miyazaki_grade.mean() > same.miyazaki_grade.mean() + 0.8
    assert lvl.bulge_mm.mean() > same.bulge_mm.mean() + 2.0


def test_signs_follow_the_grades(neck):
    disc = _discs(neck)
    by_miy = disc.groupby("miyazaki_grade")[["disc_height_middle_mm", "t2_signal"]].mean()
    assert by_miy.disc_height_middle_mm.is_monotonic_decreasing and by_miy.t2_signal.is_monotonic_decreasing
    assert by_miy.t2_signal.loc[5] < 0.25 and by_miy.t2_signal.loc[1] > 0.9
    by_kl = disc.groupby("kl_grade")[["osteophyte_mm", "sclerosis", "disc_height_middle_mm"]].mean()
    assert by_kl.osteophyte_mm.is_monotonic_increasing and by_kl.sclerosis.is_monotonic_increasing
    assert by_kl.disc_height_middle_mm.is_monotonic_decreasing
    assert (disc.loc[disc.kl_grade == 0, ["osteophyte_mm", "sclerosis"]] == 0).all().all()
    assert 3.5 <= by_kl.osteophyte_mm.loc[4] <= 5.0


# --- anatomy and geometry --------------------------------------------------------------------------------
def test_disc_heights_match_the_literature(neck):
    disc = _discs(neck)
    heights = disc[["disc_height_anterior_mm", "disc_height_middle_mm", "disc_height_posterior_mm"]]
    assert (heights >= 0.8 - 1e-9).all().all() and (heights <= 10).all().all()
    healthy = disc[disc.miyazaki_grade <= 2]
    mid = healthy.groupby("level").disc_height_middle_mm.mean()
    assert 5.4 <= mid["C4-C5"] <= 6.2 and 5.5 <= mid["C5-C6"] <= 6.3 and 5.8 <= mid["C6-C7"] <= 6.6, mid
    assert 3.4 <= healthy.disc_height_anterior_mm.mean() <= 4.3
    # concave endplates make the middle the tallest
    assert (healthy.disc_height_middle_mm > healthy.disc_height_anterior_mm).mean() > 0.98
    sex = healthy.groupby("sex").disc_height_middle_mm.mean()
    assert 0.3 <= sex["M"] - sex["F"] <= 0.7
    collapsed = disc[disc.miyazaki_grade == 5].disc_height_middle_mm.mean()
    assert collapsed < 0.55 * healthy.disc_height_middle_mm.mean()


def test_vertebral_bodies_match_the_literature(neck):
    lv = neck.levels.merge(neck.patients[["patient_id", "sex"]], on="patient_id")
    vert = lv[(lv.structure == "vertebra") & lv.level.isin(["C3", "C4", "C5", "C6", "C7"])]
    means = vert.groupby("level")[["body_depth_mm", "body_width_mm", "body_height_anterior_mm"]].mean()
    assert means.body_depth_mm.between(14.5, 17.0).all() and means.body_depth_mm.idxmax() == "C7"
    assert means.body_width_mm.between(21.0, 23.8).all()
    assert means.body_height_anterior_mm.between(10.0, 11.5).all()
    # slightly kyphotic bodies
    assert vert.body_height_posterior_mm.mean() - vert.body_height_anterior_mm.mean() > 0.2
    assert (vert.body_height_middle_mm < vert.body_height_anterior_mm).mean() > 0.95
    sex = vert.groupby("sex").body_depth_mm.mean()
    assert 0.8 <= sex["M"] - sex["F"] <= 2.0


def test_geometry_is_consistent(neck):
    lv = neck.levels
    depth = lv[lv.structure == "vertebra"].body_depth_mm.to_numpy().reshape(N, -1)
    vert = lv[lv.structure == "vertebra"]
    disc = lv[lv.structure == "disc"]
    ha, hm, hp = (disc[f"disc_height_{k}_mm"].to_numpy() for k in ("anterior", "middle", "posterior"))
    d_disc = (0.5 * (depth[:, :-1] + depth[:, 1:])).ravel()
    rows = np.random.default_rng(0).choice(len(disc), 2000, replace=False)
    for i in rows:
        a, b, c = quadratic_profile(ha[i], hm[i], hp[i])
        h0, h1 = a, a + b + c
        assert math.degrees(math.atan((h0 - h1) / d_disc[i])) == pytest.approx(
            disc.disc_angle_deg.iloc[i], abs=1e-9
        )
    va, vm, vp = (vert[f"body_height_{k}_mm"].to_numpy() for k in ("anterior", "middle", "posterior"))
    for i in rows[:500] % len(vert):
        a, b, c = quadratic_profile(va[i], vm[i], vp[i])
        wedge = math.degrees(math.atan((a - (a + b + c)) / vert.body_depth_mm.iloc[i]))
        assert wedge == pytest.approx(vert.body_wedge_deg.iloc[i], abs=1e-9)
    # shared endplates: a body's middle is short by half the concavity of each disc it borders, so
    # stacking bodies and discs keeps the endplates' shape
    k = (hm - 0.5 * (ha + hp)).reshape(N, -1)
    body_k = (0.5 * (va + vp) - vm).reshape(N, -1)
    assert np.allclose(body_k[:, 1:6], 0.5 * (k[:, :-1] + k[:, 1:]))
    assert np.allclose(body_k[:, 0], 0.5 * k[:, 0])
    assert np.allclose(body_k[:, 6], 0.5 * k[:, 5] + CFG.vertebra.t1_inferior_concavity_mm)
    wedge = vert.body_wedge_deg.to_numpy().reshape(N, -1)
    seg = disc.segmental_angle_deg.to_numpy().reshape(N, -1)
    angle = disc.disc_angle_deg.to_numpy().reshape(N, -1)
    assert np.allclose(seg, angle + wedge[:, 1:])
    assert np.allclose(neck.patients.cobb_c2c7_deg, seg[:, :5].sum(axis=1))
    cobb = neck.patients.cobb_c2c7_deg
    assert cobb.mean() == pytest.approx(12.7, abs=1.0) and 8 <= cobb.std() <= 14
    assert 0.55 <= (cobb > 8).mean() <= 0.75  # "only ~64% lordotic" read as Cobb above ~8 degrees
    # degenerated discs are flatter
    healthy = angle[:, :5][disc.miyazaki_grade.to_numpy().reshape(N, -1)[:, :5] <= 2]
    worn = angle[:, :5][disc.miyazaki_grade.to_numpy().reshape(N, -1)[:, :5] == 5]
    assert np.abs(worn).mean() < np.abs(healthy).mean()


def test_patient_anatomy(neck):
    pt = neck.patients
    assert pt.canal_ap_mm.mean() == pytest.approx(14.0, abs=0.3) and 1.2 <= pt.canal_ap_mm.std() <= 1.8
    assert np.corrcoef(pt.neck_depth_mm, neck.clinical.bmi.astype(float).fillna(27.0))[0, 1] > 0.3
    by_sex = pt.groupby("sex")[["neck_depth_mm", "size_scale"]].mean()
    assert by_sex.loc["M"].gt(by_sex.loc["F"]).all()


# --- clinical -----------------------------------------------------------------------------------------------
def test_clinical_distributions(neck):
    cl = neck.clinical
    assert cl.age.between(18, 65).all() and cl.age.mean() == pytest.approx(47, abs=1.0)
    assert (cl.sex == "M").mean() == pytest.approx(0.55, abs=0.03)
    freq = cl.index_level.value_counts(normalize=True)
    for level, expected in CFG.clinical.index_level_frequencies.items():
        assert freq.get(level, 0.0) == pytest.approx(expected, abs=0.03), level
    assert cl.arm.value_counts(normalize=True).between(0.29, 0.38).all()
    assert set(cl.smoking.dropna()) == {"never", "former", "current"}
    assert cl.ndi_0.mean() == pytest.approx(44, abs=1.5) and cl.ndi_0.between(0, 100).all()
    for col in ("ndi_1y", "ndi_2y"):
        assert 17 <= cl[col].mean() <= 22 and 13 <= cl[col].std() <= 22
        assert cl[col].mean() > cl[col].median()  # skewed
    for col in ("vas_arm_0", "vas_neck_0"):
        assert cl[col].astype(float).mean() == pytest.approx(65, abs=2.5)
    for col in ("vas_arm_2y", "vas_neck_2y"):
        assert 25 <= cl[col].astype(float).mean() <= 35
    assert cl.recovery_1y.between(1, 7).all() and cl.recovery_1y.nunique() == 7
    dur = cl.symptom_duration_months
    assert dur.min() >= 2 and 6.5 <= dur.median() <= 10 and 0.06 <= (dur > 24).mean() <= 0.14


def test_outcomes(neck):
    cl = neck.clinical
    poor = cl.poor_outcome_2y
    expected = ((cl.ndi_0 - cl.ndi_2y) < np.maximum(7.5, 0.3 * cl.ndi_0)).astype(int)
    assert (poor == expected).all()
    assert 0.15 <= poor.mean() <= 0.35, poor.mean()  # measured 0.25
    assert 0.04 <= cl.reoperation_2y.mean() <= 0.11  # 3.6% per year over two years ~ 7%
    by_acc = cl.groupby("accelerated")[["poor_outcome_2y", "ndi_2y"]].mean()
    assert by_acc.loc[1].gt(by_acc.loc[0]).all()  # worse for accelerated patients, modestly
    assert by_acc.poor_outcome_2y.loc[1] - by_acc.poor_outcome_2y.loc[0] < 0.2
    disc = _discs(neck)
    mean_grade = disc.groupby("patient_id", sort=False).miyazaki_grade.mean().to_numpy(dtype=float)
    r = np.corrcoef(mean_grade, cl.ndi_0)[0, 1]
    assert -0.05 < r < 0.25, r  # radiological degeneration only weakly tied to disability


def test_missing_data(neck):
    pt = neck.patients
    assert ((pt.has_mri == 1) | (pt.has_xray == 1)).all()
    assert 0.005 <= 1 - pt.has_mri.mean() <= 0.04 and 0.005 <= 1 - pt.has_xray.mean() <= 0.04
    na = neck.clinical.isna().mean()
    assert 0.005 <= na["bmi"] <= 0.04 and 0.005 <= na["vas_arm_0"] <= 0.04
    assert na[["patient_id", "age", "ndi_0", "ndi_2y", "poor_outcome_2y", "accelerated"]].eq(0).all()
    cfg = load_model_config(overrides={"missing.clinical_fraction": 0.0, "missing.no_mri_fraction": 0.0})
    t = sample_cohort(cfg, "neck", 300, seed=1)
    assert not t.clinical.isna().any().any() and t.patients.has_mri.all()
