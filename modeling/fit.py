"""`cdeg fit`: nested-CV estimate, final fit, SHAP and the run folder, in four steps.

:func:`fit` prepares the data (:func:`prepare`), then calls :func:`estimate` (nested cross-validation),
:func:`finalise` (the final models, tuned and fitted on all patients), :func:`explain` (SHAP of the primary
model; and of its outer-fold models: the explanations of the cross-validated risks, their waterfalls and how
stable the top variables are across folds, :func:`explain_cv`) and :func:`write` (tables, performance figures,
the model manifest, metrics.json and report.html).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cdeg.modeling import compare as C
from cdeg.modeling import metrics as M
from cdeg.modeling import plots, report
from cdeg.modeling.bundle import (
    FORMAT,
    FORMAT_VERSION,
    check_clinical,
    check_out,
    curves,
    unused_columns,
)
from cdeg.modeling.config import (
    ALL_TIER,
    MODELS,
    TUNED_MODELS,
    FitConfig,
    resolve_config,
    split_arm,
    tier_arm,
)
from cdeg.modeling.data import (
    Dataset,
    check_events,
    feature_kind,
    load_dataset,
    match_patterns,
    parse_names,
)
from cdeg.modeling.explain import (
    STABILITY_HOW,
    fold_importance,
    grouped_importance,
    shap_stability,
    shap_values,
)
from cdeg.modeling.label import outcome_definition
from cdeg.modeling.models import TabularClassifier
from cdeg.modeling.names import describe
from cdeg.modeling.nested_cv import CVResult, nested_cv, permutation_test
from cdeg.modeling.transport import development_summary

from cdeg import outputs
from cdeg.errors import CdegError
from cdeg.io import read_table, remove_stale_temporaries, write_bytes, write_json, write_table, write_text
from cdeg.outputs import versions, write_manifest
from cdeg.progress import ProgressArg, shown

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What :func:`fit` wrote: the run folder, its metrics and the out-of-fold predictions."""

    out: Path
    metrics: dict[str, Any]
    oof: pd.DataFrame
    config: FitConfig
    files: dict[str, Any] = field(default_factory=dict)
    models: dict[str, TabularClassifier] = field(default_factory=dict)


@dataclass
class PreparedFit:
    """One fit, prepared: the resolved configuration, the data and where everything goes."""

    cfg: FitConfig
    ds: Dataset
    target: str
    out: Path
    columns: dict[str, list[str]]
    key: str
    storage_url: str
    shared: bool
    storage_label: str

    @property
    def folder(self) -> outputs.FitRun:
        """The run folder's contract (file names)."""
        return outputs.FitRun(self.out)

    @property
    def model_dir(self) -> Path:
        return self.folder.model.root


