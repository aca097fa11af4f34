"""The statistical model of the synthetic cohorts: patients, their true anatomy and degeneration.

:func:`sample_cohort` draws a cohort as three tables (clinical scores, per-patient truth, per-structure
truth); the renderer turns the truth into images. The model follows the project's domain notes:

* a patient predisposition ``u ~ N(shift[smoking], 1)``; *accelerated* means ``u`` above the 0.78
  quantile of the profile's ``u`` distribution (prevalence 22 %);
* a latent degeneration per disc level ``d_l = f(age) w_l + b u + e_l`` (+ a shift at the operated
  level), with AR(1)-correlated Gaussian ``e_l``, in units of Miyazaki grades; with
  ``degeneration.acceleration: rate``, ``d_l = f(age) w_l exp(c u) + e_l`` instead (degeneration grows faster
  with age for a high ``u``; the oracle is then computed by quadrature over ``u``);
* grades (Miyazaki, Kellgren-Lawrence, Modic), height loss, T2 signal loss, osteophytes, sclerosis
  and bulging as noisy monotone functions of ``d_l``;
* an exact sagittal geometry: heights at the positions of :data:`cdeg.measures.POSITIONS`, disc and
  body angles from the quadratic height profile, segmental angles summing to the Cobb angle.

Everything a classifier can observe depends on ``u`` only through ``d`` (given age, sex, smoking and
the index level), so :func:`oracle_probability`, the exact posterior ``P(u > threshold | ...)``, is a
ceiling no classifier can pass. Images show ``d`` only through noisy grades and measurements, so they
reach less: :mod:`cdeg.synth.ceiling` estimates that observable ceiling.

Randomness: patient ``i`` of a profile gets its own generator seeded with
``SeedSequence([seed, i, profile_code])`` and draws fixed-size blocks of normals and uniforms, so the
same seed gives the same tables and a cohort of 10 is the first 10 patients of a cohort of 100.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit, ndtr, ndtri

from cdeg import labels
from cdeg.config import deep_merge, load_config, load_yaml, shipped_config
from cdeg.synth.model_config import (
    MISSABLE_COLUMNS,
    PROFILE_NAMES,
    SMOKING_STATUSES,
    ClinicalConfig,
    ModelConfig,
)

__all__ = [
    "CLINICAL_COLUMNS",
    "DISC_COLUMNS",
    "LEVEL_COLUMNS",
    "PATIENT_COLUMNS",
    "POPULATION_CLINICAL_COLUMNS",
    "VERTEBRA_COLUMNS",
    "CohortTables",
    "ModelConfig",
    "age_curve",
    "load_model_config",
    "oracle_probability",
    "poor_outcome_probability",
    "posterior_tail",
    "sample_cohort",
    "threshold_u",
]

log = logging.getLogger(__name__)

CLINICAL_COLUMNS: tuple[str, ...] = (
    "patient_id", "age", "sex", "bmi", "smoking", "symptom_duration_months", "index_level", "arm",
    "ndi_0", "ndi_1y", "ndi_2y", "vas_arm_0", "vas_arm_1y", "vas_arm_2y", "vas_neck_0", "vas_neck_1y",
    "vas_neck_2y", "recovery_1y", "recovery_2y", "poor_outcome_2y", "reoperation_2y", "accelerated",
)  # fmt: skip
POPULATION_CLINICAL_COLUMNS: tuple[str, ...] = (
    "patient_id", "age", "sex", "bmi", "smoking", "ndi_0", "vas_neck_0", "accelerated",
)  # fmt: skip
PATIENT_COLUMNS: tuple[str, ...] = (
    "patient_id", "profile", "age", "sex", "predisposition_u", "accelerated", "p_oracle", "cobb_c2c7_deg",
    "size_scale", "canal_ap_mm", "neck_depth_mm", "has_mri", "has_xray", "index_level", "threshold_u",
)  # fmt: skip
VERTEBRA_COLUMNS: tuple[str, ...] = (
    "body_height_anterior_mm", "body_height_middle_mm", "body_height_posterior_mm", "body_depth_mm",
    "body_width_mm", "body_wedge_deg", "dens_height_mm",
)  # fmt: skip
DISC_COLUMNS: tuple[str, ...] = (
    "d_latent", "kl_grade", "miyazaki_grade", "modic_type", "disc_height_anterior_mm", "disc_height_middle_mm",
    "disc_height_posterior_mm", "disc_angle_deg", "segmental_angle_deg", "t2_signal", "osteophyte_mm",
    "sclerosis", "bulge_mm", "is_index",
)  # fmt: skip
LEVEL_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "structure",
    "level",
    "label",
    *VERTEBRA_COLUMNS,
    *DISC_COLUMNS,
)

_DISCS = labels.DISC_NAMES
_VERTS = labels.VERTEBRA_NAMES
_N_DISC = len(_DISCS)
_N_VERT = len(_VERTS)
_PROFILE_CODE = {name: i for i, name in enumerate(PROFILE_NAMES)}
# h(0) - h(1) of the quadratic through the heights at t = 0.1, 0.5, 0.9 equals this factor times
# (anterior - posterior): the profile's slope over the full extent; the concavity cancels by symmetry.
_SLOPE_FACTOR = 1.0 / (0.9 - 0.1)


@dataclass(frozen=True)
class CohortTables:
    """A sampled cohort.

    Parameters
    ----------
    clinical : DataFrame
        What a study would record (clinical.csv); first column ``patient_id``.
    patients : DataFrame
        Per-patient truth (truth/patients.csv).
    levels : DataFrame
        Per patient x structure truth (truth/levels.csv), structures in :data:`cdeg.labels.STRUCTURES` order.
    oracles : dict
        Outcome -> its exact latent oracle per patient (patients order), for the outcomes other than
        ``accelerated`` (whose oracle is ``p_oracle``) that have a closed form: ``poor_outcome_2y`` in the
        surgical profile (:func:`poor_outcome_probability`).
    """

    clinical: pd.DataFrame
    patients: pd.DataFrame
    levels: pd.DataFrame
    oracles: Mapping[str, np.ndarray] = field(default_factory=dict)


def load_model_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> ModelConfig:
    """Resolve the model options: shipped ``configs/synth.yaml`` < the ``model:`` section of `path` < `overrides`.

    Parameters
    ----------
    path : str or Path, optional
        A YAML file with (some of) the keys of configs/synth.yaml; only its ``model:`` section is used.
    overrides : mapping, optional
        Dotted keys relative to ``model`` (``{"degeneration.noise_sd": 0.5}``).

    Raises
    ------
    ConfigError
        On an unknown key, a wrong type or a value out of range, naming the key.
    """
    data = load_yaml(shipped_config("synth.yaml")).get("model", {})
    if path is not None:
        data = deep_merge(data, load_yaml(path).get("model", {}) or {})
    return load_config(ModelConfig, overrides=overrides, defaults=data)


# --- random draws ----------------------------------------------------------------------------------
class _Slots:
    """Named positions in a patient's fixed-size block of random numbers.

    New draws must be appended at the end so existing cohorts keep their values.
    """

    def __init__(self, size: int, names: list[tuple[str, int]]):
        self.index: dict[str, slice] = {}
        pos = 0
        for name, k in names:
            self.index[name] = slice(pos, pos + k)
            pos += k
        if pos > size:  # pragma: no cover - a programming error caught by any test
            raise AssertionError(f"{pos} random slots used but only {size} drawn")
        self.size = size


_Z = _Slots(192, [
    ("u", 1), ("bmi", 1), ("index_shift", 1), ("size_scale", 1), ("canal", 1), ("neck", 1), ("cobb", 1),
    ("disc_patient", 1), ("dens", 1), ("c7t1_angle", 1), ("ndi_0", 1), ("ndi_logit", 1), ("ndi_change", 1),
    ("ndi_noise", 2), ("vas_0", 2), ("vas_logit", 2), ("vas_change", 2), ("vas_noise", 4),
    ("recovery_noise", 2), ("e", _N_DISC), ("miyazaki", _N_DISC), ("kl", _N_DISC), ("disc_level", _N_DISC),
    ("loss", _N_DISC), ("concavity", _N_DISC), ("angle", _N_DISC - 1), ("t2", _N_DISC), ("osteophyte", _N_DISC),
    ("sclerosis", _N_DISC), ("bulge", _N_DISC), ("body_anterior", _N_VERT), ("body_posterior", _N_VERT),
    ("depth", _N_VERT), ("width", _N_VERT),
])  # fmt: skip
_U = _Slots(64, [
    ("age", 1), ("sex", 1), ("smoking", 1), ("duration", 1), ("index", 1), ("arm", 1), ("no_mri", 1),
    ("no_xray", 1), ("missing", len(MISSABLE_COLUMNS)), ("reoperation", 1), ("modic", _N_DISC),
    ("modic_type", _N_DISC), ("population_zero", 1), ("population_ndi", 1), ("population_vas", 1),
])  # fmt: skip


def _draw(seed: int, profile: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard normals (n, _Z.size) and uniforms (n, _U.size), one independent stream per patient."""
    z = np.empty((n, _Z.size))
    u = np.empty((n, _U.size))
    code = _PROFILE_CODE[profile]
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i, code]))
        z[i] = rng.standard_normal(_Z.size)
        u[i] = rng.random(_U.size)
    return z, u


