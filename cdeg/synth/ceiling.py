"""The ceilings of a synthetic cohort: the best AUC its images and clinical table allow, and what lies beyond.

truth/patients.csv's ``p_oracle`` is the exact ``P(accelerated | latent degeneration d_l, age, smoking, index
level)``. No image reaches it: images show only grades, heights, signal, osteophytes and Modic changes that are
noisy functions of ``d_l``. So the AUC a study can hope for is lower. This module estimates it, per profile and
outcome, with two models fitted on a large synthetic cohort of the same configuration:

* *observable*: on :func:`observable_table`, the image markers of every level as the truth records them (a
  perfect reading of the images), the demographics and the clinical scores known before surgery;
* *latent*: on :func:`latent_table`, the same with ``d_latent`` in place of the image markers: the oracle of
  outcomes without an exact formula. ``accelerated`` and ``poor_outcome_2y`` have one, so their latent ceiling is
  exact: ``p_oracle`` and :func:`cdeg.synth.model.poor_outcome_probability` (``CohortTables.oracles``).

Each model is a scikit-learn HistGradientBoostingClassifier (early stopping on a seeded validation split),
compared on a held-out fifth of the large cohort with a logistic regression on the same table; the better of
the two on that fifth is kept, and both AUCs are recorded (:attr:`CeilingModels.metrics`).

The large cohort is drawn with :data:`CEILING_SEED`, above the seeds a study may use (``cohorts.*.synth.seed``
is at most 2**31 - 1), so its patients are never those of a study cohort. Its size is ``ceiling.n`` of
configs/synth.yaml.

The fitted models are cached per configuration in ``$CDEG_CACHE_DIR/ceiling/`` (default ``~/.cache/cdeg``),
under the SHA-256 of the resolved model configuration, the profile, the size of the large cohort, the seed,
this module's method version and the versions of cdeg and scikit-learn (:func:`cache_key`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cdeg import __version__, labels
from cdeg.cohort import CEILING_KINDS, CEILING_TARGETS, ID_COLUMN, ceiling_column
from cdeg.config import to_dict
from cdeg.defaults import doc_field as _f
from cdeg.defaults import shipped_defaults
from cdeg.io import atomic_path
from cdeg.synth.model import CohortTables, ModelConfig, sample_cohort
from cdeg.synth.model_config import ARMS, PROFILE_NAMES, SMOKING_STATUSES

__all__ = [
    "CACHE_ENV",
    "CEILING_SEED",
    "CeilingConfig",
    "CeilingModels",
    "cache_folder",
    "cache_key",
    "ceiling_columns",
    "ceiling_models",
    "ceiling_probabilities",
    "latent_table",
    "observable_table",
]

log = logging.getLogger(__name__)

#: Seed of the large cohorts: above every study seed (at most 2**31 - 1), so never a study's patients.
CEILING_SEED = 2**32
#: Environment variable naming the cache folder (default ``~/.cache/cdeg``); the models go in ``ceiling/``.
CACHE_ENV = "CDEG_CACHE_DIR"
# Bump when the tables or the models change: every cached fit is then refitted.
_METHOD_VERSION = 2  # 2: poor_outcome_2y's latent ceiling is its exact oracle
_HELD_OUT = 0.2  # fraction of the large cohort kept for the HGB vs logistic comparison

#: Image markers of a disc level (truth/levels.csv disc rows) in the observable table.
DISC_MARKERS: tuple[str, ...] = (
    "kl_grade", "miyazaki_grade", "modic_type", "disc_height_anterior_mm", "disc_height_middle_mm",
    "disc_height_posterior_mm", "disc_angle_deg", "segmental_angle_deg", "t2_signal", "osteophyte_mm",
    "sclerosis", "bulge_mm",
)  # fmt: skip
#: Vertebral body markers: they carry the patient's size, which sets the healthy disc heights.
VERTEBRA_MARKERS: tuple[str, ...] = (
    "body_height_anterior_mm", "body_height_middle_mm", "body_height_posterior_mm", "body_depth_mm",
    "body_wedge_deg",
)  # fmt: skip
# Markers that only one modality shows, blanked for a patient without that image (truth/patients.csv
# has_<modality>): grades are read on their own image, T2 signal and Modic change are MRI signal, and the
# radiograph renders a posterior bulge as soft tissue (cdeg/synth/render_xray.py). Heights, angles,
# osteophytes and sclerosis show on both.
_ONE_MODALITY: dict[str, tuple[str, ...]] = {
    "mri": ("miyazaki_grade", "t2_signal", "modic_type", "bulge_mm"),
    "xray": ("kl_grade",),
}
#: Clinical values known before surgery (clinical.csv), where the profile records them.
BASELINE_CLINICAL: tuple[str, ...] = (
    "ndi_0", "vas_arm_0", "vas_neck_0", "symptom_duration_months", "bmi",
)  # fmt: skip


@dataclass(frozen=True)
@shipped_defaults("ceiling")
class CeilingConfig:
    """The ceiling columns of truth/patients.csv (``ceiling:`` section of configs/synth.yaml)."""

    enabled: bool = _f(
        "write the ceiling columns and the operational label (fits or loads the ceiling models and the label's "
        "reference, cdeg.synth.oplabel)"
    )
    n: int = _f("patients of the large cohort the ceiling models are fitted on", (500, 1_000_000))


# --- the tables ----------------------------------------------------------------------------------------------
def _levels_wide(tables: CohortTables, structure: str, markers: tuple[str, ...]) -> pd.DataFrame:
    """One row per patient, one ``<level>_<marker>`` column per level of `structure` and marker."""
    rows = tables.levels[tables.levels["structure"] == structure]
    order = [s.name for s in labels.STRUCTURES if s.kind == structure]
    values = (
        rows[list(markers)]
        .astype("float64")
        .set_axis(pd.MultiIndex.from_arrays([rows[ID_COLUMN], rows["level"]]), axis=0)
    )
    wide = values.unstack("level")
    cols = [(m, lvl) for lvl in order for m in markers if (m, lvl) in wide.columns]
    wide = wide[cols]
    wide.columns = [f"{lvl}_{m}" for m, lvl in cols]
    return wide


def _patient_columns(tables: CohortTables) -> pd.DataFrame:
    """Demographics, index level and the pre-operative clinical values, as numbers (NaN where missing)."""
    clin = tables.clinical.set_index(ID_COLUMN)
    out = pd.DataFrame(index=clin.index)
    out["age"] = pd.to_numeric(clin["age"], errors="coerce").astype(float)
    out["male"] = clin["sex"].map({"M": 1.0, "F": 0.0}).astype(float)
    # Smoking shifts the predisposition monotonically (never < former < current): one ordinal column.
    out["smoking"] = clin["smoking"].map({s: float(i) for i, s in enumerate(SMOKING_STATUSES)}).astype(float)
    for col in BASELINE_CLINICAL:
        if col in clin:
            out[col] = pd.to_numeric(clin[col], errors="coerce").astype(float)
    if "index_level" in clin:  # surgical profile only
        for name in labels.DISC_NAMES:
            out[f"index_{name}"] = (clin["index_level"] == name).astype(float)
    if "arm" in clin:
        for arm in ARMS:
            out[f"arm_{arm}"] = (clin["arm"] == arm).astype(float)
    return out


def _assemble(tables: CohortTables, parts: list[pd.DataFrame]) -> pd.DataFrame:
    ids = pd.Index(tables.patients[ID_COLUMN].astype(str), name=ID_COLUMN)
    table = pd.concat([p.reindex(ids) for p in (_patient_columns(tables), *parts)], axis=1)
    return table.astype(float)


def observable_table(tables: CohortTables) -> pd.DataFrame:
    """What the images and the clinical table of each patient show: one row per patient.

    Columns: age, male, smoking (0 never, 1 former, 2 current), the clinical values known before surgery
    (:data:`BASELINE_CLINICAL`, where the profile has them), ``index_<level>`` and ``arm_<arm>`` (surgical
    profile), then ``<disc>_<marker>`` for the :data:`DISC_MARKERS` and ``<vertebra>_<marker>`` for the
    :data:`VERTEBRA_MARKERS`. A marker that only one modality shows is blank for a patient without that
    image. Never the predisposition, ``d_latent``, ``p_oracle`` or an outcome.

    Parameters
    ----------
    tables : CohortTables
        A sampled cohort (:func:`cdeg.synth.model.sample_cohort`).

    Returns
    -------
    DataFrame
        Float columns (NaN where missing), indexed by ``patient_id`` in truth/patients.csv order.
    """
    discs = _levels_wide(tables, "disc", DISC_MARKERS)
    has = tables.patients.set_index(ID_COLUMN)
    for modality, markers in _ONE_MODALITY.items():
        without = has.index[has[f"has_{modality}"].astype(int) == 0]
        cols = [c for c in discs.columns if c.split("_", 1)[1] in markers]
        discs.loc[discs.index.isin(without), cols] = np.nan
    return _assemble(tables, [discs, _levels_wide(tables, "vertebra", VERTEBRA_MARKERS)])


def latent_table(tables: CohortTables) -> pd.DataFrame:
    """:func:`observable_table` with each disc's true ``d_latent`` in place of the image markers.

    What a perfect measurement of the latent degeneration would give: the table of the latent oracle of
    outcomes that have no exact formula.
    """
    return _assemble(tables, [_levels_wide(tables, "disc", ("d_latent",))])


_TABLES = {"observable": observable_table, "latent": latent_table}


def _pairs(targets: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """(outcome, kind) of each ceiling column, in the column order."""
    return [(t, k) for t in CEILING_TARGETS if t in targets for k in ("observable", "latent")]


def ceiling_columns(targets: tuple[str, ...] | list[str]) -> list[str]:
    """The ceiling columns of truth/patients.csv for `targets`, in their order: per outcome of
    :data:`cdeg.cohort.CEILING_TARGETS`, ``p_observable_<outcome>`` then ``p_latent_<outcome>``."""
    return [ceiling_column(k, t) for t, k in _pairs(targets)]


def _targets(tables: CohortTables) -> tuple[str, ...]:
    """The outcomes with a ceiling that the profile records (population cohorts have no surgery)."""
    return tuple(t for t in CEILING_TARGETS if t in tables.clinical.columns)


# --- the models ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CeilingModels:
    """The ceiling models of one profile and configuration.

    Attributes
    ----------
    profile : str
        The profile of the large cohort.
    key : str
        :func:`cache_key` of the configuration they were fitted for.
    targets : tuple of str
        Outcomes with a ceiling in this profile.
    columns : dict
        Kind ("observable", "latent") -> the table columns the models take, in order.
    models : dict
        (outcome, kind) -> fitted classifier; an outcome with an exact oracle (:func:`_exact_latent`) has no
        latent model.
    metrics : dict
        outcome -> kind -> held-out AUCs: ``hgb_auc``, ``logistic_auc``, ``chosen`` ("hgb" or "logistic"),
        ``n_train``, ``n_held_out``; the latent entry of an outcome with an exact oracle has ``exact_auc`` instead.
    fit_seconds : float
        Time the fit took (sampling included) when it was made.
    """

    profile: str
    key: str
    targets: tuple[str, ...]
    columns: dict[str, tuple[str, ...]]
    models: dict[tuple[str, str], Any]
    metrics: dict[str, dict[str, dict[str, Any]]]
    fit_seconds: float

    def predict(self, tables: CohortTables) -> pd.DataFrame:
        """``patient_id`` and the :func:`ceiling_columns` of this profile's outcomes for a cohort's patients."""
        out = pd.DataFrame({ID_COLUMN: tables.patients[ID_COLUMN].astype(str).to_numpy()})
        x = {kind: make(tables).reindex(columns=list(self.columns[kind])) for kind, make in _TABLES.items()}
        for target, kind in _pairs(self.targets):
            col = ceiling_column(kind, target)
            if (target, kind) in self.models:
                out[col] = self.models[(target, kind)].predict_proba(x[kind].to_numpy())[:, 1]
            else:  # the latent ceiling of an outcome with an exact oracle
                out[col] = _exact_latent(tables, target)
        return out


def _exact_latent(tables: CohortTables, target: str) -> np.ndarray | None:
    """The exact latent oracle of `target` (patients order), or None where the generator has no formula."""
    if target == "accelerated":
        return tables.patients["p_oracle"].to_numpy(dtype=float)
    p = tables.oracles.get(target)
    return None if p is None else np.asarray(p, dtype=float)


def _candidates(seed: int) -> dict[str, Any]:
    """The two estimators compared on each table."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        # HGB takes NaN as it is (a missing value goes to the side of a split that fits best).
        "hgb": HistGradientBoostingClassifier(
            learning_rate=0.05, max_iter=2000, early_stopping=True, validation_fraction=0.15,
            n_iter_no_change=30, random_state=seed,
        ),
        "logistic": make_pipeline(
            SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=5000)
        ),
    }  # fmt: skip