def fit(
    features: str | Path,
    clinical: str | Path,
    target: str,
    out: str | Path,
    *,
    id_column: str | None = None,
    feature_set: str | list[str] | None = None,
    tiers: str | list[str] | None = None,
    permutations: int | None = None,
    age_reference: tuple[str | Path, str | Path] | None = None,
    stable_features: str | Path | None = None,
    min_icc: float | None = None,
    trials: int | None = None,
    outer_folds: int | None = None,
    repeats: int | None = None,
    seed: int | None = None,
    storage: str | None = None,
    jobs: int | None = None,
    exclude: str | list[str] | None = None,
    exclude_missing_in: str | Path | None = None,
    config: str | Path | None = None,
    waterfalls: bool | None = None,
    progress: ProgressArg = None,
    strict: bool = False,
) -> FitResult:
    """Nested-CV estimate and final fit of XGBoost, elastic-net and clinical-only logistic regression.

    The clinical table is checked once before anything is fitted, with the checks of ``cdeg check``
    (:func:`cdeg.check.check_stage_table`). The rule: a missing or unreadable table or a missing id column
    stop the stage; an id on several rows, or a bad value (text in a numeric column, a value outside the
    plausible range of configs/check.yaml) in a column the models may use (the target, and every column
    not left out by the leakage rule or `exclude`) leaves that patient (all its rows) out of both tables,
    with one log line naming the patient, the file and the line(s), and is listed in metrics.json
    (``data.skipped_patients``); a row with an empty id is left out with a warning; bad values in columns
    the models never use (follow-up scores, outcomes) are read as missing. With `strict`, the first such
    problem stops the stage before anything is written.

    Parameters
    ----------
    features, clinical : path
        Features table (CSV/Parquet, one row per patient) and clinical table, joined on `id_column`.
    target : str
        0/1 column of the clinical table.
    out : path
        Run folder: metrics.json, oof_predictions.csv, model/, plots/, report.html, optuna.db.
    feature_set : str or list, optional
        "clinical,mri,xray,other" (any subset) for the xgboost and logistic models.
    tiers : str or list, optional
        Feature tiers ("clinical,measurements,radiomics", any subset, or "none") cross-validated with the
        primary model's protocol on the same outer folds and compared with all variables.
    permutations : int, optional
        Label permutations of the primary model's cross-validated AUC (0 = no test) [config].
    age_reference : (features, clinical), optional
        Tables of a reference cohort (e.g. the population study) on which the age norms of the measurements
        are fitted once, instead of on each training fold's patients.
    stable_features : path, optional
        Stability table (CSV: ``feature``, ``icc``; e.g. stable_features.csv of `cdeg extract-agreement`):
        radiomics features with an ICC below `min_icc` are dropped [config: preprocess.stable_features].
    min_icc : float, optional
        Smallest ICC of a kept radiomics feature [config: preprocess.min_icc].
    trials, outer_folds, repeats, seed, jobs, id_column : optional
        Override the configuration (configs/fit.yaml < `config` < these).
    storage : str, optional
        SQLAlchemy URL of the Optuna storage shared by several workers; default: SQLite file in `out`.
    exclude : str or list, optional
        Columns (names or glob patterns, comma-separated) never used as predictors.
    exclude_missing_in : path, optional
        Another clinical table (an external cohort's): the columns of `clinical` it lacks are never used
        as predictors, so the model needs only what that cohort has. They join the exclusions (before
        `exclude`), recorded with them in metrics.json and model.json.
    config : path, optional
        YAML with configuration keys to override.
    waterfalls : bool, optional
        Draw a SHAP waterfall of each development patient's cross-validated risk [config: waterfalls]; the
        study pipeline asks for them when its report shows patient cards.
    progress : bool or callable, optional
        Progress of the nested cross-validation, one unit per fold (:mod:`cdeg.progress`).
    strict : bool
        Stop (CdegError) at the first bad value instead of leaving the patient out.

    Returns
    -------
    FitResult
    """
    t_start = time.perf_counter()
    overrides: dict[str, Any] = {
        "id_column": id_column,
        "trials": trials,
        "outer_folds": outer_folds,
        "repeats": repeats,
        "seed": seed,
        "jobs": jobs,
        "waterfalls": waterfalls,
    }
    if feature_set is not None:
        overrides["feature_sets"] = list(parse_names(feature_set))
    overrides["tiers"] = parse_tiers(tiers)
    if permutations is not None:
        overrides["permutation"] = {"n": permutations}
    overrides["preprocess"] = preprocess_overrides(age_reference, stable_features, min_icc)
    cfg, lacking = fit_config(
        config, overrides, clinical=clinical, exclude=exclude, exclude_missing_in=exclude_missing_in
    )
    run = prepare(features, clinical, target, out, cfg, storage=storage, strict=strict)
    if exclude_missing_in is not None:
        run.ds.report["missing_in_other_table"] = {"table": str(exclude_missing_in), "columns": lacking}
    cv, metrics = estimate(run, progress)
    metrics["permutation_test"] = permutation(run, progress)
    metrics["outcome_definition"] = outcome_definition(
        clinical, target, run.ds.columns_of(run.cfg.feature_sets)
    )
    t_cv = time.perf_counter()
    finals, manifest_models = finalise(run, cv, metrics)
    t_final = time.perf_counter()
    primary = run.cfg.primary_model if run.cfg.primary_model in finals else cv.main_models[0]
    metrics["sample_size"] = sample_size(metrics, primary)
    metrics["ceilings"] = truth_ceilings(clinical, run.ds)
    shap_figs = explain(run, finals[primary], primary, metrics)
    # The development distribution of the top variables travels in model.json, for `cdeg validate`'s
    # development-vs-external table (summaries only, no patient rows).
    metrics["development_distribution"] = development_summary(
        finals[primary], primary, run.ds.X[run.columns[primary]], metrics["shap_top"]
    )
    t_explained = time.perf_counter()
    explain_cv(run, cv, metrics)
    marks = {"start": t_start, "cv": t_cv, "final": t_final, "explained": t_explained}
    marks["cv_explained"] = time.perf_counter()
    figs = write(run, cv, metrics, manifest_models, primary, shap_figs, marks)
    oof_out = cv.oof.rename(columns={"target": target})
    return FitResult(
        out=run.out,
        metrics=metrics,
        oof=oof_out,
        config=run.cfg,
        files={"figures": figs, "model": run.model_dir, "report": run.folder.report},
        models=finals,
    )