def _categorical(uniform: np.ndarray, probs: list[float]) -> np.ndarray:
    """Index of the category each uniform falls in."""
    edges = np.cumsum(probs)[:-1]
    return np.searchsorted(edges, uniform, side="right")


# --- the degeneration model (shared with the oracle) -----------------------------------------------
def age_curve(cfg: ModelConfig, age: np.ndarray | float) -> np.ndarray:
    """f(age): the age effect on degeneration at a level of weight 1 (linear between the knots)."""
    g = cfg.degeneration
    return np.interp(np.asarray(age, dtype=float), g.age_knots, g.age_curve)


def _level_weights(cfg: ModelConfig) -> np.ndarray:
    return np.array([cfg.degeneration.level_weights[name] for name in _DISCS])


def _noise_cov(cfg: ModelConfig) -> np.ndarray:
    g = cfg.degeneration
    idx = np.arange(_N_DISC)
    return g.noise_sd**2 * g.neighbour_correlation ** np.abs(idx[:, None] - idx[None, :])


def threshold_u(cfg: ModelConfig, profile: str) -> float:
    """The accelerated threshold: the configured quantile of the profile's u (a normal mixture over smoking)."""
    mix = cfg.profiles.get(profile).smoking.as_dict()
    shift = cfg.predisposition.smoking_shift
    q = cfg.predisposition.accelerated_quantile
    mus = np.array([shift[s] for s in SMOKING_STATUSES])
    ps = np.array([mix[s] for s in SMOKING_STATUSES])
    return float(brentq(lambda x: float(ps @ ndtr(x - mus)) - q, mus.min() - 12, mus.max() + 12, xtol=1e-12))


def _index_positions(index_level: object, n: int) -> np.ndarray:
    """Disc position (0..5) of each patient's index level, -1 for none."""
    if index_level is None:
        return np.full(n, -1)
    names = np.broadcast_to(np.asarray(index_level, dtype=object), (n,))
    pos = {name: i for i, name in enumerate(_DISCS)}
    out = np.full(n, -1)
    for i, name in enumerate(names):
        if isinstance(name, str) and name:
            if name not in pos:
                raise ValueError(f"unknown index level {name!r}; valid: {', '.join(_DISCS)}")
            out[i] = pos[name]
        elif not (name is None or name == "" or (isinstance(name, float) and math.isnan(name))):
            raise ValueError(f"index level must be a disc name or empty, got {name!r}")
    return out