def _fit_one(x: np.ndarray, y: np.ndarray, train: np.ndarray, seed: int) -> tuple[Any, dict[str, Any]]:
    """Fit HGB and logistic regression on `train` rows; keep the better on the others (held-out AUC)."""
    from sklearn.metrics import roc_auc_score

    fitted, metrics = {}, {}
    for name, est in _candidates(seed).items():
        fitted[name] = est.fit(x[train], y[train])
        metrics[f"{name}_auc"] = float(roc_auc_score(y[~train], est.predict_proba(x[~train])[:, 1]))
    chosen = "hgb" if metrics["hgb_auc"] >= metrics["logistic_auc"] else "logistic"
    metrics.update(chosen=chosen, n_train=int(train.sum()), n_held_out=int((~train).sum()))
    return fitted[chosen], metrics


def _fit(cfg: ModelConfig, profile: str, n: int, key: str) -> CeilingModels:
    """Sample the large cohort and fit every ceiling model of `profile` (no cache)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    tables = sample_cohort(cfg, profile, n, CEILING_SEED)
    targets = _targets(tables)
    x = {kind: make(tables) for kind, make in _TABLES.items()}
    models: dict[tuple[str, str], Any] = {}
    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    for i, target in enumerate(targets):
        y = tables.clinical[target].to_numpy(dtype=int)
        # One stratified split per outcome, seeded: the held-out part is the same for both kinds.
        rows = np.arange(n)
        _, held = train_test_split(rows, test_size=_HELD_OUT, stratify=y, random_state=i)
        train = ~np.isin(rows, held)
        metrics[target] = {}
        for kind in CEILING_KINDS:
            exact = _exact_latent(tables, target) if kind == "latent" else None
            if exact is not None:
                metrics[target][kind] = {"exact_auc": float(roc_auc_score(y[~train], exact[~train]))}
                continue
            # One thread: on a machine shared with other work (2 busy cores), OpenMP threads of
            # HistGradientBoosting waiting on each other made a fit ten times slower, never faster.
            with threadpool_limits(limits=1):
                models[(target, kind)], metrics[target][kind] = _fit_one(x[kind].to_numpy(), y, train, seed=i)
    seconds = time.perf_counter() - t0
    log.info("fitted the %s ceiling models on %d patients in %.1f s: %s", profile, n, seconds, metrics)
    return CeilingModels(
        profile=profile,
        key=key,
        targets=targets,
        columns={kind: tuple(t.columns) for kind, t in x.items()},
        models=models,
        metrics=metrics,
        fit_seconds=seconds,
    )


# --- the cache -----------------------------------------------------------------------------------------------
def cache_folder() -> Path:
    """Where the ceiling models are cached: ``$CDEG_CACHE_DIR/ceiling``, else ``~/.cache/cdeg/ceiling``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cdeg"
    return Path(root) / "ceiling"