# ==============================================================================================================
# preparation
# ==============================================================================================================


def preprocess_overrides(
    age_reference: tuple[str | Path, str | Path] | None = None,
    stable_features: str | Path | None = None,
    min_icc: float | None = None,
) -> dict[str, Any] | None:
    """The ``preprocess`` configuration overrides of the fit options (None: none)."""
    out: dict[str, Any] = {}
    if age_reference is not None:
        # Norms from another cohort (e.g. a population study) instead of each fold's training patients.
        out.update(age_norm="reference", age_reference=[str(p) for p in age_reference])
    if stable_features is not None:
        out["stable_features"] = str(stable_features)
    if min_icc is not None:
        out["min_icc"] = min_icc
    return out or None


def fit_config(
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    clinical: str | Path | None = None,
    exclude: str | list[str] | None = None,
    exclude_missing_in: str | Path | None = None,
) -> tuple[FitConfig, list[str]]:
    """The configuration of a fit (configs/fit.yaml < `config` < `overrides`) with the call's exclusions.

    The columns of `clinical` that `exclude_missing_in` lacks come first, then `exclude`, after those of
    the configuration. Returns the configuration and the columns `exclude_missing_in` lacks.
    """
    cfg = resolve_config(config, overrides)
    lacking: list[str] = []
    if exclude_missing_in is not None:
        if clinical is None:
            raise ValueError("--exclude-missing-in needs --clinical (their columns are compared)")
        lacking = missing_columns(clinical, exclude_missing_in, cfg.id_column)
    added = (*lacking, *parse_names(exclude))
    return (replace(cfg, exclude=tuple(cfg.exclude) + added) if added else cfg), lacking


def parse_tiers(value: str | list[str] | None) -> list[str] | None:
    """`--tiers` as a list ("none" = no tiers); None keeps the configuration's."""
    if value is None:
        return None
    names = list(parse_names(value))
    return [] if [n.lower() for n in names] == ["none"] else names


def missing_columns(clinical: str | Path, other: str | Path, id_column: str) -> list[str]:
    """Columns of the clinical table `clinical` that the clinical table `other` lacks, sorted.

    Only the column names matter: a repeated id is the input check's to report (it leaves the patient out).
    """
    from cdeg.cohort import read_clinical

    dev = read_clinical(clinical, id_column, bad_ids="first")
    ext = read_clinical(other, id_column, bad_ids="first")
    lacking = sorted(set(dev.columns) - set(ext.columns))
    if lacking:
        log.info(
            "%d clinical column(s) absent from %s are left out of the predictors: %s",
            len(lacking),
            other,
            ", ".join(lacking),
        )
    return lacking


def prepare(
    features: str | Path,
    clinical: str | Path,
    target: str,
    out: str | Path,
    cfg: FitConfig,
    *,
    storage: str | None = None,
    strict: bool = False,
) -> PreparedFit:
    """Check the inputs, load the dataset and create the run folder and the Optuna storage."""
    if not target or not isinstance(target, str):
        raise ValueError("--target must name the 0/1 column of the clinical table")
    out = check_out(out)
    shared = storage is not None
    storage_label = "sqlite (run folder)"
    if shared:
        from cdeg.modeling.tuning import check_storage

        storage_label = check_storage(storage)
    storage_url = storage or f"sqlite:///{outputs.FitRun(out).optuna_db.resolve()}"
    ds = _load(features, clinical, target, cfg, strict)
    check_events(ds.y, cfg.outer_folds, cfg.inner_folds, target, clinical)
    columns = _model_columns(ds, cfg)
    key = hashlib.sha256(
        (ds.fingerprint() + json.dumps(cfg.protocol(), sort_keys=True)).encode()
    ).hexdigest()[:12]
    log.info(
        "%d patients (%d with %s = 1), %d candidate variables; models: %s; run key %s",
        len(ds.y),
        int(ds.y.sum()),
        target,
        ds.X.shape[1],
        ", ".join(columns),
        key,
    )
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # left by a killed run; out is this fit's own folder
    from cdeg.modeling.tuning import make_storage

    make_storage(storage_url, shared=shared).engine.dispose()  # create the tables before workers connect
    return PreparedFit(cfg, ds, target, out, columns, key, storage_url, shared, storage_label)


