"""poor_outcome_2y in the generator: clinical prognostic factors, its exact oracle, and nothing else changed."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from scipy.special import expit, ndtr
from sklearn.metrics import roc_auc_score

from cdeg.synth.model import load_model_config, poor_outcome_probability, sample_cohort

CFG = load_model_config()
#: The columns the outcome model writes; every other generated value must stay as it was.
OUTCOME_COLUMNS = (
    "ndi_1y", "ndi_2y", "vas_arm_1y", "vas_arm_2y", "vas_neck_1y", "vas_neck_2y", "recovery_1y", "recovery_2y",
    "poor_outcome_2y", "reoperation_2y",
)  # fmt: skip
#: The prognostic factors switched off and the recovery logit's intercept as it was before them.
WITHOUT_FACTORS = {
    "clinical.ndi_remaining_logit_mean": -0.35,
    "clinical.smoking_outcome_logit.current": 0.0,
    "clinical.duration_outcome_logit_per_doubling": 0.0,
    "clinical.neck_dominant_outcome_logit": 0.0,
    "clinical.ndi_baseline_outcome_logit_per_10": 0.0,
}
# SHA-256 (first 16 hex digits) of 40 patients, seed 5, written by the generator before the prognostic factors
# existed (main at fed04a3): clinical table without the outcome columns, truth/patients, truth/levels, and the
# whole clinical table. Same seed, same draws: only the outcome columns may differ.
BEFORE = {
    "neck": ("b7207825a430549a", "8e072fa1af161105", "c6aeacb952a94efe", "1f9e54371b6b23da"),
    "population": ("76e8042d4449e8da", "195e583c2bf94505", "cee7405cbf2196f2", "76e8042d4449e8da"),
}


def _digest(df) -> str:
    return hashlib.sha256(df.to_csv(index=False, float_format="%.10g").encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def large():
    """20,000 operated patients: enough for frequencies within about 0.01."""
    return sample_cohort(CFG, "neck", 20_000, seed=21)


@pytest.mark.parametrize("profile", ["neck", "population"])
def test_everything_but_the_outcomes_is_as_before(profile):
    t = sample_cohort(CFG, profile, 40, seed=5)
    kept = [c for c in t.clinical.columns if c not in OUTCOME_COLUMNS]
    assert (_digest(t.clinical[kept]), _digest(t.patients), _digest(t.levels)) == BEFORE[profile][:3]
    # Without the factors the outcome columns too are those of before: the draws are the same.
    t0 = sample_cohort(load_model_config(overrides=WITHOUT_FACTORS), profile, 40, seed=5)
    assert _digest(t0.clinical) == BEFORE[profile][3]
    if profile == "neck":
        assert _digest(t.clinical) != BEFORE[profile][3]  # the factors do change the outcomes


def test_prognostic_factors_act_in_the_literature_direction(large):
    cl = large.clinical
    rate = cl.groupby("smoking").poor_outcome_2y.mean()
    assert rate["current"] > rate["never"] + 0.07

    def odds(p):
        return p / (1 - p)

    # The figure configs/synth.yaml cites: smokers vs the others, OR 1.71 (1.40-2.08).
    smoker = cl.smoking == "current"
    ratio = odds(cl.poor_outcome_2y[smoker].mean()) / odds(
        cl.poor_outcome_2y[~smoker & cl.smoking.notna()].mean()
    )
    assert 1.4 < ratio < 2.1, ratio
    dur = cl.symptom_duration_months
    assert cl.poor_outcome_2y[dur > 24].mean() > cl.poor_outcome_2y[dur < 6].mean() + 0.05
    neck_dominant = (cl.vas_neck_0 > cl.vas_arm_0).where(cl.vas_neck_0.notna() & cl.vas_arm_0.notna())
    by_pain = cl.groupby(neck_dominant).poor_outcome_2y.mean()
    assert by_pain[True] > by_pain[False] + 0.04
    # The randomised surgery arm and the unrelated demographics carry nothing.
    assert np.ptp(cl.groupby("arm").poor_outcome_2y.mean()) < 0.03
    for col in ("age", "bmi"):
        x = cl[col].astype(float)
        keep = x.notna()
        assert abs(roc_auc_score(cl.poor_outcome_2y[keep], x[keep]) - 0.5) < 0.02, col
    # The calibration of the follow-up NDI (NECK: mean ~19-20 at 1 and 2 years) survives the factors.
    assert 18 <= cl.ndi_2y.mean() <= 22


def test_oracle_matches_the_empirical_frequency(large):
    y = large.clinical.poor_outcome_2y.to_numpy()
    p = large.oracles["poor_outcome_2y"]
    assert p.shape == y.shape and np.all((p >= 0) & (p <= 1))
    assert p.mean() == pytest.approx(y.mean(), abs=0.01)
    # Deciles of the oracle: observed frequency within 3.5 binomial SDs of the mean probability.
    edges = np.quantile(p, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    for b in range(10):
        rows = bins == b
        expected = p[rows].mean()
        sd = math.sqrt(expected * (1 - expected) / rows.sum())
        assert abs(y[rows].mean() - expected) < 3.5 * sd + 0.005, (b, y[rows].mean(), expected)
    # An outcome worth studying, but far from certain.
    assert 0.6 < roc_auc_score(y, p) < 0.75


def test_oracle_formula_against_a_direct_integral():
    c = CFG.clinical
    ndi0 = np.array([0.0, 4.0, 20.0, 24.0, 26.0, 44.0, 50.0, 80.0, 100.0])
    mean = np.linspace(-1.5, 1.0, len(ndi0))
    got = poor_outcome_probability(CFG, ndi0, mean)
    sd = math.hypot(c.ndi_remaining_logit_sd, c.ndi_2y_logit_change_sd)
    grid = np.linspace(-14, 14, 200_001)
    for a, m, g in zip(ndi0, mean, got, strict=True):
        dens = np.exp(-0.5 * ((grid - m) / sd) ** 2)
        dens /= dens.sum()
        x = a * expit(grid)
        # Sum over the even 2-year scores v whose improvement a - v stays below the margin.
        total = 0.0
        for v in range(0, 101, 2):
            if a - v < max(7.5, 0.3 * a):
                hi = 1.0 if v == 100 else ndtr((v + 1 - x) / c.ndi_noise_sd)
                lo = 0.0 if v == 0 else ndtr((v - 1 - x) / c.ndi_noise_sd)
                total += float(((hi - lo) * dens).sum())
        assert g == pytest.approx(total, abs=1e-5), (a, m)
    assert got[0] == 1.0  # no disability to lose: never an improvement of 7.5 points


@pytest.mark.parametrize("noise", [0.0, 0.5, 1.0])
def test_oracle_with_little_measurement_noise(noise):
    cfg = load_model_config(overrides={"clinical.ndi_noise_sd": noise})
    c = cfg.clinical
    ndi0 = np.array([10.0, 20.0, 44.0, 70.0])
    mean = np.array([-1.0, -0.5, 0.0, 0.4])
    got = poor_outcome_probability(cfg, ndi0, mean)
    sd = math.hypot(c.ndi_remaining_logit_sd, c.ndi_2y_logit_change_sd)
    grid = np.linspace(-14, 14, 400_001)
    for a, m, g in zip(ndi0, mean, got, strict=True):
        dens = np.exp(-0.5 * ((grid - m) / sd) ** 2)
        dens /= dens.sum()
        k = min(v for v in range(0, 101, 2) if a - v < max(7.5, 0.3 * a))
        x = a * expit(grid)
        step = (x >= k - 1).astype(float) if noise == 0 else ndtr((x - (k - 1)) / noise)
        assert g == pytest.approx(float((step * dens).sum()), abs=1e-4), (noise, a)


def test_smoking_effects_need_every_status():
    from cdeg.config import ConfigError

    with pytest.raises(ConfigError, match="smoking_outcome_logit"):
        load_model_config(overrides={"clinical.smoking_outcome_logit.sometimes": 0.5})