def cache_key(cfg: ModelConfig, profile: str, n: int) -> str:
    """SHA-256 of everything the ceiling models depend on: the resolved model configuration (as data), the
    profile, the size and seed of the large cohort, this module's method version, cdeg's and scikit-learn's
    versions."""
    import sklearn

    data = {
        "model": to_dict(cfg),
        "profile": profile,
        "n": n,
        "seed": CEILING_SEED,
        "method": _METHOD_VERSION,
        "cdeg": __version__,
        "scikit-learn": sklearn.__version__,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _cache_path(profile: str, key: str) -> Path:
    return cache_folder() / f"{profile}-{key[:16]}.joblib"


def _load(path: Path, key: str) -> CeilingModels | None:
    """The cached models at `path`, or None (with a warning when the file is there but unusable)."""
    if not path.is_file():
        return None
    import joblib

    try:
        # joblib pickles: acceptable here because this is a private cache of our own fits, written by this
        # module only, rebuilt on any mismatch and never shipped or shared.
        data = joblib.load(path)
        if not isinstance(data, dict) or data.get("key") != key:
            raise ValueError("it was written for another configuration")
        models = CeilingModels(**data)
    except Exception as e:  # whatever is wrong with our own cache file, the cure is a refit
        log.warning("the ceiling cache %s cannot be used (%s: %s); fitting again", path, type(e).__name__, e)
        return None
    log.debug("ceiling models of %s loaded from %s", models.profile, path)
    return models


def _store(path: Path, models: CeilingModels) -> None:
    """Write the models atomically; a cache that cannot be written costs a refit next time, nothing more."""
    import dataclasses

    import joblib

    try:
        with atomic_path(path) as tmp:
            joblib.dump(dataclasses.asdict(models), tmp)
    except OSError as e:
        log.warning("could not cache the ceiling models in %s (%s); they will be fitted again", path, e)


def ceiling_models(cfg: ModelConfig, profile: str, n: int | None = None) -> CeilingModels:
    """The ceiling models of `profile` under `cfg`: from the cache, else fitted (and cached).

    Parameters
    ----------
    cfg : ModelConfig
        The generator's model configuration (``model:`` section of configs/synth.yaml).
    profile : {"neck", "population"}
        The profile of the cohorts the models score.
    n : int, optional
        Patients of the large cohort (default ``ceiling.n`` of configs/synth.yaml).
    """
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILE_NAMES)}")
    n = CeilingConfig().n if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 500:
        raise ValueError(f"the large cohort needs at least 500 patients, got {n!r}")
    key = cache_key(cfg, profile, n)
    path = _cache_path(profile, key)
    models = _load(path, key)
    if models is None:
        models = _fit(cfg, profile, n, key)
        _store(path, models)
    return models


def ceiling_probabilities(
    cfg: ModelConfig, profile: str, tables: CohortTables, n: int | None = None
) -> pd.DataFrame:
    """Each patient's ceiling probabilities: ``patient_id`` and the :func:`ceiling_columns` of the profile.

    Parameters
    ----------
    cfg : ModelConfig
        The configuration that generated `tables`.
    profile : {"neck", "population"}
        Their profile.
    tables : CohortTables
        The cohort (:func:`cdeg.synth.model.sample_cohort`).
    n : int, optional
        Patients of the large cohort the models are fitted on (default ``ceiling.n`` of configs/synth.yaml).

    Returns
    -------
    DataFrame
        One row per patient in truth/patients.csv order: ``p_observable_<outcome>`` (the observable ceiling)
        and ``p_latent_<outcome>`` (the latent oracle: exact for both, ``p_oracle`` for accelerated and
        :func:`cdeg.synth.model.poor_outcome_probability` for poor_outcome_2y) for accelerated and, in the
        surgical profile, poor_outcome_2y.
    """
    return ceiling_models(cfg, profile, n).predict(tables)