def _load(features: str | Path, clinical: str | Path, target: str, cfg: FitConfig, strict: bool) -> Dataset:
    """The input check of the clinical table, then the dataset of the patients it keeps."""

    def uses(column: str) -> bool:  # the target, and every column the leakage rule and exclusions leave
        return column == target or not match_patterns([column], [*cfg.leakage_columns, *cfg.exclude])

    check = check_clinical("fit", clinical, cfg.id_column, uses, strict)
    ds = load_dataset(
        features,
        clinical,
        target,
        cfg.id_column,
        exclude=cfg.exclude,
        leakage_columns=cfg.leakage_columns,
        max_categories=cfg.preprocess.max_categories,
        leak_auc_threshold=cfg.leak_auc_threshold,
        skip=set(check.skipped),
        unused=unused_columns(check),
        skip_bad_target=not strict,
    )
    ds.report["skipped_patients"] = check.skipped
    return ds


def _model_columns(ds: Dataset, cfg: FitConfig) -> dict[str, list[str]]:
    """Input columns of each arm: the models (in MODELS order), then the tier arms of the primary model.

    Models without any column are skipped with a warning.
    """
    main = ds.columns_of(cfg.feature_sets)
    clin = ds.columns_of(["clinical"])
    if cfg.clinical_only.variables:
        wanted = match_patterns(clin, cfg.clinical_only.variables)
        clin = [c for c in clin if c in wanted]
    out: dict[str, list[str]] = {}
    for m in [m for m in MODELS if m in cfg.models]:
        cols = clin if m == "clinical_only" else main
        if not cols:
            if m == "clinical_only":
                log.warning(
                    "no baseline clinical variable left: the clinical-only reference model is skipped"
                )
                continue
            raise CdegError(
                f"no variable in feature set(s) {', '.join(cfg.feature_sets)} after the exclusions; "
                f"available sets: {', '.join(sorted(set(ds.column_sets.values())))}"
            )
        out[m] = cols
    out.update(_tier_columns(ds, cfg, main))
    return out


def _tier_columns(ds: Dataset, cfg: FitConfig, main: list[str]) -> dict[str, list[str]]:
    """The tier arms of the primary model (a tuned kind only): columns of `main` of each tier's kinds.

    A tier is skipped (logged) when it adds nothing to the clinical columns it always has (e.g. no radiomics
    features in the table) or when it would equal all the variables (then it is the primary model itself).
    """
    if cfg.primary_model not in TUNED_MODELS:
        return {}
    kinds = {c: feature_kind(c, ds.column_sets[c]) for c in main}
    wanted = {"clinical": {"clinical"}, "measurements": {"clinical", "measurement"}}
    wanted["radiomics"] = {"clinical", "radiomics"}
    out: dict[str, list[str]] = {}
    for tier in cfg.tiers:
        cols = [c for c in main if kinds[c] in wanted[tier]]
        own = [c for c in cols if kinds[c] != "clinical"] if tier != "clinical" else cols
        if not own or len(cols) == len(main):
            log.info("feature tier %s skipped: %s", tier, "no variable of its own" if not own else "= all")
            continue
        out[tier_arm(cfg.primary_model, tier)] = cols
    return out


# ==============================================================================================================
# the four steps
# ==============================================================================================================


def estimate(run: PreparedFit, progress: ProgressArg = None) -> tuple[CVResult, dict[str, Any]]:
    """Nested cross-validation of every model, and its metrics (the start of metrics.json)."""
    cfg, ds = run.cfg, run.ds
    with shown(progress) as report_progress:
        cv = nested_cv(
            ds.X,
            ds.y,
            ds.ids,
            cfg,
            run.columns,
            run.storage_url,
            run.key,
            shared=run.shared,
            jobs=cfg.jobs,
            progress=report_progress,
        )
    return cv, _cv_metrics(ds, cfg, cv, run.columns, run.key, run.storage_label)