def _posterior_u(
    cfg: ModelConfig, age: np.ndarray, d: np.ndarray, smoking: np.ndarray, index_pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD of u given age, all d_l, smoking and the index level (Gaussian conjugate update)."""
    g = cfg.degeneration
    b = g.predisposition_loading
    shift = cfg.predisposition.smoking_shift
    prior_mean = np.array([shift[s] for s in smoking], dtype=float)
    resid = d - age_curve(cfg, age)[:, None] * _level_weights(cfg)[None, :]
    has_index = index_pos >= 0
    resid[has_index, index_pos[has_index]] -= g.index_shift_mean
    base_cov = _noise_cov(cfg)
    ones = np.ones(_N_DISC)
    mean = np.empty(len(age))
    sd = np.empty(len(age))
    for j in np.unique(index_pos):  # one covariance per index level (its shift adds variance there)
        cov = base_cov.copy()
        if j >= 0:
            cov[j, j] += g.index_shift_sd**2
        w = np.linalg.solve(cov, ones)  # S^-1 1
        precision = 1.0 + b * b * float(ones @ w)
        rows = index_pos == j
        mean[rows] = (prior_mean[rows] + b * resid[rows] @ w) / precision
        sd[rows] = 1.0 / math.sqrt(precision)
    return mean, sd


def oracle_probability(
    cfg: ModelConfig,
    profile: str,
    age: np.ndarray,
    d: np.ndarray,
    smoking: np.ndarray,
    index_level: np.ndarray | list[str] | str | None = None,
) -> np.ndarray:
    """Exact P(accelerated | age, all true d_l, smoking, index level) under the generative model.

    The posterior of u is Gaussian: precision ``1 + b^2 1'S^-1 1`` and mean
    ``(mu_smoking + b 1'S^-1 r) / precision`` with ``r = d - f(age) w - index shift`` and ``S`` the
    covariance of the level noise (plus the index-shift variance at the index level). Everything else
    in a cohort depends on u only through d, so this is the best any classifier can do.

    Parameters
    ----------
    cfg : ModelConfig
        The model that generated the data.
    profile : {"neck", "population"}
        Sets the accelerated threshold (through the profile's smoking mix).
    age : array (n,)
        Age in years (as recorded, the value the model used).
    d : array (n, 6)
        Latent degeneration of the discs C2-C3 .. C7-T1 (``d_latent`` in truth/levels.csv).
    smoking : array (n,) of {"never", "former", "current"}
        Smoking status.
    index_level : array (n,) of disc names, "" or None
        Operated level of surgical patients; None or "" when there is none.

    Returns
    -------
    ndarray (n,)
        Posterior probability that u exceeds the threshold.
    """
    age = np.atleast_1d(np.asarray(age, dtype=float))
    d = np.atleast_2d(np.asarray(d, dtype=float))
    n = len(age)
    if d.shape != (n, _N_DISC):
        raise ValueError(f"d must have shape ({n}, {_N_DISC}) (discs {', '.join(_DISCS)}), got {d.shape}")
    smoking = np.broadcast_to(np.asarray(smoking, dtype=object), (n,))
    bad = sorted({str(s) for s in smoking} - set(SMOKING_STATUSES))
    if bad:
        raise ValueError(f"unknown smoking status {', '.join(bad)}; valid: {', '.join(SMOKING_STATUSES)}")
    if cfg.degeneration.acceleration == "rate":
        return posterior_tail(
            cfg, age, d, smoking, _index_positions(index_level, n), threshold_u(cfg, profile)
        )
    mean, sd = _posterior_u(cfg, age, d.copy(), smoking, _index_positions(index_level, n))
    return 1.0 - ndtr((threshold_u(cfg, profile) - mean) / sd)


#: Grid of the quadrature over u (:func:`posterior_tail`): u from -9 to 9 SD, 3,601 points.
_U_GRID = np.linspace(-9.0, 9.0, 3601)


def _mean_terms(
    cfg: ModelConfig, age: np.ndarray, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean of d given u written as a0 + h(u) a1: (a0 (n, 6), a1 (n, 6), h(u) on `u`)."""
    g = cfg.degeneration
    aged = age_curve(cfg, age)[:, None] * _level_weights(cfg)[None, :]
    if g.acceleration == "rate":
        return np.zeros_like(aged), aged, np.exp(g.rate_loading * u)
    return aged, np.full_like(aged, g.predisposition_loading), u


def posterior_tail(
    cfg: ModelConfig,
    age: np.ndarray,
    d: np.ndarray,
    smoking: np.ndarray,
    index_pos: np.ndarray,
    threshold: float,
    chunk: int = 2048,
) -> np.ndarray:
    """P(u > threshold | age, all d_l, smoking, index level) by quadrature over u, for any mean of d of the form
    a0 + h(u) a1 (offset: a0 = f(age) w, a1 = b, h(u) = u; rate: a0 = 0, a1 = f(age) w, h(u) = exp(c u)).

    The posterior density is proportional to N(u; mu_smoking, 1) exp(h(u) a1'P r - h(u)^2 a1'P a1 / 2), with
    r = d - a0 - index shift and P the inverse covariance of the level noise (plus the index-shift variance at the
    index level); it is integrated with the trapezoidal rule on :data:`_U_GRID` plus the threshold itself, so the
    tail starts exactly there. For the offset model the closed form of :func:`oracle_probability` is exact and
    this agrees with it (tests/test_synth_oplabel.py).
    """
    g = cfg.degeneration
    shift = cfg.predisposition.smoking_shift
    prior = np.array([shift[s] for s in smoking], dtype=float)
    grid = np.union1d(_U_GRID, [threshold])
    a0, a1, h = _mean_terms(cfg, age, grid)
    r = d - a0
    has_index = index_pos >= 0
    r[has_index, index_pos[has_index]] -= g.index_shift_mean
    A, B = np.empty(len(age)), np.empty(len(age))
    for j in np.unique(index_pos):  # one covariance per index level, as in _posterior_u
        cov = _noise_cov(cfg)
        if j >= 0:
            cov[j, j] += g.index_shift_sd**2
        P = np.linalg.inv(cov)
        rows = index_pos == j
        A[rows] = np.einsum("ij,jk,ik->i", a1[rows], P, r[rows])
        B[rows] = np.einsum("ij,jk,ik->i", a1[rows], P, a1[rows])
    above = grid >= threshold
    out = np.empty(len(age))
    for start in range(0, len(age), chunk):
        sl = slice(start, start + chunk)
        logp = -0.5 * (grid[None, :] - prior[sl, None]) ** 2 + A[sl, None] * h - 0.5 * B[sl, None] * h**2
        w = np.exp(logp - logp.max(axis=1, keepdims=True))
        total = np.trapezoid(w, grid, axis=1)
        out[sl] = np.trapezoid(w[:, above], grid[above], axis=1) / total
    return out


# --- sampling ----------------------------------------------------------------------------------------
def _patient_ids(prefix: str, n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"{prefix}{i + 1:0{width}d}" for i in range(n)]


def _truncated_normal(uniform: np.ndarray, mean: float, sd: float, lo: float, hi: float) -> np.ndarray:
    a, b = ndtr((lo - mean) / sd), ndtr((hi - mean) / sd)
    return mean + sd * ndtri(a + uniform * (b - a))


def sample_cohort(cfg: ModelConfig, profile: str, n: int, seed: int) -> CohortTables:
    """Sample a synthetic cohort: clinical scores and the true anatomy and degeneration of each patient.

    Parameters
    ----------
    cfg : ModelConfig
        Model options (``model:`` section of configs/synth.yaml).
    profile : {"neck", "population"}
        "neck": operated radiculopathy patients aged 18-65 with an index level and 2-year outcomes;
        "population": older, not operated, no surgical columns.
    n : int
        Number of patients (>= 1).
    seed : int
        Random seed (>= 0); patient i's values depend only on (seed, i, profile).

    Returns
    -------
    CohortTables
        clinical, patients and levels tables (columns: :data:`CLINICAL_COLUMNS` or
        :data:`POPULATION_CLINICAL_COLUMNS`, :data:`PATIENT_COLUMNS`, :data:`LEVEL_COLUMNS`).
    """
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILE_NAMES)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n, seed = int(n), int(seed)
    z, uni = _draw(seed, profile, n)
    prof = cfg.profiles.get(profile)
    ids = _patient_ids(prof.id_prefix, n)

    pat = _sample_patients(cfg, profile, z, uni)
    deg = _sample_degeneration(cfg, pat, z, uni)
    anat = _sample_anatomy(cfg, pat, deg, z)
    pat["p_oracle"] = oracle_probability(
        cfg,
        profile,
        pat["age"],
        deg["d"],
        pat["smoking"],
        np.where(pat["index_pos"] >= 0, pat["index_level"], ""),
    )
    clinical, oracles = _clinical_table(cfg, prof.surgical, ids, pat, deg, z, uni)
    patients = _patients_table(profile, ids, pat, anat)
    levels = _levels_table(ids, deg, anat)
    log.debug(
        "sampled %d %s patients (seed %d): %.1f%% accelerated",
        n,
        profile,
        seed,
        100 * pat["accelerated"].mean(),
    )
    return CohortTables(clinical=clinical, patients=patients, levels=levels, oracles=oracles)


def _sample_patients(cfg: ModelConfig, profile: str, z: np.ndarray, uni: np.ndarray) -> dict[str, np.ndarray]:
    prof = cfg.profiles.get(profile)
    n = len(z)
    a = prof.age
    age = np.clip(
        np.rint(_truncated_normal(uni[:, _U.index["age"]].ravel(), a.mean, a.sd, a.min, a.max)), a.min, a.max
    )
    male = uni[:, _U.index["sex"]].ravel() < prof.male_fraction
    bmi = np.maximum(prof.bmi_min, prof.bmi_mean + prof.bmi_sd * z[:, _Z.index["bmi"]].ravel())
    mix = prof.smoking.as_dict()
    smoking = np.array(SMOKING_STATUSES, dtype=object)[
        _categorical(uni[:, _U.index["smoking"]].ravel(), [mix[s] for s in SMOKING_STATUSES])
    ]
    shift = cfg.predisposition.smoking_shift
    u = np.array([shift[s] for s in smoking]) + z[:, _Z.index["u"]].ravel()
    thr = threshold_u(cfg, profile)
    if prof.surgical:
        freq = cfg.clinical.index_level_frequencies
        names = [name for name in _DISCS if name in freq]
        chosen = np.array(names, dtype=object)[
            _categorical(uni[:, _U.index["index"]].ravel(), [freq[k] for k in names])
        ]
        index_pos = np.array([_DISCS.index(name) for name in chosen])
        index_level = chosen
    else:
        index_pos = np.full(n, -1)
        index_level = np.full(n, "", dtype=object)
    no_mri = uni[:, _U.index["no_mri"]].ravel() < cfg.missing.no_mri_fraction
    # Never both images missing: a patient without an MRI keeps the radiograph.
    no_xray = (uni[:, _U.index["no_xray"]].ravel() < cfg.missing.no_xray_fraction) & ~no_mri
    return {
        "age": age, "male": male, "bmi": bmi, "smoking": smoking, "u": u, "threshold": np.full(n, thr),
        "accelerated": (u > thr).astype(int), "index_pos": index_pos, "index_level": index_level,
        "has_mri": (~no_mri).astype(int), "has_xray": (~no_xray).astype(int),
    }  # fmt: skip


def _sample_degeneration(
    cfg: ModelConfig, pat: dict[str, np.ndarray], z: np.ndarray, uni: np.ndarray
) -> dict[str, np.ndarray]:
    """Latent degeneration d (n, 6) and the grades and signs that follow from it."""
    g, gr, dc = cfg.degeneration, cfg.grading, cfg.disc
    n = len(z)
    rows = np.arange(n)
    has_index = pat["index_pos"] >= 0
    is_index = np.zeros((n, _N_DISC), dtype=int)
    is_index[rows[has_index], pat["index_pos"][has_index]] = 1
    chol = np.linalg.cholesky(_noise_cov(cfg))
    e = z[:, _Z.index["e"]] @ chol.T
    shift = g.index_shift_mean + g.index_shift_sd * z[:, _Z.index["index_shift"]]
    if g.acceleration == "rate":  # degeneration grows faster with age for a high u
        d = (
            age_curve(cfg, pat["age"])[:, None]
            * _level_weights(cfg)[None, :]
            * np.exp(g.rate_loading * pat["u"])[:, None]
            + e
            + is_index * shift
        )
    else:
        d = (
            age_curve(cfg, pat["age"])[:, None] * _level_weights(cfg)[None, :]
            + g.predisposition_loading * pat["u"][:, None]
            + e
            + is_index * shift
        )
    miyazaki = 1 + (
        (d + gr.miyazaki_noise_sd * z[:, _Z.index["miyazaki"]])[:, :, None] > np.array(gr.miyazaki_cuts)
    ).sum(axis=2)
    kl_shift = np.interp(pat["age"], gr.kl_age_knots, gr.kl_age_shift)[:, None]
    kl = ((d + kl_shift + gr.kl_noise_sd * z[:, _Z.index["kl"]])[:, :, None] > np.array(gr.kl_cuts)).sum(
        axis=2
    )
    p_modic = expit(
        gr.modic_intercept + gr.modic_slope * (d - gr.modic_centre) + gr.modic_index_bonus * is_index
    )
    modic_type = np.where(
        uni[:, _U.index["modic"]] < p_modic,
        1 + _categorical(uni[:, _U.index["modic_type"]], list(gr.modic_type_probs)),
        0,
    )

    t2 = np.clip(np.asarray(dc.t2_by_miyazaki)[miyazaki - 1] + dc.t2_sd * z[:, _Z.index["t2"]], 0.03, 1.1)
    ost_mean = np.asarray(dc.osteophyte_by_kl)[kl]
    osteophyte = np.maximum(0.0, ost_mean * (1.0 + dc.osteophyte_sd * z[:, _Z.index["osteophyte"]]))
    scl_mean = np.asarray(dc.sclerosis_by_kl)[kl]
    # Grades with no sclerosis get exactly none; the others scatter around their mean.
    sclerosis = np.where(
        scl_mean > 0, np.clip(scl_mean + dc.sclerosis_sd * z[:, _Z.index["sclerosis"]], 0, 1), 0.0
    )
    bulge = np.maximum(
        0.0,
        dc.bulge_base_mm
        + dc.bulge_per_grade_mm * (miyazaki - 1)
        + dc.bulge_index_mm * is_index
        + dc.bulge_sd_mm * z[:, _Z.index["bulge"]],
    )
    # Degeneration beyond what age (and the operation level) explain, standardised: the clinical
    # scores depend on u only through it, which keeps the oracle exact.
    resid = (
        d - age_curve(cfg, pat["age"])[:, None] * _level_weights(cfg)[None, :] - g.index_shift_mean * is_index
    )
    sd_excess = math.sqrt(g.predisposition_loading**2 + _noise_cov(cfg).sum() / _N_DISC**2)
    return {
        "d": d, "miyazaki": miyazaki, "kl": kl, "modic": modic_type, "t2": t2, "osteophyte": osteophyte,
        "sclerosis": sclerosis, "bulge": bulge, "is_index": is_index, "excess": resid.mean(axis=1) / sd_excess,
    }  # fmt: skip


def _sample_anatomy(
    cfg: ModelConfig, pat: dict[str, np.ndarray], deg: dict[str, np.ndarray], z: np.ndarray
) -> dict[str, np.ndarray]:
    """Vertebral bodies, disc heights and angles with an exactly consistent sagittal geometry."""
    vc, dc, al = cfg.vertebra, cfg.disc, cfg.alignment
    n = len(z)
    male = pat["male"]
    scale = (
        np.where(male, vc.size_scale_male, vc.size_scale_female)
        + vc.size_scale_sd * z[:, _Z.index["size_scale"]].ravel()
    )
    anat = [vc.anatomy[v] for v in _VERTS]
    s = scale[:, None]
    # A body's size varies more than its shape: a common height deviation plus a small wedge deviation.
    common = vc.height_sd_mm * z[:, _Z.index["body_anterior"]]
    diff = 0.5 * vc.height_difference_sd_mm * z[:, _Z.index["body_posterior"]]
    body_a = s * np.array([a.height_anterior_mm for a in anat]) + common + diff
    body_p = s * np.array([a.height_posterior_mm for a in anat]) + common - diff
    depth = s * np.array([a.depth_mm for a in anat]) + vc.depth_sd_mm * z[:, _Z.index["depth"]]
    width = s * np.array([a.width_mm for a in anat]) + vc.width_sd_mm * z[:, _Z.index["width"]]
    body_a, body_p = np.maximum(body_a, 3.0), np.maximum(body_p, 3.0)
    depth, width = np.maximum(depth, 5.0), np.maximum(width, 5.0)
    dens = vc.dens_height_mm + vc.dens_height_sd_mm * z[:, _Z.index["dens"]].ravel()

    # Discs: healthy middle height, then the loss that goes with the Miyazaki grade.
    healthy = (
        np.array([dc.healthy_middle_mm[k] for k in _DISCS])[None, :]
        + np.where(male, 0.5, -0.5)[:, None] * dc.male_minus_female_mm
        + dc.patient_sd_mm * z[:, _Z.index["disc_patient"]]
        + dc.level_sd_mm * z[:, _Z.index["disc_level"]]
    )
    loss = np.clip(
        np.asarray(dc.loss_by_miyazaki)[deg["miyazaki"] - 1] + dc.loss_sd * z[:, _Z.index["loss"]], 0.0, 0.9
    )
    middle = np.maximum(dc.middle_min_mm, healthy * (1.0 - loss))
    ratio = np.clip(dc.concavity_ratio + dc.concavity_sd * z[:, _Z.index["concavity"]], 0.0, 0.6)
    # Concavity = middle - mean(anterior, posterior); a collapsed disc's endplates flatten with it.
    concavity = np.clip(ratio * middle, 0.0, middle - dc.min_height_mm - 0.1)
    disc_depth = 0.5 * (depth[:, :-1] + depth[:, 1:])  # AP extent: mean depth of the two bodies
    # Largest |angle| that keeps anterior and posterior heights >= min_height_mm.
    half_max = np.maximum(middle - concavity - dc.min_height_mm, 0.0)
    angle_max = np.degrees(np.arctan(2.0 * _SLOPE_FACTOR * half_max / disc_depth))

    # Bodies: each endplate is concave by half the concavity of the disc it borders, so bodies and
    # discs stacked one on the other keep their endplates' shape (no bowing builds up along the
    # spine); C2 has no disc above (dens), T1's inferior endplate depth is configured.
    depth_upper = np.concatenate([np.zeros((n, 1)), 0.5 * concavity], axis=1)
    depth_lower = np.concatenate([0.5 * concavity, np.full((n, 1), vc.t1_inferior_concavity_mm)], axis=1)
    body_m = 0.5 * (body_a + body_p) - depth_upper - depth_lower
    wedge = np.degrees(np.arctan(_SLOPE_FACTOR * (body_a - body_p) / depth))

    # Alignment: draw the Cobb angle, take off the body wedges C3..C7, spread the rest over the discs
    # C2-C3..C6-C7 (degenerated discs carry less of it), then respect each disc's angle limit.
    cobb_target = al.cobb_mean_deg + al.cobb_sd_deg * z[:, _Z.index["cobb"]].ravel()
    disc_total = cobb_target - wedge[:, 1:6].sum(axis=1)
    share = np.array([al.disc_angle_share[k] for k in _DISCS[:-1]])[None, :] * (
        1.0 - al.flattening * loss[:, :-1]
    )
    share = share / share.sum(axis=1, keepdims=True)
    eps = al.angle_noise_sd_deg * z[:, _Z.index["angle"]]
    theta = share * disc_total[:, None] + eps - share * eps.sum(axis=1, keepdims=True)
    theta = _fit_angles(theta, disc_total, share, angle_max[:, :-1])
    c7t1 = np.clip(
        al.c7t1_angle_mean_deg + al.c7t1_angle_sd_deg * z[:, _Z.index["c7t1_angle"]].ravel(),
        -angle_max[:, -1],
        angle_max[:, -1],
    )
    disc_angle = np.concatenate([theta, c7t1[:, None]], axis=1)
    half_diff = np.tan(np.radians(disc_angle)) * disc_depth / (2.0 * _SLOPE_FACTOR)
    disc_a = middle - concavity + half_diff
    disc_p = middle - concavity - half_diff
    segmental = disc_angle + wedge[:, 1:]

    cfg_soft = cfg.soft_tissue
    canal = np.maximum(
        8.0, cfg_soft.canal_ap_mean_mm + cfg_soft.canal_ap_sd_mm * z[:, _Z.index["canal"]].ravel()
    )
    neck = (
        cfg_soft.neck_depth_female_mm
        + cfg_soft.neck_depth_male_extra_mm * male
        + cfg_soft.neck_depth_per_bmi_mm * (pat["bmi"] - 27.0)
        + cfg_soft.neck_depth_sd_mm * z[:, _Z.index["neck"]].ravel()
    )
    return {
        "size_scale": scale, "body_a": body_a, "body_m": body_m, "body_p": body_p, "depth": depth, "width": width,
        "wedge": wedge, "dens": dens, "disc_a": disc_a, "disc_m": middle, "disc_p": disc_p, "disc_angle": disc_angle,
        "segmental": segmental, "cobb": segmental[:, :-1].sum(axis=1), "canal": canal,
        "neck": np.maximum(neck, 60.0),
    }  # fmt: skip


def _fit_angles(theta: np.ndarray, total: np.ndarray, share: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Clip disc angles to their limits, moving what is clipped off onto the discs that still have room."""
    for _ in range(len(share[0]) + 1):
        theta = np.clip(theta, -limit, limit)
        rest = total - theta.sum(axis=1)
        room = np.where(rest[:, None] > 0, theta < limit - 1e-9, theta > -limit + 1e-9)
        weight = share * room
        wsum = weight.sum(axis=1, keepdims=True)
        if np.all(np.abs(rest) < 1e-9) or not np.any(wsum > 0):
            break
        theta = theta + np.where(wsum > 0, weight / np.where(wsum > 0, wsum, 1.0), 0.0) * rest[:, None]
    # Extreme Cobb angles that no disc can take any more are left short: the reported Cobb angle is
    # always the sum of the segmental angles actually built.
    return np.clip(theta, -limit, limit)


def _clinical_table(
    cfg: ModelConfig,
    surgical: bool,
    ids: list[str],
    pat: dict[str, np.ndarray],
    deg: dict[str, np.ndarray],
    z: np.ndarray,
    uni: np.ndarray,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """clinical.csv: what the study records. Scores depend on u only through the degeneration excess.

    Also returns the exact latent oracle of each outcome that has one (surgical profile: poor_outcome_2y).
    """
    c = cfg.clinical
    ex = deg["excess"]
    df = pd.DataFrame({
        "patient_id": ids,
        "age": pat["age"].astype(int),
        "sex": np.where(pat["male"], "M", "F"),
        "bmi": np.round(pat["bmi"], 1),
        "smoking": pat["smoking"].astype(str),
    })  # fmt: skip
    if surgical:
        mu = math.log(c.symptom_median_months)
        sigma = math.log(24.0 / c.symptom_median_months) / float(ndtri(1.0 - c.symptom_over_24_fraction))
        duration = np.exp(
            _truncated_normal(
                uni[:, _U.index["duration"]].ravel(), mu, sigma, math.log(c.symptom_min_months), 1e9
            )
        )
        df["symptom_duration_months"] = np.round(np.maximum(duration, c.symptom_min_months), 1)
        df["index_level"] = pat["index_level"].astype(str)
        df["arm"] = np.array(c.arms, dtype=object)[
            np.minimum((uni[:, _U.index["arm"]].ravel() * len(c.arms)).astype(int), len(c.arms) - 1)
        ].astype(str)
        oracles = {"poor_outcome_2y": _add_outcomes(cfg, df, ex, z, uni)}
    else:
        oracles = {}
        zero = uni[:, _U.index["population_zero"]].ravel() < c.population_ndi_zero_fraction
        # Exponential scores among those with complaints, slightly higher with more degeneration
        # (the weak link the literature reports).
        factor = np.exp(0.1 * ex)
        ndi = -c.population_ndi_mean_nonzero * factor * np.log1p(-uni[:, _U.index["population_ndi"]].ravel())
        vas = (
            -c.population_vas_neck_mean
            / max(1e-9, 1 - c.population_ndi_zero_fraction)
            * factor
            * np.log1p(-uni[:, _U.index["population_vas"]].ravel())
        )
        df["ndi_0"] = np.where(zero, 0, 2 * np.rint(np.clip(ndi, 0, 100) / 2)).astype(int)
        df["vas_neck_0"] = np.where(zero, 0, np.rint(np.clip(vas, 0, 100))).astype(int)
    df["accelerated"] = pat["accelerated"].astype(int)
    _blank_missing(cfg, df, uni)
    columns = list(CLINICAL_COLUMNS if surgical else POPULATION_CLINICAL_COLUMNS)
    return df[columns].reset_index(drop=True), oracles


def _add_outcomes(
    cfg: ModelConfig, df: pd.DataFrame, ex: np.ndarray, z: np.ndarray, uni: np.ndarray
) -> np.ndarray:
    """NDI, VAS, perceived recovery, poor outcome and reoperation of the surgical profile.

    Returns the latent oracle of ``poor_outcome_2y`` (:func:`poor_outcome_probability`): its exact
    probability given the baseline scores, the clinical prognostic factors and the degeneration beyond age.
    """
    c = cfg.clinical
    # NDI is scored in steps of 2 points (10 items x 0-5, x2); VAS in whole millimetres.
    ndi0 = np.clip(
        c.ndi_baseline_mean
        + c.ndi_baseline_sd * z[:, _Z.index["ndi_0"]].ravel()
        + c.excess_baseline_ndi * ex,
        0,
        100,
    )
    ndi0 = 2 * np.rint(ndi0 / 2)
    vas0 = np.clip(
        c.vas_baseline_mean
        + c.vas_baseline_sd * z[:, _Z.index["vas_0"]]
        + c.excess_baseline_ndi * ex[:, None],
        0,
        100,
    )
    # The mean of the recovery logit: degeneration beyond age and the clinical prognostic factors. The
    # random parts below use the same draws as before, so only the outcome columns depend on the factors.
    centre = c.ndi_remaining_logit_mean + c.excess_outcome_logit * ex + _prognostic_logit(c, df, ndi0, vas0)
    z_logit = z[:, _Z.index["ndi_logit"]].ravel()
    logit1 = centre + c.ndi_remaining_logit_sd * z_logit
    logit2 = logit1 + c.ndi_2y_logit_change_sd * z[:, _Z.index["ndi_change"]].ravel()
    noise = c.ndi_noise_sd * z[:, _Z.index["ndi_noise"]]
    ndi1 = 2 * np.rint(np.clip(ndi0 * expit(logit1) + noise[:, 0], 0, 100) / 2)
    ndi2 = 2 * np.rint(np.clip(ndi0 * expit(logit2) + noise[:, 1], 0, 100) / 2)
    df["ndi_0"], df["ndi_1y"], df["ndi_2y"] = ndi0.astype(int), ndi1.astype(int), ndi2.astype(int)

    r = c.vas_ndi_correlation
    vas_logit1 = (
        c.vas_remaining_logit_mean
        + c.vas_remaining_logit_sd
        * (r * z_logit[:, None] + math.sqrt(1 - r * r) * z[:, _Z.index["vas_logit"]])
        + c.excess_outcome_logit * ex[:, None]
    )
    vas_logit2 = vas_logit1 + c.ndi_2y_logit_change_sd * z[:, _Z.index["vas_change"]]
    vnoise = c.vas_noise_sd * z[:, _Z.index["vas_noise"]]
    vas1 = np.rint(np.clip(vas0 * expit(vas_logit1) + vnoise[:, :2], 0, 100))
    vas2 = np.rint(np.clip(vas0 * expit(vas_logit2) + vnoise[:, 2:], 0, 100))
    vas0, vas1, vas2 = np.rint(vas0).astype(int), vas1.astype(int), vas2.astype(int)
    for j, part in enumerate(("arm", "neck")):
        df[f"vas_{part}_0"], df[f"vas_{part}_1y"], df[f"vas_{part}_2y"] = vas0[:, j], vas1[:, j], vas2[:, j]

    rnoise = c.recovery_noise_sd * z[:, _Z.index["recovery_noise"]]
    cuts = np.asarray(c.recovery_cuts)
    # Likert 1 = completely recovered ... 7 = worse than ever: more disability left, worse rating.
    df["recovery_1y"] = 1 + ((logit1 + rnoise[:, 0])[:, None] > cuts).sum(axis=1)
    df["recovery_2y"] = 1 + ((logit2 + rnoise[:, 1])[:, None] > cuts).sum(axis=1)
    df["poor_outcome_2y"] = ((ndi0 - ndi2) < _poor_outcome_margin(ndi0)).astype(int)
    p_reop = expit(_reoperation_intercept(c) + c.reoperation_excess_logodds * ex)
    df["reoperation_2y"] = (uni[:, _U.index["reoperation"]].ravel() < p_reop).astype(int)
    return poor_outcome_probability(cfg, ndi0, centre)


def _prognostic_logit(c: ClinicalConfig, df: pd.DataFrame, ndi0: np.ndarray, vas0: np.ndarray) -> np.ndarray:
    """The clinical prognostic factors' shift of the recovery logit (positive: more disability left).

    Smoking status, symptom duration (per doubling beyond the median), neck-dominant pain (baseline VAS neck
    above VAS arm) and baseline NDI (per 10 points above its mean), as configs/synth.yaml documents them.
    """
    smoking = df["smoking"].map(c.smoking_outcome_logit).to_numpy(dtype=float)
    duration = np.log2(df["symptom_duration_months"].to_numpy(dtype=float) / c.symptom_median_months)
    neck_dominant = (np.rint(vas0[:, 1]) > np.rint(vas0[:, 0])).astype(float)
    return (
        smoking
        + c.duration_outcome_logit_per_doubling * duration
        + c.neck_dominant_outcome_logit * neck_dominant
        + c.ndi_baseline_outcome_logit_per_10 * (ndi0 - c.ndi_baseline_mean) / 10.0
    )


def _poor_outcome_margin(ndi0: np.ndarray) -> np.ndarray:
    """The NDI improvement below which the 2-year outcome is poor: 7.5 points or 30% of the baseline."""
    return np.maximum(7.5, 0.3 * np.asarray(ndi0, dtype=float))


def poor_outcome_probability(cfg: ModelConfig, ndi_0: np.ndarray, logit_mean: np.ndarray) -> np.ndarray:
    """Exact P(poor_outcome_2y | baseline NDI, mean recovery logit) under the generative model.

    The 2-year NDI is ``2 rint(clip(ndi_0 expit(L) + e, 0, 100) / 2)`` with ``L ~ N(logit_mean, s^2)``,
    ``s^2 = ndi_remaining_logit_sd^2 + ndi_2y_logit_change_sd^2`` and ``e ~ N(0, ndi_noise_sd^2)``.
    The outcome is poor when the improvement ``ndi_0 - ndi_2y`` stays below ``max(7.5, 0.3 ndi_0)``, i.e.
    when ``ndi_2y >= k`` for the smallest even ``k`` above ``ndi_0 - margin``; rounding to steps of 2 makes
    that ``clip(...) >= k - 1``. Given ``L`` this is ``Phi((ndi_0 expit(L) - (k - 1)) / sd_e)``; the mean over
    ``L`` is a one-dimensional Gaussian integral, summed on a grid fine enough for the noise (within 1e-5 of a
    direct integral); with less than half a point of noise the integral runs over ``e`` instead (exact
    without noise).

    Parameters
    ----------
    cfg : ModelConfig
        The model that generated the data.
    ndi_0 : array (n,)
        Baseline NDI as recorded (even whole numbers, 0-100).
    logit_mean : array (n,)
        Mean of the recovery logit: ``ndi_remaining_logit_mean + excess_outcome_logit x excess + the
        clinical prognostic factors`` (the generator's latent state before the patient's own chance).

    Returns
    -------
    ndarray (n,)
        Probability of a poor 2-year outcome.
    """
    c = cfg.clinical
    ndi0 = np.atleast_1d(np.asarray(ndi_0, dtype=float))
    mean = np.broadcast_to(np.asarray(logit_mean, dtype=float), ndi0.shape)
    margin = _poor_outcome_margin(ndi0)
    # Smallest even k with ndi0 - k < margin, in the generator's own floating-point comparison.
    k = 2.0 * np.floor((ndi0 - margin) / 2.0) + 2.0
    k = np.where(ndi0 - (k - 2.0) < margin, k - 2.0, k)
    cut = k - 1.0  # poor <=> clip(ndi0 expit(L) + e, 0, 100) >= cut (cut <= 99: the upper clip never matters)
    sd = math.hypot(c.ndi_remaining_logit_sd, c.ndi_2y_logit_change_sd)
    noise = c.ndi_noise_sd
    if noise >= _SMALL_NOISE:
        # Mean of Phi((ndi0 expit(L) - cut) / noise) over L on a uniform grid whose step follows the width of
        # the steepest rise of Phi(.) (~ 4 noise / ndi0 in L): the integrand is smooth under a Gaussian, so
        # the plain sum converges fast (within 1e-10 of a 200,001-point grid at noise 0.5 to 30 points).
        step = min(0.25 * sd, _STEP_PER_NOISE * noise / max(float(ndi0.max(initial=0.0)), 1.0))
        z = np.arange(-_HALF_WIDTH, _HALF_WIDTH + step / 2, step / sd)
        w = np.exp(-0.5 * z * z)
        w /= w.sum()
        p = np.empty(len(ndi0))
        for rows in np.array_split(np.arange(len(ndi0)), max(1, len(ndi0) * len(z) // 4_000_000)):
            remaining = ndi0[rows, None] * expit(mean[rows, None] + sd * z[None, :])
            p[rows] = ndtr((remaining - cut[rows, None]) / noise) @ w
    else:
        # Little or no measurement noise makes Phi(.) a step in L: integrate over the noise instead. Given e,
        # poor <=> L >= logit((cut - e) / ndi0), a normal tail (exact without noise).
        x, w = np.polynomial.hermite_e.hermegauss(_NOISE_NODES)
        w = w / w.sum()
        need = (cut[:, None] - noise * x[None, :]) / np.maximum(ndi0, 1e-12)[:, None]
        ratio = np.clip(need, 1e-15, 1.0 - 1e-15)
        tail = 1.0 - ndtr((np.log(ratio / (1.0 - ratio)) - mean[:, None]) / sd)
        p = np.where(need <= 0, 1.0, np.where(need >= 1, 0.0, tail)) @ w
    return np.where(cut <= 0, 1.0, p)  # the lower clip: a 2-year NDI of 0 is already >= cut


# poor_outcome_probability: below _SMALL_NOISE NDI points of measurement noise it integrates over the noise
# (Gauss-Hermite, _NOISE_NODES), above over the recovery logit on a grid of +-_HALF_WIDTH standard deviations.
_SMALL_NOISE = 0.5
_NOISE_NODES = 80
_HALF_WIDTH = 8.5
_STEP_PER_NOISE = 3.0  # grid step in L per point of noise over the largest baseline NDI (1e-11 accurate)


def _reoperation_intercept(c: ClinicalConfig) -> float:
    """Log-odds intercept that makes the mean 2-year reoperation risk match the yearly rate.

    The excess is standard normal, so the intercept solves E[expit(a + beta Z)] = 1 - (1 - rate)^2.
    """
    p2 = 1.0 - (1.0 - c.reoperation_rate_per_year) ** 2
    if p2 <= 0.0:
        return -np.inf
    x, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    beta = c.reoperation_excess_logodds
    return float(brentq(lambda a: float(w @ expit(a + beta * x)) - p2, -50, 50, xtol=1e-12))


def _blank_missing(cfg: ModelConfig, df: pd.DataFrame, uni: np.ndarray) -> None:
    """Leave a small fraction of the configured clinical values empty (one uniform per column)."""
    m = cfg.missing
    draws = uni[:, _U.index["missing"]]
    for j, col in enumerate(MISSABLE_COLUMNS):
        if col not in m.clinical_columns or col not in df:
            continue
        miss = draws[:, j] < m.clinical_fraction
        kind = df[col].dtype.kind
        # Nullable dtypes keep whole-number scores whole (an empty cell in the CSV, not "65.0").
        values = (
            df[col].astype("Int64") if kind in "iu" else df[col].astype("Float64") if kind == "f" else df[col]
        )
        df[col] = values.mask(miss)


def _patients_table(
    profile: str, ids: list[str], pat: dict[str, np.ndarray], anat: dict[str, np.ndarray]
) -> pd.DataFrame:
    df = pd.DataFrame({
        "patient_id": ids,
        "profile": profile,
        "age": pat["age"].astype(int),
        "sex": np.where(pat["male"], "M", "F"),
        "predisposition_u": pat["u"],
        "accelerated": pat["accelerated"].astype(int),
        "p_oracle": pat["p_oracle"],
        "cobb_c2c7_deg": anat["cobb"],
        "size_scale": anat["size_scale"],
        "canal_ap_mm": anat["canal"],
        "neck_depth_mm": anat["neck"],
        "has_mri": pat["has_mri"].astype(int),
        "has_xray": pat["has_xray"].astype(int),
        "index_level": pat["index_level"].astype(str),
        "threshold_u": pat["threshold"],
    })  # fmt: skip
    return df[list(PATIENT_COLUMNS)]


def _levels_table(ids: list[str], deg: dict[str, np.ndarray], anat: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per patient x structure in the label convention's cranio-caudal order."""
    n = len(ids)
    structs = labels.STRUCTURES
    n_s = len(structs)
    nan = np.full((n, n_s), np.nan)
    cols: dict[str, np.ndarray] = {c: nan.copy() for c in (*VERTEBRA_COLUMNS, *DISC_COLUMNS)}
    v_pos = [s.order for s in structs if s.kind == "vertebra"]
    d_pos = [s.order for s in structs if s.kind == "disc"]
    for col, key in (
        ("body_height_anterior_mm", "body_a"), ("body_height_middle_mm", "body_m"),
        ("body_height_posterior_mm", "body_p"), ("body_depth_mm", "depth"), ("body_width_mm", "width"),
        ("body_wedge_deg", "wedge"),
    ):  # fmt: skip
        cols[col][:, v_pos] = anat[key]
    cols["dens_height_mm"][:, v_pos[_VERTS.index("C2")]] = anat["dens"]
    for col, src in (
        ("d_latent", deg["d"]), ("kl_grade", deg["kl"]), ("miyazaki_grade", deg["miyazaki"]),
        ("modic_type", deg["modic"]), ("disc_height_anterior_mm", anat["disc_a"]),
        ("disc_height_middle_mm", anat["disc_m"]), ("disc_height_posterior_mm", anat["disc_p"]),
        ("disc_angle_deg", anat["disc_angle"]), ("segmental_angle_deg", anat["segmental"]),
        ("t2_signal", deg["t2"]), ("osteophyte_mm", deg["osteophyte"]), ("sclerosis", deg["sclerosis"]),
        ("bulge_mm", deg["bulge"]), ("is_index", deg["is_index"]),
    ):  # fmt: skip
        cols[col][:, d_pos] = src
    df = pd.DataFrame({
        "patient_id": np.repeat(np.asarray(ids, dtype=object), n_s).astype(str),
        "structure": np.tile([s.kind for s in structs], n),
        "level": np.tile([s.name for s in structs], n),
        "label": np.tile([s.label for s in structs], n).astype(int),
        **{c: v.ravel() for c, v in cols.items()},
    })  # fmt: skip
    for col in ("kl_grade", "miyazaki_grade", "modic_type", "is_index"):
        df[col] = df[col].astype("Int64")  # whole numbers on disc rows, blank on vertebra rows
    return df[list(LEVEL_COLUMNS)]