def permutation(run: PreparedFit, progress: ProgressArg = None) -> dict[str, Any]:
    """The label-permutation test of the primary model's cross-validated AUC ({} when off)."""
    cfg, primary = run.cfg, run.cfg.primary_model
    if cfg.permutation.n < 1 or primary not in run.columns:
        return {}
    with shown(progress) as report_progress:
        return permutation_test(
            run.ds.X,
            run.ds.y,
            cfg,
            primary,
            run.columns[primary],
            run.storage_url,
            run.key,
            shared=run.shared,
            jobs=cfg.jobs,
            progress=report_progress,
        )


def finalise(
    run: PreparedFit, cv: CVResult, metrics: dict[str, Any]
) -> tuple[dict[str, TabularClassifier], dict[str, Any]]:
    """The final models: tuned on all patients by the same inner procedure (the "final" studies), refitted
    on all, and saved in the model folder; returns them and their entries of the manifest."""
    finals: dict[str, TabularClassifier] = {}
    manifest_models: dict[str, Any] = {}
    for m in cv.main_models:
        clf = TabularClassifier(
            m, params=cv.final_params[m], preprocess=run.cfg.preprocess, random_state=run.cfg.seed
        )
        clf.fit(run.ds.X[run.columns[m]], run.ds.y)
        finals[m] = clf
        manifest_models[m] = {
            "files": clf.save(run.model_dir, m),
            # the "average patient" of its waterfalls: the mean predicted risk, not the expit of the SHAP base value
            "mean_training_risk": float(np.mean(clf.predict_proba(run.ds.X[run.columns[m]])[:, 1])),
            "params": cv.final_params[m],
            "input_columns": run.columns[m],
            "used_columns": clf.used_inputs_,
            "n_model_variables": len(clf.preprocessor_.columns_),
        }
        metrics["cv"][m]["n_variables_final"] = len(clf.preprocessor_.columns_)
    return finals, manifest_models


def sample_size(metrics: dict[str, Any], model: str) -> dict[str, Any]:
    """The Riley et al. minimum sample size for `model`'s candidate parameters (metrics.json ``sample_size``).

    Two counts of candidate parameters p: ``after_reduction``, the variables the final model chooses from
    after the preprocessing (encoding, near-constant and correlated-group reduction: ``n_variables_final``),
    and ``raw``, the input columns it was given (``n_input_variables``). The outcome proportion is the
    development cohort's; the anticipated Cox-Snell R2 is 15% of its maximum (:mod:`cdeg.modeling.samplesize`).
    An outcome with a single class has no calculation (``None``).
    """
    from cdeg.modeling.samplesize import riley_sample_size

    prevalence = float(metrics["prevalence"])
    per_model = metrics["cv"][model]
    counts = {
        "after_reduction": per_model.get("n_variables_final"),
        "raw": per_model.get("n_input_variables"),
    }
    out: dict[str, Any] = {
        "method": "Riley et al. 2020 (BMJ 368:m441), criteria as pmsampsize computes them; anticipated "
        "Cox-Snell R2 = 15% of its maximum",
        "model": model,
        "n_patients": int(metrics["n_patients"]),
        "events": int(metrics["events"]),
        "prevalence": prevalence,
    }
    for key, p in counts.items():
        ok = p is not None and int(p) >= 1 and 0.0 < prevalence < 1.0
        out[key] = riley_sample_size(int(p), prevalence).to_dict() if ok else None
    return out


def truth_ceilings(clinical: str | Path, ds: Dataset) -> dict[str, float | None]:
    """AUC of the synthetic-truth ceilings of the target on the fitted patients (metrics.json ``ceilings``).

    Only a synthetic cohort has them: truth/patients.csv beside the clinical table, with the columns of
    :data:`cdeg.cohort.TRUTH_CEILINGS`. They never reach a model; the report uses them to say when a target
    can only be exploratory. Empty for a real cohort or a target without a ceiling.
    """
    from sklearn.metrics import roc_auc_score

    from cdeg.cohort import ID_COLUMN, TRUTH_CEILINGS, TRUTH_DIR, TRUTH_PATIENTS

    columns = TRUTH_CEILINGS.get(ds.target, {})
    path = Path(clinical).parent / TRUTH_DIR / TRUTH_PATIENTS
    if not columns or not path.is_file() or len(set(ds.y)) < 2:
        return {}
    truth = read_table(path, dtype={ID_COLUMN: str}).set_index(ID_COLUMN)
    out: dict[str, float | None] = {}
    for kind, column in columns.items():
        if column not in truth:
            continue
        p = pd.to_numeric(truth[column].reindex(ds.ids), errors="coerce").to_numpy(dtype=float)
        keep = ~np.isnan(p)
        y = ds.y[keep]
        out[kind] = float(roc_auc_score(y, p[keep])) if len(set(y)) == 2 else None
    return out


def explain(
    run: PreparedFit, model: TabularClassifier, name: str, metrics: dict[str, Any]
) -> dict[str, list[Path]]:
    """SHAP of the final model `name` on the development patients: figures, and in `metrics` the top variables
    (``shap_top``) and the top groups of variables summed per level and per kind of finding (``shap_groups``)."""
    folder, target = run.folder, run.target
    X = run.ds.X[run.columns[name]]
    sr = shap_values(model, X, mean_risk=float(np.mean(model.predict_proba(X)[:, 1])))
    figs = {
        "shap_bar": plots.shap_bar(sr, folder.plot("shap_bar", ""), target),
        "shap_bar_level": plots.shap_bar_grouped(sr, folder.plot("shap_bar_level", ""), target, by="level"),
        "shap_bar_concept": plots.shap_bar_grouped(
            sr, folder.plot("shap_bar_concept", ""), target, by="concept"
        ),
        "shap_beeswarm": plots.shap_beeswarm(sr, folder.plot("shap_beeswarm", ""), target),
    }
    top = list(sr.importance().index[: run.cfg.shap_dependence])
    for k, c in enumerate(top):
        figs[f"shap_dependence_{k + 1}"] = plots.shap_dependence(
            sr, c, folder.plot(f"shap_dependence_{k + 1}", ""), target
        )
    metrics["shap_top"] = [
        {"variable": c, "label": describe(c).label, "mean_abs_shap": float(v)}
        for c, v in sr.importance().iloc[:15].items()
    ]
    metrics["shap_groups"] = {
        by: [{"group": g, "mean_abs_shap": float(v)} for g, v in grouped_importance(sr, by).iloc[:10].items()]
        for by in ("level", "concept")
    }
    return figs


def explain_cv(run: PreparedFit, cv: CVResult, metrics: dict[str, Any], top: int = 10) -> list[Path]:
    """The explanations of the cross-validated risks: oof_shap.csv (SHAP values of the primary model's outer-fold
    models on the patients each predicted), a waterfall per development patient of its first-repeat
    cross-validated risk, and in `metrics` the stability of the top variables and levels across the fold models
    (``shap_stability``). Returns the waterfall files."""
    from cdeg.modeling.predict import write_oof_waterfalls

    table, idc = cv.shap, run.cfg.id_column
    if table is None or table.empty:
        return []
    write_table(run.folder.oof_shap, table)
    stability: dict[str, Any] = {
        "how": STABILITY_HOW.format(top=top, models=table.groupby(["repeat", "fold"]).ngroups)
    }
    for by in (None, "level"):
        res = shap_stability(list(fold_importance(table, idc, by).values()), top=top)
        for row in res["top_variables"]:
            row["label"] = describe(row["name"]).label if by is None else row["name"]
        stability["variables" if by is None else by] = res
    metrics["shap_stability"] = stability
    if not run.cfg.waterfalls:
        return []
    return write_oof_waterfalls(table, run.ds.X, run.folder, run.target, idc, jobs=run.cfg.jobs)


def write(
    run: PreparedFit,
    cv: CVResult,
    metrics: dict[str, Any],
    manifest_models: dict[str, Any],
    primary: str,
    shap_figs: dict[str, list[Path]],
    marks: dict[str, float],
) -> dict[str, list[Path]]:
    """Out-of-fold tables, performance figures, model.json, metrics.json and report.html; returns the figures.

    `marks` holds the perf_counter times at the start, after the nested CV, after the final fit, and before
    and after the explanations of the cross-validated risks (``explained``, ``cv_explained``).
    """
    dev_mean = _write_tables(run, cv, metrics)
    figs = _performance_figures(run, dev_mean, metrics)
    figs.update(shap_figs)
    t_end = time.perf_counter()
    metrics["timings_s"] = {
        "nested_cv": round(marks["cv"] - marks["start"], 2),
        "final_models": round(marks["final"] - marks["cv"], 2),
        "plots_and_shap": round(t_end - marks["final"], 2),
        # part of plots_and_shap: oof_shap.csv, the stability of the top variables, the patients' waterfalls
        "cv_explanations": round(marks["cv_explained"] - marks["explained"], 2),
        "total": round(t_end - marks["start"], 2),
    }
    metrics["new_trials"] = cv.new_trials
    write_manifest(
        run.folder.model.manifest, _manifest(run, metrics, manifest_models, primary), stage="model"
    )
    write_json(run.folder.metrics, metrics)
    write_text(run.folder.report, report.fit_report(metrics, figs, run.cfg))
    log.info(
        "nested CV AUC: %s; wrote %s",
        "; ".join(f"{m} {metrics['cv'][m]['auc']:.3f}" for m in cv.main_models),
        run.out,
    )
    return figs


def _write_tables(run: PreparedFit, cv: CVResult, metrics: dict[str, Any]) -> pd.DataFrame:
    """oof_predictions.csv, and beside the model the per-patient mean and the development metrics."""
    write_table(run.folder.oof, cv.oof.rename(columns={"target": run.target}))
    dev_mean = cv.oof.groupby(run.cfg.id_column, sort=False)[["target", *cv.main_models]].mean()
    # No patient ids in the model folder: it may travel to another centre.
    write_table(
        run.folder.model.oof_mean,
        dev_mean.reset_index(drop=True).rename(columns={"target": "y"}),
    )
    write_json(run.folder.model.dev_metrics, metrics["cv"])
    return dev_mean


def _performance_figures(
    run: PreparedFit, dev_mean: pd.DataFrame, metrics: dict[str, Any]
) -> dict[str, list[Path]]:
    """ROC, calibration and decision curve of the out-of-fold predictions, with PNG copies beside the model."""
    panel = (
        "nested cross-validation (out-of-fold)",
        curves(dev_mean["target"].to_numpy(), dev_mean, metrics["cv"]),
    )
    figs = plots.performance_figures([panel], run.folder.plots)
    for _name, paths in figs.items():  # copies beside the model, for `cdeg validate`
        for p in paths:
            if p.suffix == ".png":
                write_bytes(run.folder.model.development / p.name, p.read_bytes())
    return figs


def _manifest(
    run: PreparedFit, metrics: dict[str, Any], manifest_models: dict[str, Any], primary: str
) -> dict[str, Any]:
    """model.json: what `cdeg predict` and `cdeg validate` need, and the development results."""
    from cdeg.config import to_dict

    ds = run.ds
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": run.target,
        "id_column": run.cfg.id_column,
        "primary_model": primary,
        "models": manifest_models,
        "categorical": [
            c for c in ds.categorical if any(c in v["input_columns"] for v in manifest_models.values())
        ],
        "column_sets": {c: s for c, s in ds.column_sets.items()},
        "development": {
            "n_patients": len(ds.y),
            "events": int(ds.y.sum()),
            "prevalence": float(ds.y.mean()),
            "metrics": metrics["cv"],
            "comparison": metrics["comparison"],
            "baselines": metrics.get("baselines", {}),
            "age_range": _age_range(ds, run.cfg),
            "distribution": metrics.get("development_distribution"),
        },
        "versions": metrics["versions"],
        "config": json.loads(json.dumps(to_dict(run.cfg))),
    }


def _cv_metrics(
    ds: Dataset, cfg: FitConfig, cv: CVResult, columns: dict[str, list[str]], key: str, storage: str
) -> dict[str, Any]:
    y = ds.y
    per_model: dict[str, Any] = {}
    P: dict[str, list[np.ndarray]] = {}
    folds = [cv.oof.loc[cv.oof["repeat"] == r, "fold"].to_numpy() for r in range(cfg.repeats)]
    for m in cv.models:
        P[m] = [cv.oof.loc[cv.oof["repeat"] == r, m].to_numpy() for r in range(cfg.repeats)]
        s = M.summarize_repeats(y, P[m], folds=folds)
        s["n_input_variables"] = len(columns[m])
        if m in cv.final_params:
            s["final_params"] = cv.final_params[m]
        per_model[m] = s
    for m in cv.main_models:
        per_model[m]["bootstrap"] = C.bootstrap_oof(cv.oof, m, id_col=cfg.id_column, seed=cfg.seed)
    comparison = {}
    for a, b in (("xgboost", "logistic"), ("xgboost", "clinical_only"), ("logistic", "clinical_only")):
        if a in P and b in P:
            comparison[f"{a}_vs_{b}"] = {
                **M.compare_repeats(y, P[a], P[b]),
                "corrected_t": C.cv_ttest(cv.oof, a, b, "auc"),
            }
    return {
        "target": ds.target,
        "n_patients": len(y),
        "n_features": int(ds.X.shape[1]),
        "prevalence": float(y.mean()),
        "events": int(y.sum()),
        "cv": {m: per_model[m] for m in cv.main_models},
        "comparison": comparison,
        "tiers": _tier_metrics(cfg, cv, per_model),
        "baselines": _baselines(ds, cfg),
        "protocol": {
            "outer": f"{cfg.repeats} x repeated stratified {cfg.outer_folds}-fold",
            "inner": f"stratified {cfg.inner_folds}-fold",
            "trials": cfg.trials,
            "objective": f"mean inner-fold {cfg.objective}",
            "sampler": "TPE (multivariate, seeded)",
            "seed": cfg.seed,
            "feature_sets": list(cfg.feature_sets),
            "run_key": key,
            "storage": storage,
            "oof": "one prediction per patient per repeat; AUC per test fold, other metrics per repeat, then averaged",
            "auc_ci": f"{M.CV_AUC_CI_METHOD}. {M.CV_AUC_CI_COVERAGE}",
            "auc_ci_others": {
                "auc_ci_influence_curve": M.IC_METHOD,
                "auc_ci_delong_pooled": M.POOLED_DELONG_METHOD,
            },
        },
        "tuning": cv.tuning,
        "data": {**ds.report, "column_sets": _count(ds.column_sets.values()), "categorical": ds.categorical},
        "versions": versions("model"),
    }


def _age_range(ds: Dataset, cfg: FitConfig) -> list[float] | None:
    """[youngest, oldest] development age (validate flags external patients outside it); None without age."""
    if cfg.preprocess.age_column not in ds.X.columns:
        return None
    age = pd.to_numeric(ds.X[cfg.preprocess.age_column], errors="coerce").dropna()
    return [float(age.min()), float(age.max())] if len(age) else None


def _baselines(ds: Dataset, cfg: FitConfig) -> dict[str, Any]:
    """Age alone and the age-blind degeneration count on the development patients (nothing fitted)."""
    from cdeg.modeling.baselines import baseline_metrics, baseline_scores

    age = ds.X[cfg.preprocess.age_column] if cfg.preprocess.age_column in ds.X.columns else None
    return baseline_metrics(ds.y, baseline_scores(ds.X, age))


def _tier_metrics(cfg: FitConfig, cv: CVResult, per_model: dict[str, Any]) -> dict[str, Any]:
    """The feature tiers side by side (``all`` = the primary model), with paired differences to ``all``."""
    primary = cfg.primary_model
    if not cv.tier_arms or primary not in per_model:
        return {}
    arms = {split_arm(a)[1]: a for a in cv.tier_arms}
    arms[ALL_TIER] = primary
    return {
        "model": primary,
        "arms": arms,
        "cv": {t: per_model[a] for t, a in arms.items()},
        "comparison": compare_arms(cv.oof, arms, reference=primary, id_column=cfg.id_column),
    }


def compare_arms(
    oof: pd.DataFrame, arms: dict[str, str], reference: str, id_column: str
) -> list[dict[str, Any]]:
    """Each tier's arm against `reference` (all variables) on AUC and Brier, same patients and folds:
    :func:`cdeg.modeling.compare.compare_models` rows with the tier added."""
    tier_of = {a: t for t, a in arms.items()}
    rows = C.compare_models(oof, "target", list(arms.values()), reference, id_col=id_column)
    return [{"tier": tier_of[r["model"]], **r} for r in rows]


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out
